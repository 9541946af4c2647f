// A watch on an asynchronous operation (the agent's instrumentation: a pipeline element's call, a kernel
// batch): told once, when the operation settled.
export interface Watch {
  /** `error` is what the operation failed with; undefined when it succeeded. */
  done(failed: boolean, error?: unknown): void
}

/** `p`, with `w` told once it settled (before anyone awaiting the result sees it). */
export function watched<T>(p: Promise<T>, w: Watch): Promise<T> {
  return p.then(
    (out) => {
      w.done(false)
      return out
    },
    (err: unknown) => {
      w.done(true, err)
      throw err
    },
  )
}
