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

/** Observations waiting: past this many they are made at once, scrape or not. */
const MAX_PENDING = 1024

export interface PipelineMetrics extends PipelineObserver {
  /** Observes what every frame that ended since the last flush queued (the metrics server calls it before each scrape). */
  flush(): void
}

/**
 * The hook as metrics. A frame that ended is resolved to its series and seconds and queued, in the call's path;
 * the observations are made when the metrics are read (`flush`, before each scrape) or once MAX_PENDING wait: a
 * scrape sees every call that ended before it, and the Request's path runs no histogram code (BENCHMARKS.md
 * "Observability overhead").
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
  /**
   * What an ended frame is recorded as, resolved at once: its series and its seconds. Nothing of the frame is
   * kept (its call's context, result or error), so a Request's objects do not outlive it waiting for a scrape.
   */
  const pendingSeries: HistogramChild[] = []
  const pendingSeconds: number[] = []
  const later = (child: HistogramChild, seconds: number): void => {
    pendingSeries.push(child)
    if (pendingSeconds.push(seconds) >= MAX_PENDING) flush()
  }
  const flush = (): void => {
    const n = pendingSeries.length
    for (let i = 0; i < n; i++) (pendingSeries[i] as HistogramChild).observe(pendingSeconds[i] as number)
    pendingSeries.length = 0
    pendingSeconds.length = 0
  }
  const elementEnd = (frame: CallFrame): void => {
    // An element's own share: its time less that of the elements it called (the frames inside it). Outside
    // any scope (a remote half's refresh) frames do not nest: an element's time is its own and the rest of
    // the chain's.
    if (frame.element === undefined || frame.op === undefined) return
    const c = childrenOf(frame.element, frame.op)
    later(frame.failed ? c.failed : c.ok, Math.max(0, frame.endMs - frame.startMs - frame.innerMs) / 1000)
  }
  const callEnd = (frame: CallFrame): void => {
    const call = frame.call
    if (call === undefined) return
    // A Request's or Close's duration by service and outcome, a failure also counted by its CNI code; a heal's
    // by why and outcome (both counted at once: heals and failures are rare).
    const seconds = (frame.endMs - frame.startMs) / 1000
    if (call.op === 'heal') {
      const outcome = frame.failed ? 'error' : frame.result === true ? 'healed' : 'down'
      series.healSeconds.observe({ reason: call.reason, outcome }, seconds)
      series.heals.inc({ reason: call.reason, outcome })
      return
    }
    const h = call.op === 'request' ? series.requestSeconds : series.closeSeconds
    later(h.child(call.subject.service, frame.failed ? 'error' : 'ok'), seconds)
    if (frame.failed) countError(series, call.op, frame.error)
  }
  return { elementStart: () => true, elementEnd, callEnd, flush }
}
