// The pipeline's instrumentation hook (ARCHITECTURE §13): what metrics (agent/metrics/) and traces
// (agent/tracing/) see of a Request, a Close, a heal and each element's part in them. Each is a CallFrame,
// made once however many observers watch, and told to them synchronously as it starts and as it settled: an
// observer only watches, and wraps nothing in a promise of its own. With no observer the chain and the handler
// are built exactly as before: nothing is wrapped, nothing costs.
import { performance } from 'node:perf_hooks'
import type { Span } from '@opentelemetry/api'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { findInScopes, scopeFrames } from '../server/call-scope.js'
import { whenSettled } from '../settled.js'
import type { CallContext } from '../server/handler.js'
import type { DatapathRecord } from './types.js'

export type PipelineOp = 'request' | 'close'

/** What is known of the connection a call is about (log lines, span attributes, metric labels). */
export interface CallSubject {
  connection: string
  service: string
  /** `namespace/name` of the client pod, when the request says (CNI calls, NSM clients labelling podName). */
  pod?: string
}

/** A Request, Close or heal of the handler (./handler.ts, ./heal.ts), as observers see it. */
export type PipelineCall =
  | { readonly op: 'request'; readonly subject: CallSubject; readonly ctx: CallContext }
  /** `record`: what the connection's Request built (undefined: an unknown id). */
  | { readonly op: 'close'; readonly subject: CallSubject; readonly ctx: CallContext; readonly record: DatapathRecord | undefined }
  | { readonly op: 'heal'; readonly subject: CallSubject; readonly reason: string }

/**
 * What runs in a call scope (agent/server/call-scope.ts) and is watched, timed once and nested on its scope's
 * stack: an element's request or close, made by the chain (./chain.ts); a Request, Close or heal (`call`), made
 * by `watchCall`; or, pushed by traces, a CNI call's span. Observers keep what they record of it in its fields.
 */
export class CallFrame {
  /** performance.now() once the call settled. */
  endMs = 0
  /** Milliseconds spent in the element calls this one made (their whole time each, added as they end). */
  innerMs = 0
  /**
   * Set as the call settled: whether it failed, and with what; else what it resolved with. A call's frame
   * (`watchCall`) holds its result and error, as its `call`, for `callEnd` only; an element's keeps its error.
   */
  failed = false
  error: unknown = undefined
  result: unknown = undefined
  /**
   * The span traces record for this call (agent/tracing/): a Request's, Close's, heal's or CNI call's from its
   * start (a span the sampler dropped included); an element's once the agent is idle, or when first needed (a
   * call it makes carries its context). Undefined while none is made.
   */
  span: Span | undefined = undefined
  /** Traces record a span for this call (made now or later: `span`), the child of `spanParent`'s. */
  traced = false
  spanParent: CallFrame | undefined = undefined
  /**
   * The element frame that ends with this one: its call returned this one's promise unchanged, its own work done
   * before (agent/pipeline/chain.ts). Set by the chain.
   */
  endsWith: CallFrame | undefined = undefined

  constructor(
    /** The element; undefined for a call's or a span's frame. */
    readonly element: string | undefined,
    /** The element's operation; undefined for a call's or a span's frame. */
    readonly op: PipelineOp | undefined,
    /** The frame this one runs inside, in the same scope: the element that called it, or the call it is part of. */
    readonly outer: CallFrame | undefined,
    /** performance.now() at the start. */
    readonly startMs: number,
    /**
     * The Request, Close or heal this frame is (`watchCall`), until its `callEnd` was told: the frame may wait
     * longer (the spans of the elements inside it, until the agent is idle), the call's context need not.
     */
    public call?: PipelineCall,
  ) {}
}

/** This call scope's stack of frames (innermost last); undefined outside any scope. */
export function frameStack(): CallFrame[] | undefined {
  return scopeFrames()
}

/** Puts `frame` on `stack` (this scope's, from frameStack(); undefined outside any scope). */
export function pushFrame(stack: CallFrame[] | undefined, frame: CallFrame): void {
  stack?.push(frame)
}

/** Takes `frame` off `stack` when it is the innermost (a frame that ended out of order stays until its outer ends). */
export function popFrame(stack: CallFrame[] | undefined, frame: CallFrame): void {
  if (stack !== undefined && stack[stack.length - 1] === frame) stack.pop()
}

/** The innermost frame running with a span, made or to be made (`span`, `traced`), in this scope or an outer one. */
export function runningFrame(): CallFrame | undefined {
  return findInScopes((stack) => {
    for (let i = stack.length - 1; i >= 0; i--) {
      const f = stack[i] as CallFrame
      if (f.traced || f.span !== undefined) return f
    }
    return undefined
  })
}

