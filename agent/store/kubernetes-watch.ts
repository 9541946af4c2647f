// Watches of the Kubernetes backend of the cluster store (kubernetes.ts):
// watch = list-then-watch as client-go's reflector: Watch with resourceVersion and allowWatchBookmarks; a
// stream the server ends resumes from the last version seen (event or BOOKMARK); 410 Gone (an ERROR
// event or HTTP 410) re-lists and hands the list to onReset; a failure reports onState('down') once and
// retries with backoff; the first success after it reports onState('up').
import { Watch, type KubeConfig } from '@kubernetes/client-node'
import { statusOf } from '../podinfo/kubernetes.js'
import type { ExpiryCollector } from './kubernetes-expiry.js'
import { describe, kobject, RESOURCES, VERSION, type KObject } from './kubernetes-objects.js'
import type { KvEntry, KvEvent, KvKind, KvList, KvWatchHandlers } from './kv.js'

/** What a watch needs of its store (KubernetesKv). */
export interface WatchContext {
  readonly kc: KubeConfig
  readonly namespace: string
  readonly timeoutMs: number
  readonly watchTimeoutSeconds: number
  readonly log: (msg: string, fields: Record<string, unknown>) => void
  /** The stops of the store's running watches: a watch is in it until stopped; close() stops them all. */
  readonly stops: Set<() => void>
  isClosed(): boolean
  list(kind: KvKind): Promise<KvList>
  delay(attempt: number): number
  collector(kind: KvKind): ExpiryCollector
  entryOf(kind: KvKind, obj: KObject): KvEntry
}

type WatchEnd = { kind: 'gone' } | { kind: 'ended'; events: number } | { kind: 'error'; err: unknown } | { kind: 'closed' }

/** Watches `kind` from `fromRevision` until the returned stop is called or the store closes. */
export function watchKind(ctx: WatchContext, kind: KvKind, fromRevision: string, handlers: KvWatchHandlers): () => void {
  let stopped = false
  let stopCurrent: (() => void) | undefined
  let wake: (() => void) | undefined
  const stop = (): void => {
    if (stopped) return
    stopped = true
    ctx.stops.delete(stop)
    stopCurrent?.()
    wake?.()
  }
  ctx.stops.add(stop)
  let down = false
  const state = (s: 'down' | 'up', reason?: string): void => {
    if (stopped || down === (s === 'down')) return
    down = s === 'down'
    if (down) ctx.log('watch: store unreachable, retrying', { kind, reason })
    guard(() => (reason === undefined ? handlers.onState?.(s) : handlers.onState?.(s, reason)), ctx.log)
  }
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(() => {
        wake = undefined
        resolve()
      }, ms)
      wake = () => {
        clearTimeout(timer)
        wake = undefined
        resolve()
      }
    })
  const run = async (): Promise<void> => {
    let rv: string | undefined = fromRevision
    let attempt = 0
    while (!stopped && !ctx.isClosed()) {
      if (rv === undefined) {
        try {
          const list = await ctx.list(kind)
          if (stopped) return
          rv = list.revision
          state('up')
          attempt = 0
          guard(() => handlers.onReset(list.entries, list.revision), ctx.log)
        } catch (err) {
          state('down', describe(err))
          await sleep(ctx.delay(attempt++))
          continue
        }
      }
      const end: WatchEnd = await watchOnce(ctx, kind, rv, {
        register: (s) => (stopCurrent = s),
        opened: () => {
          state('up')
          attempt = 0
        },
        version: (next) => (rv = next),
        event: (ev) => guard(() => handlers.onEvent(ev), ctx.log),
      })
      stopCurrent = undefined
      if (end.kind === 'closed') return
      if (end.kind === 'gone') {
        // Our version was compacted away: only a fresh list is consistent again.
        rv = undefined
        continue
      }
      if (end.kind === 'ended' && end.events > 0) continue
      if (end.kind === 'error') {
        if (statusOf(end.err) === 410) {
          rv = undefined
          continue
        }
        state('down', describe(end.err))
      }
      await sleep(ctx.delay(attempt++))
    }
  }
  // Supervised: run() handles its own failures; this catch is the last resort that still logs.
  run().catch((err: unknown) => ctx.log('watch stopped', { kind, error: String(err) }))
  return stop
}

