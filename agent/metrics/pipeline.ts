// The pipeline's hook (agent/pipeline/observe.ts) as metrics: Request and Close durations by service and
// outcome, each element's own share (its time minus the time of the elements it called: the chain keeps the
// frames running on the call's scope, agent/server/call-scope.ts, and adds each one's time to the one that
// called it), heals by reason and outcome, and failures by the CNI code of their AgentError.
import { performance } from 'node:perf_hooks'
import { AgentError } from '../errors.js'
import type { CallFrame, PipelineObserver, PipelineOp } from '../pipeline/observe.js'
import type { HistogramChild } from './histogram.js'
import type { Series } from './metrics.js'

export function countError(series: Series, operation: string, err: unknown): void {
  const e = AgentError.from(err)
  series.errors.inc({ operation, code: String(e.cniCode), name: e.code })
}

export function pipelineMetrics(series: Series): PipelineObserver {
  /** A Request's or Close's duration by service and outcome; a failure also counted by its CNI code. */
  const timed = async <T>(h: Series['requestSeconds'], service: string, operation: 'request' | 'close', run: () => Promise<T>): Promise<T> => {
    const t0 = performance.now()
    try {
      const out = await run()
      h.child(service, 'ok').observe((performance.now() - t0) / 1000)
      return out
    } catch (err) {
      h.child(service, 'error').observe((performance.now() - t0) / 1000)
      countError(series, operation, err)
      throw err
    }
  }
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
  return {
    // An element's own share: its time less that of the elements it called (the frames inside it). Outside
    // any scope (a remote half's refresh) frames do not nest: an element's time is its own and the rest of
    // the chain's.
    elementStart: () => true,
    elementEnd(frame: CallFrame, failed: boolean) {
      if (frame.element === undefined || frame.op === undefined) return // only element frames come here
      const c = childrenOf(frame.element, frame.op)
      ;(failed ? c.failed : c.ok).observe(Math.max(0, frame.endMs - frame.startMs - frame.innerMs) / 1000)
    },
    request: (subject, _ctx, run) => timed(series.requestSeconds, subject.service, 'request', run),
    close: (subject, _ctx, _record, run) => timed(series.closeSeconds, subject.service, 'close', run),
    async heal(_subject, reason, run) {
      const end = series.healSeconds.startTimer({ reason })
      let outcome = 'error'
      try {
        const healed = await run()
        outcome = healed ? 'healed' : 'down'
        return healed
      } finally {
        end({ outcome })
        series.heals.inc({ reason, outcome })
      }
    },
  }
}
