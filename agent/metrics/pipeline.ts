// The pipeline's hook (agent/pipeline/observe.ts) as metrics: Request and Close durations by service and
// outcome, each element's own share (its time minus the time of the elements it called: the call's scope,
// agent/server/call-scope.ts, keeps a stack of the elements running, and each adds its time to the one
// that called it), heals by reason and outcome, and failures by the CNI code of their AgentError.
import { performance } from 'node:perf_hooks'
import { scopeSlot } from '../server/call-scope.js'
import { AgentError } from '../errors.js'
import type { PipelineObserver } from '../pipeline/observe.js'
import type { Series } from './metrics.js'

interface Frame {
  /** Seconds spent in the elements this one called (observed inside its run). */
  inner: number
}

export function countError(series: Series, operation: string, err: unknown): void {
  const e = AgentError.from(err)
  series.errors.inc({ operation, code: String(e.cniCode), name: e.code })
}

const FRAMES = Symbol('metrics: elements running')

export function pipelineMetrics(series: Series): PipelineObserver {
  return {
    async element(element, op, run) {
      // The elements of one call nest (each calls the next), so its scope's stack is theirs alone. Outside
      // any scope (a remote half's refresh) an element's time is its own and the rest of the chain's.
      const stack = scopeSlot(FRAMES, (): Frame[] => [])
      const outer = stack?.[stack.length - 1]
      const frame: Frame = { inner: 0 }
      stack?.push(frame)
      const t0 = performance.now()
      let outcome = 'error'
      try {
        const out = await run()
        outcome = 'ok'
        return out
      } finally {
        const total = (performance.now() - t0) / 1000
        if (stack !== undefined && stack[stack.length - 1] === frame) stack.pop()
        if (outer !== undefined) outer.inner += total
        series.elementSeconds.observe({ element, op, outcome }, Math.max(0, total - frame.inner))
      }
    },
    async request(subject, _ctx, run) {
      const end = series.requestSeconds.startTimer({ service: subject.service })
      try {
        const out = await run()
        end({ outcome: 'ok' })
        return out
      } catch (err) {
        end({ outcome: 'error' })
        countError(series, 'request', err)
        throw err
      }
    },
    async close(subject, _ctx, _record, run) {
      const end = series.closeSeconds.startTimer({ service: subject.service })
      try {
        await run()
        end({ outcome: 'ok' })
      } catch (err) {
        end({ outcome: 'error' })
        countError(series, 'close', err)
        throw err
      }
    },
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