function watchOnce(
  ctx: WatchContext,
  kind: KvKind,
  rv: string,
  on: { register(stop: () => void): void; opened(): void; version(rv: string): void; event(ev: KvEvent): void },
): Promise<WatchEnd> {
  return new Promise<WatchEnd>((resolve) => {
    let settled = false
    let gone = false
    let eventError: Error | undefined
    let events = 0
    let controller: AbortController | undefined
    const settle = (end: WatchEnd): void => {
      if (settled) return
      settled = true
      clearTimeout(connect)
      clearTimeout(stall)
      controller?.abort()
      resolve(end)
    }
    on.register(() => settle({ kind: 'closed' }))
    // The library hands out the request's AbortController only once the headers arrived: until then a
    // silent server is given up on at timeoutMs (and the request aborted if it ever answers).
    const connect = setTimeout(() => settle({ kind: 'error', err: new Error(`watch ${kind}: no answer within ${ctx.timeoutMs} ms`) }), ctx.timeoutMs)
    const stall = setTimeout(() => settle({ kind: 'error', err: new Error(`watch ${kind}: still open ${ctx.watchTimeoutSeconds + 30} s after it asked to end`) }), (ctx.watchTimeoutSeconds + 30) * 1000)
    const collector = ctx.collector(kind)
    // The library types event objects as `any`; each is checked (kobject) before use.
    const onEvent = (phase: string, raw: unknown): void => {
      if (settled) return
      if (phase === 'ERROR') {
        if (statusOf(raw) === 410) gone = true
        else eventError = new Error(`watch ${kind}: ERROR event ${JSON.stringify(raw)}`)
        controller?.abort()
        return
      }
      const obj = kobject(raw) ?? (phase === 'BOOKMARK' ? bookmarkOf(raw) : undefined)
      if (obj === undefined) return
      events += 1
      if (phase === 'ADDED' || phase === 'MODIFIED') {
        collector.observe(obj)
        on.event({ type: 'put', entry: ctx.entryOf(kind, obj) })
      } else if (phase === 'DELETED') {
        collector.forget(obj.metadata.name)
        on.event({ type: 'delete', kind, name: obj.metadata.name, revision: obj.metadata.resourceVersion })
      } else if (phase !== 'BOOKMARK') {
        return
      }
      if (obj.metadata.resourceVersion !== '') on.version(obj.metadata.resourceVersion)
    }
    const done = (err: unknown): void => {
      if (gone || statusOf(err) === 410) settle({ kind: 'gone' })
      else if (eventError !== undefined) settle({ kind: 'error', err: eventError })
      else if (err !== null && err !== undefined) settle({ kind: 'error', err })
      else settle({ kind: 'ended', events })
    }
    const r = RESOURCES[kind]
    new Watch(ctx.kc)
      .watch(
        `/apis/${r.group}/${VERSION}/namespaces/${ctx.namespace}/${r.plural}`,
        { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: ctx.watchTimeoutSeconds },
        onEvent,
        done,
      )
      .then(
        (c) => {
          controller = c
          if (settled) return void c.abort()
          clearTimeout(connect)
          on.opened()
        },
        (err: unknown) => done(err),
      )
  })
}

/** A BOOKMARK's object carries only metadata.resourceVersion (no name). */
function bookmarkOf(raw: unknown): KObject | undefined {
  const rv = (raw as { metadata?: { resourceVersion?: unknown } } | null)?.metadata?.resourceVersion
  return typeof rv === 'string' ? { metadata: { name: '', resourceVersion: rv, annotations: {} }, spec: undefined } : undefined
}

function guard(fn: () => void, log: (msg: string, fields: Record<string, unknown>) => void): void {
  try {
    fn()
  } catch (err) {
    log('store watch handler threw', { error: String(err) })
  }
}
