// Gives memory back once the agent is idle after a burst of calls.
//
// V8 collects the old generation only when its heap nears a limit that it raises as the heap grows, so after
// a burst (pods starting and stopping) an idle agent keeps the garbage, and the pages holding it, for a long
// time: measured with 1,000 live connections after 600 Request + Close pairs, 65 MB of heap in use of which
// 22 MB live, 165 MiB resident. So when the event loop has been nearly idle for `quietMs` and the heap has
// grown by `growthBytes` since the last collection, the agent collects (`collect`: a few full collections,
// ~80 ms in all there, that no call waits for unless one arrives just then).
//
// The collection is V8's own `gc()`, which node exposes with `--expose-gc` (agent/node-flags.ts); an agent
// started without it does without.
import { performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'

/** Full collections in a row: at least MIN_ROUNDS, at most MAX_ROUNDS (each compacts a share of the fragmented pages). */
const MIN_ROUNDS = 3
const MAX_ROUNDS = 6
/** After MIN_ROUNDS, a round that gives back less than this ends the series. */
const ROUND_GAIN = 4 * 1024 * 1024

/**
 * Full collections, a turn of the event loop apart (a call that arrives waits for one round at most). The
 * first frees the garbage but gives back few pages: V8 moves the live objects out of only some of the
 * fragmented pages per collection (a test's heap of 131 MB committed, 10 MB live: 128 MB after one, less than
 * half after three).
 */
async function collect(gc: () => void): Promise<void> {
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const committed = getHeapStatistics().total_heap_size
    gc()
    if (round + 1 >= MIN_ROUNDS && committed - getHeapStatistics().total_heap_size < ROUND_GAIN) return
    await new Promise<void>((r) => setImmediate(r))
  }
}

export interface IdleGcOptions {
  /** How often the loop's utilisation is sampled. */
  intervalMs?: number
  /** How long the loop must have been (nearly) idle. */
  quietMs?: number
  /** Heap growth since the last collection that makes one worth it. */
  growthBytes?: number
  /** Told after each collection (the agent logs it at debug). */
  collected?: (before: number, after: number, ms: number) => void
}

/** Below this share of a sample's time spent running, the event loop counts as idle. */
const IDLE_UTILISATION = 0.02

export function startIdleGc(opts: IdleGcOptions = {}): { stop(): void } {
  const gc = (globalThis as { gc?: () => void }).gc
  if (typeof gc !== 'function') return { stop: () => undefined }
  const intervalMs = opts.intervalMs ?? 1000
  const quietMs = opts.quietMs ?? 2000
  const growthBytes = opts.growthBytes ?? 16 * 1024 * 1024
  let baseline = getHeapStatistics().used_heap_size
  let last = performance.eventLoopUtilization()
  let quiet = 0
  let collecting = false
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization()
    quiet = performance.eventLoopUtilization(now, last).utilization < IDLE_UTILISATION ? quiet + intervalMs : 0
    last = now
    if (quiet < quietMs) return
    const before = getHeapStatistics().used_heap_size
    baseline = Math.min(baseline, before) // V8 collected on its own meanwhile
    if (before - baseline < growthBytes) return
    if (collecting) return
    collecting = true
    const t0 = performance.now()
    void collect(gc).then(() => {
      collecting = false
      baseline = getHeapStatistics().used_heap_size
      opts.collected?.(before, baseline, performance.now() - t0)
      // The collection's own time is not the agent being busy.
      last = performance.eventLoopUtilization()
    })
  }, intervalMs)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}
