// Waiting in tests: a pause, and polling a condition until it holds or a deadline passes. The test libraries'
// own waits (mesh-pods, kv-kubernetes, otlp-export, memif-forwarder) are this one with their timeouts and poll
// intervals.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `check` every `everyMs` until it holds; the time it took (ms), or throws naming `what` after `ms`. */
export async function pollUntil(what: string, check: () => boolean | Promise<boolean>, ms: number, everyMs: number): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (await check()) return performance.now() - start
    if (performance.now() - start > ms) throw new Error(`${what}: not after ${ms} ms`)
    await sleep(everyMs)
  }
}
