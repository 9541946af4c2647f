// The pipeline's hook (agent/pipeline/observe.ts) as metrics: Request and Close durations by service and
// outcome, each element's own share (its time minus the time of the elements it called: the call's scope,
// agent/server/call-scope.ts, keeps a stack of the elements running, and each adds its time to the one
// that called it), heals by reason and outcome, and failures by the CNI code of their AgentError.
import { performance } from 'node:perf_hooks'
import { scopeSlot } from '../server/call-scope.js'
import { AgentError } from '../errors.js'
import type { ElementWatch, PipelineObserver, PipelineOp } from '../pipeline/observe.js'
import type { HistogramChild } from './histogram.js'
import type { Series } from './metrics.js'

export function countError(series: Series, operation: string, err: unknown): void {
  const e = AgentError.from(err)
  series.errors.inc({ operation, code: String(e.cniCode), name: e.code })
}

const FRAMES = Symbol('metrics: elements running')
const newStack = (): ElementTiming[] => []

/** One element call being timed: its own share is its time less that of the elements it called (`inner`). */
class ElementTiming implements ElementWatch {
  /** Seconds spent in the elements this one called (observed inside its run). */
  inner = 0
  private readonly t0 = performance.now()
  constructor(
    private readonly ok: HistogramChild,
    private readonly failed: HistogramChild,
    /** The scope's stack of elements running; undefined outside any scope. */
    private readonly stack: ElementTiming[] | undefined,
  ) {
    stack?.push(this)
  }

  done(failed: boolean): void {
    const total = (performance.now() - this.t0) / 1000
    const stack = this.stack
    if (stack !== undefined) {
      if (stack[stack.length - 1] === this) stack.pop()
      const outer = stack[stack.length - 1]
      if (outer !== undefined) outer.inner += total
    }
    ;(failed ? this.failed : this.ok).observe(Math.max(0, total - this.inner))
  }
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
    element(element, op) {
      // The elements of one call nest (each calls the next), so its scope's stack is theirs alone. Outside
      // any scope (a remote half's refresh) an element's time is its own and the rest of the chain's.
      const c = childrenOf(element, op)
      return new ElementTiming(c.ok, c.failed, scopeSlot(FRAMES, newStack))
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
