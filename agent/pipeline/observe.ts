// The pipeline's instrumentation hook (ARCHITECTURE §13): what metrics (agent/metrics/) and traces
// (agent/tracing/) see of a Request, a Close, a heal and each element's part in them. Every method given a
// `run` runs it exactly once and returns (or throws) what it did; an observer only watches. With no observer the
// chain and the handler are built exactly as before: nothing is wrapped, nothing costs.
import type { Watch } from '../../pkg/watch.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
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

/** One element call being watched (./chain.ts calls `done` once it settled). */
export type ElementWatch = Watch

export interface PipelineObserver {
  /**
   * As one element's request or close starts (the rest of the chain, which it calls, runs inside it): what it
   * returns is told once when that call settled. Synchronous on purpose: elements run most often, and a hook
   * that wrapped each call in a promise of its own cost every call more than what it recorded.
   */
  element?(element: string, op: PipelineOp): ElementWatch | undefined
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

/** Two watches as one (the usual case: metrics and traces), the inner one told first. */
class PairWatch implements ElementWatch {
  constructor(
    private readonly outer: ElementWatch,
    private readonly inner: ElementWatch,
  ) {}

  done(failed: boolean, error?: unknown): void {
    this.inner.done(failed, error)
    this.outer.done(failed, error)
  }
}

const pair = (outer: ElementWatch | undefined, inner: ElementWatch | undefined): ElementWatch | undefined => (outer === undefined ? inner : inner === undefined ? outer : new PairWatch(outer, inner))

/** Several observers as one: the first one listed is the outermost. */
export function combineObservers(list: ReadonlyArray<PipelineObserver | undefined>): PipelineObserver | undefined {
  const os = list.filter((o): o is PipelineObserver => o !== undefined)
  if (os.length === 0) return undefined
  if (os.length === 1) return os[0]
  const nest = <T>(pick: (o: PipelineObserver, run: () => Promise<T>) => Promise<T> | undefined, run: () => Promise<T>): Promise<T> =>
    os.reduceRight<() => Promise<T>>((inner, o) => () => pick(o, inner) ?? inner(), run)()
  // Elements run most often: one watch per observer that watches them, told in the reverse order of their start.
  const elementOf = os.flatMap((o) => (o.element === undefined ? [] : [o.element.bind(o)]))
  const [first, second] = elementOf
  const element =
    first === undefined
      ? undefined
      : second === undefined
        ? first
        : elementOf.length === 2
          ? (name: string, op: PipelineOp): ElementWatch | undefined => pair(first(name, op), second(name, op))
          : (name: string, op: PipelineOp): ElementWatch => {
              const watches = elementOf.map((el) => el(name, op))
              return {
                done(failed, error) {
                  for (let i = watches.length - 1; i >= 0; i--) watches[i]?.done(failed, error)
                },
              }
            }
  const outgoing = os.find((o) => o.outgoing !== undefined)
  return {
    ...(element === undefined ? {} : { element }),
    request: (s, ctx, run) => nest((o, r) => o.request?.(s, ctx, r), run),
    close: (s, ctx, rec, run) => nest((o, r) => o.close?.(s, ctx, rec, r), run),
    heal: (s, reason, run) => nest((o, r) => o.heal?.(s, reason, r), run),
    ...(outgoing === undefined ? {} : { outgoing: () => outgoing.outgoing?.() ?? {} }),
  }
}
