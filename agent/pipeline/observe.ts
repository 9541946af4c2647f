// The pipeline's instrumentation hook (ARCHITECTURE §13): what metrics (agent/metrics/) and traces
// (agent/tracing/) see of a Request, a Close, a heal and each element's part in them. Every method given a
// `run` runs it exactly once and returns (or throws) what it did; an observer only watches. With no observer the
// chain and the handler are built exactly as before: nothing is wrapped, nothing costs.
import type { Span } from '@opentelemetry/api'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { findInScopes, scopeSlot } from '../server/call-scope.js'
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

/**
 * What runs in a call scope (agent/server/call-scope.ts) and is watched: an element's request or close, made
 * by the chain (./chain.ts) once however many observers watch it, timed once, and nested on its scope's stack;
 * or, pushed by traces, the span of a Request, Close, heal or CNI call (`element` undefined). Observers keep
 * what they record of it in its fields.
 */
export class CallFrame {
  /** performance.now() once the call settled. */
  endMs = 0
  /** Milliseconds spent in the element calls this one made (their whole time each, added as they end). */
  innerMs = 0
  /** The span traces record for this call (agent/tracing/); undefined when none does. */
  span: Span | undefined = undefined

  constructor(
    /** The element; undefined for a span's frame. */
    readonly element: string | undefined,
    /** The element's operation; undefined for a span's frame. */
    readonly op: PipelineOp | undefined,
    /** The frame this one runs inside, in the same scope: the element that called it, or the call's span. */
    readonly outer: CallFrame | undefined,
    /** performance.now() at the start. */
    readonly startMs: number,
  ) {}
}

const FRAMES = Symbol('pipeline: frames running')
const newStack = (): CallFrame[] => []

/** This call scope's stack of frames (innermost last); undefined outside any scope. */
export function frameStack(): CallFrame[] | undefined {
  return scopeSlot(FRAMES, newStack)
}

/** Puts `frame` on `stack` (this scope's, from frameStack(); undefined outside any scope). */
export function pushFrame(stack: CallFrame[] | undefined, frame: CallFrame): void {
  stack?.push(frame)
}

/** Takes `frame` off `stack` when it is the innermost (a frame that ended out of order stays until its outer ends). */
export function popFrame(stack: CallFrame[] | undefined, frame: CallFrame): void {
  if (stack !== undefined && stack[stack.length - 1] === frame) stack.pop()
}

/** The innermost span of the frames running, in this scope or an outer one. */
export function runningSpan(): Span | undefined {
  return findInScopes(FRAMES, (stack: CallFrame[]) => {
    for (let i = stack.length - 1; i >= 0; i--) {
      const span = stack[i]?.span
      if (span !== undefined) return span
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
  /** Once the call settled (`frame.endMs` set, the frames it called ended); `error` when it failed. */
  elementEnd?(frame: CallFrame, failed: boolean, error: unknown): void
  /** Around one Request of the handler (the wait for the connection's lock included). */
  request?(subject: CallSubject, ctx: CallContext, run: () => Promise<Connection>): Promise<Connection>
  /** Around one Close of the handler; `record` is what the connection's Request built (undefined: unknown id). */
  close?(subject: CallSubject, ctx: CallContext, record: DatapathRecord | undefined, run: () => Promise<void>): Promise<void>
  /** Around one heal of a connection: resolves true when it healed, false when it stays DOWN. */
  heal?(subject: CallSubject, reason: string, run: () => Promise<boolean>): Promise<boolean>
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

/** Several observers as one: the first one listed is the outermost. */
export function combineObservers(list: ReadonlyArray<PipelineObserver | undefined>): PipelineObserver | undefined {
  const os = list.filter((o): o is PipelineObserver => o !== undefined)
  if (os.length === 0) return undefined
  if (os.length === 1) return os[0]
  const nest = <T>(pick: (o: PipelineObserver, run: () => Promise<T>) => Promise<T> | undefined, run: () => Promise<T>): Promise<T> =>
    os.reduceRight<() => Promise<T>>((inner, o) => () => pick(o, inner) ?? inner(), run)()
  // Elements run most often: every observer sees each frame start, and the end when any of them records it.
  const starts = os.flatMap((o) => (o.elementStart === undefined ? [] : [o.elementStart.bind(o)]))
  const ends = os.flatMap((o) => (o.elementEnd === undefined ? [] : [o.elementEnd.bind(o)])).reverse()
  const elementHooks =
    starts.length === 0
      ? {}
      : {
          elementStart(frame: CallFrame): boolean {
            let watched = false
            for (const start of starts) watched = start(frame) || watched
            return watched
          },
          elementEnd(frame: CallFrame, failed: boolean, error: unknown): void {
            for (const end of ends) end(frame, failed, error)
          },
        }
  const outgoing = os.find((o) => o.outgoing !== undefined)
  return {
    ...elementHooks,
    request: (s, ctx, run) => nest((o, r) => o.request?.(s, ctx, r), run),
    close: (s, ctx, rec, run) => nest((o, r) => o.close?.(s, ctx, rec, r), run),
    heal: (s, reason, run) => nest((o, r) => o.heal?.(s, reason, r), run),
    ...(outgoing === undefined ? {} : { outgoing: () => outgoing.outgoing?.() ?? {} }),
  }
}