export interface PipelineObserver {
  /**
   * As one element's request or close starts (the rest of the chain, which it calls, runs inside it): true when
   * this observer records it, and wants `elementEnd` once it settled. Synchronous on purpose, as `elementEnd`:
   * elements run most often, and a hook that wrapped each call in a promise of its own cost every call more
   * than what it recorded.
   */
  elementStart?(frame: CallFrame): boolean
  /** Once the call settled (`frame.endMs`, `failed` and `error` set, the frames it called ended). */
  elementEnd?(frame: CallFrame): void
  /**
   * As a Request, Close or heal starts (`frame.call`; the lock's wait included), before its frame is on the
   * scope's stack. Synchronous, as `callEnd`.
   */
  callStart?(frame: CallFrame): void
  /** Once it settled: `endMs`, `failed` and `error` set, else `result` (a Request's Connection, a heal's outcome). */
  callEnd?(frame: CallFrame): void
  /**
   * Metadata a call the pipeline makes to another process carries (an NSM endpoint's API): the running span's
   * W3C trace context (`traceparent`, `tracestate`) when tracing is on.
   */
  outgoing?(): Record<string, string>
}

/** `namespace/name` from the client labels CNI calls set (agent/cni/plan.ts: podName, namespace). */
export function podOf(labels: Readonly<Record<string, string>> | undefined): string | undefined {
  const name = labels?.podName
  if (name === undefined || name === '') return undefined
  return `${labels?.namespace ?? 'default'}/${name}`
}

export function subjectOf(connection: Connection, record?: DatapathRecord): CallSubject {
  const service = connection.networkService !== '' ? connection.networkService : (record?.service ?? '')
  const pod = podOf(Object.keys(connection.labels).length > 0 ? connection.labels : record?.clientLabels)
  return { connection: connection.id, service, ...(pod === undefined ? {} : { pod }) }
}

/**
 * Runs `run` as `call`, watched by `observe`: one frame, told to `callStart` before it runs and to `callEnd` once
 * it settled, and on this scope's stack meanwhile. Resolves or rejects as `run` did.
 */
export function watchCall<T>(observe: PipelineObserver, call: PipelineCall, run: () => Promise<T>): Promise<T> {
  const stack = frameStack()
  const frame = new CallFrame(undefined, undefined, stack?.[stack.length - 1], performance.now(), call)
  observe.callStart?.(frame)
  pushFrame(stack, frame)
  return whenSettled(run, (failed, result, error) => {
    frame.endMs = performance.now()
    frame.failed = failed
    frame.result = result
    frame.error = error
    popFrame(stack, frame)
    observe.callEnd?.(frame)
    // Read by callEnd only: the frame itself may wait longer (the spans of the elements inside it, until the
    // agent is idle), the call (its context: metadata, abort signal, a Close's record), result and error need not.
    frame.call = undefined
    frame.result = undefined
    frame.error = undefined
  })
}

/** Whether `observe` watches Requests, Closes and heals (`watchCall` is worth its frame). */
export function watchesCalls(observe: PipelineObserver | undefined): observe is PipelineObserver {
  return observe?.callStart !== undefined || observe?.callEnd !== undefined
}

/** Several observers as one: the first one listed is the outermost (told first as a call starts, last as it ends). */
export function combineObservers(list: ReadonlyArray<PipelineObserver | undefined>): PipelineObserver | undefined {
  const os = list.filter((o): o is PipelineObserver => o !== undefined)
  if (os.length === 0) return undefined
  if (os.length === 1) return os[0]
  const hooks = <K extends 'elementStart' | 'elementEnd' | 'callStart' | 'callEnd'>(k: K): Array<NonNullable<PipelineObserver[K]>> =>
    os.flatMap((o) => {
      const h = o[k]
      return h === undefined ? [] : [h.bind(o) as NonNullable<PipelineObserver[K]>]
    })
  // Elements run most often: every observer sees each frame start, and the end when any of them records it.
  const starts = hooks('elementStart')
  const ends = hooks('elementEnd').reverse()
  const elementHooks =
    starts.length === 0
      ? {}
      : {
          elementStart(frame: CallFrame): boolean {
            let watched = false
            for (const start of starts) watched = start(frame) || watched
            return watched
          },
          elementEnd(frame: CallFrame): void {
            for (const end of ends) end(frame)
          },
        }
  const callStarts = hooks('callStart')
  const callEnds = hooks('callEnd').reverse()
  const callHooks =
    callStarts.length + callEnds.length === 0
      ? {}
      : {
          callStart(frame: CallFrame): void {
            for (const start of callStarts) start(frame)
          },
          callEnd(frame: CallFrame): void {
            for (const end of callEnds) end(frame)
          },
        }
  const outgoing = os.find((o) => o.outgoing !== undefined)
  return {
    ...elementHooks,
    ...callHooks,
    ...(outgoing === undefined ? {} : { outgoing: () => outgoing.outgoing?.() ?? {} }),
  }
}
