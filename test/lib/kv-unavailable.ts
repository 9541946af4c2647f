// For a store engine that goes away (agent/store/kv.ts's KvUnavailable): retry a call until the engine
// answers again, and assert that a call rejects with KvUnavailable instead of hanging. Used by the
// conformance suite's outage subtest (kv-conformance.ts) and the stores' own outage tests.
import type { Test } from 'tap'
import { KvUnavailable } from '../../agent/store/kv.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Calls `fn` until it stops rejecting with KvUnavailable (the engine coming back); other errors throw. */
export async function retryUnavailable<T>(fn: () => Promise<T>, attempts = 200): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn()
    } catch (err) {
      if (!(err instanceof KvUnavailable) || i >= attempts) throw err
      await sleep(100)
    }
  }
}

/** Asserts that `p` rejects with KvUnavailable of `backend`, and does not hang (3× the timeout + 5 s). */
export async function rejectsUnavailable(t: Test, p: Promise<unknown>, backend: string, timeoutMs: number, what: string): Promise<void> {
  let guard: NodeJS.Timeout | undefined
  const hung = new Promise<'hung'>((resolve) => {
    guard = setTimeout(() => resolve('hung'), timeoutMs * 3 + 5_000)
  })
  const outcome = await Promise.race([
    p.then(
      () => ({ ok: true as const }),
      (err: unknown) => ({ ok: false as const, err }),
    ),
    hung,
  ])
  clearTimeout(guard)
  if (outcome === 'hung') {
    t.fail(`${what}: still pending ${timeoutMs * 3 + 5_000} ms after the engine went away (the backend's timeout is ${timeoutMs} ms)`)
    return
  }
  if (outcome.ok) {
    t.fail(`${what}: resolved while the engine is unreachable`)
    return
  }
  t.ok(outcome.err instanceof KvUnavailable, `${what}: rejects with KvUnavailable`, { found: String(outcome.err) })
  if (outcome.err instanceof KvUnavailable) t.equal(outcome.err.backend, backend, `${what}: names the backend`)
}
