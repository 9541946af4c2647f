// One promise reaction around a call, for hooks on hot paths (agent/pipeline/observe.ts watchCall,
// agent/registry/atomic-file.ts timedFileWrite): an async wrapper would add a promise of its own and turns of the
// microtask queue to every call, and the call scope's AsyncLocalStorage hooks see every promise.

/**
 * `run()`'s outcome, with `settled` told once it settled (before the caller sees it): `failed`, and the result or
 * the error. A synchronous throw from `run` is told at once and becomes a rejection.
 */
export function whenSettled<T>(run: () => Promise<T>, settled: (failed: boolean, result: T | undefined, error: unknown) => void): Promise<T> {
  let p: Promise<T>
  try {
    p = run()
  } catch (err) {
    settled(true, undefined, err)
    return Promise.reject(err)
  }
  return p.then(
    (out) => {
      settled(false, out, undefined)
      return out
    },
    (err: unknown) => {
      settled(true, undefined, err)
      throw err
    },
  )
}
