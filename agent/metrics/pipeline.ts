// The pipeline's hook (agent/pipeline/observe.ts) as metrics: Request and Close durations by service and
// outcome, each element's own share (its time minus the time of the elements it called: the chain keeps the
// frames running on the call's scope, agent/server/call-scope.ts, and adds each one's time to the one that
// called it), heals by reason and outcome, and failures by the CNI code of their AgentError.
import { AgentError } from '../errors.js'
import type { CallFrame, PipelineObserver, PipelineOp } from '../pipeline/observe.js'
import type { HistogramChild } from './histogram.js'
import type { Series } from './metrics.js'

export function countError(series: Series, operation: string, err: unknown): void {
  const e = AgentError.from(err)
  series.errors.inc({ operation, code: String(e.cniCode), name: e.code })
}

/** Frames waiting to be recorded: past this many they are recorded at once, scrape or not. */
const MAX_PENDING = 1024

export interface PipelineMetrics extends PipelineObserver {
  /** Records every frame that ended since the last flush (the metrics server calls it before each scrape). */
  flush(): void
}

/**
 * The hook as metrics. A frame that ended is only queued, in the call's path; its observations are made when
 * the metrics are read (`flush`, before each scrape) or once MAX_PENDING wait: a scrape sees every call that
 * ended before it, and the Request's path runs no histogram code (BENCHMARKS.md "Observability overhead").
 */
export function pipelineMetrics(series: Series): PipelineMetrics {
  /** Each element's and operation's two series (ok, error), resolved once. */
  type Pair = { ok: HistogramChild; failed: HistogramChild }
  const children = new Map<string, Record<PipelineOp, Pair>>()
  const pairOf = (element: string, op: PipelineOp): Pair => ({ ok: series.elementSeconds.child(element, op, 'ok'), failed: series.elementSeconds.child(element, op, 'error') })
  const childrenOf = (element: string, op: PipelineOp): Pair => {
    let c = children.get(element)
    if (c === undefined) {
      c = { request: pairOf(element, 'request'), close: pairOf(element, 'close') }
      children.set(element, c)
    }
    return c[op]
  }
  const record = (frame: CallFrame): void => {
    const call = frame.call
    if (call === undefined) {
      // An element's own share: its time less that of the elements it called (the frames inside it). Outside
      // any scope (a remote half's refresh) frames do not nest: an element's time is its own and the rest of
      // the chain's.
      if (frame.element === undefined || frame.op === undefined) return
      const c = childrenOf(frame.element, frame.op)
      ;(frame.failed ? c.failed : c.ok).observe(Math.max(0, frame.endMs - frame.startMs - frame.innerMs) / 1000)
      return
    }
    // A Request's or Close's duration by service and outcome, a failure also counted by its CNI code; a heal's
    // by why and outcome.
    const seconds = (frame.endMs - frame.startMs) / 1000
    if (call.op === 'heal') {
      const outcome = frame.failed ? 'error' : frame.result === true ? 'healed' : 'down'
      series.healSeconds.observe({ reason: call.reason, outcome }, seconds)
      series.heals.inc({ reason: call.reason, outcome })
      return
    }
    const h = call.op === 'request' ? series.requestSeconds : series.closeSeconds
    h.child(call.subject.service, frame.failed ? 'error' : 'ok').observe(seconds)
    if (frame.failed) countError(series, call.op, frame.error)
  }
  let pending: CallFrame[] = []
  const flush = (): void => {
    const frames = pending
    pending = []
    for (const f of frames) record(f)
  }
  const later = (frame: CallFrame): void => {
    if (pending.push(frame) >= MAX_PENDING) flush()
  }
  return { elementStart: () => true, elementEnd: later, callEnd: later, flush }
}
