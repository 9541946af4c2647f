// The Kubernetes backend of the cluster store (kv.ts): every entry is a namespaced custom resource, read and
// written through @kubernetes/client-node (CustomObjectsApi, Watch). Nothing of the library leaks out.
//
// How a value becomes an object (which resource, spec and annotations) is kubernetes-objects.ts; expiry
// (ttlMs, a collector in every instance) kubernetes-expiry.ts; list-then-watch kubernetes-watch.ts.
//
// Operations: create = POST (409 AlreadyExists: KvConflict, unless the existing object has expired: then a
// PUT on its resourceVersion). put = PUT with the given revision (409/404: KvConflict), or without one:
// create, else GET + PUT on what was read, retried on 409 races. delete = DELETE with
// preconditions.resourceVersion. Every call is bounded by timeoutMs (one deadline over its requests) and
// rejects with KvUnavailable when the server cannot be reached, times out, or answers 5xx/401/403/429.
import { CustomObjectsApi, Observable, type KubeConfig, type RequestContext, type ResponseContext } from '@kubernetes/client-node'
import { loadKubeConfig, statusOf } from '../podinfo/kubernetes.js'
import { ExpiryCollector } from './kubernetes-expiry.js'
import { decodeValue, describe, encodeValue, EXPIRES_AT, expiresAt, isObject, jsonOf, kobject, RESOURCES, unavailable, VERSION, type Json, type JsonObject, type KObject } from './kubernetes-objects.js'
import { watchKind } from './kubernetes-watch.js'
import { checkKvName, checkKvTtl, KV_KINDS, KvConflict, KvUnavailable, type Kv, type KvCasOptions, type KvEntry, type KvKind, type KvList, type KvWatchHandlers, type KvWriteOptions } from './kv.js'

export interface KubernetesKvOptions {
  /** A kubeconfig file; else the in-cluster service account (else $KUBECONFIG or ~/.kube/config). */
  readonly kubeconfig?: string
  /** Where the objects live. Default nsm-system. */
  readonly namespace?: string
  /** Bound of every call (all its requests together). Default 3000 ms. */
  readonly timeoutMs?: number
  /** The clock expiry is judged by. Default Date.now. */
  readonly now?: () => number
  /** Retry delays of watches and the collector: first and cap. Default 200 ms doubling up to 10 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number }
  /** The server ends each watch after this long; it resumes from its last version. Default 300 s. */
  readonly watchTimeoutSeconds?: number
  /** Where outages and collector failures are reported. Default: one JSON line on stderr. */
  readonly log?: (msg: string, fields: Record<string, unknown>) => void
}

const PUT_ATTEMPTS = 5

// ---- the store ------------------------------------------------------------------------------------------

type CallOptions = Parameters<CustomObjectsApi['getNamespacedCustomObject']>[1]

export class KubernetesKv implements Kv {
  readonly backend = 'kubernetes'
  private readonly kc: KubeConfig
  private readonly api: CustomObjectsApi
  private readonly namespace: string
  private readonly timeoutMs: number
  private readonly now: () => number
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number }
  private readonly watchTimeoutSeconds: number
  private readonly log: (msg: string, fields: Record<string, unknown>) => void
  private readonly collectors = new Map<KvKind, ExpiryCollector>()
  private readonly stops = new Set<() => void>()
  private readonly inflight = new Set<AbortController>()
  private closed = false

  constructor(opts: KubernetesKvOptions = {}) {
    this.kc = loadKubeConfig(opts.kubeconfig === undefined ? {} : { kubeconfig: opts.kubeconfig })
    this.api = this.kc.makeApiClient(CustomObjectsApi)
    this.namespace = opts.namespace ?? 'nsm-system'
    this.timeoutMs = opts.timeoutMs ?? 3000
    this.now = opts.now ?? Date.now
    this.backoff = opts.backoff ?? { initialMs: 200, maxMs: 10_000 }
    this.watchTimeoutSeconds = opts.watchTimeoutSeconds ?? 300
    this.log = opts.log ?? ((msg, fields) => process.stderr.write(`${JSON.stringify({ level: 'warn', component: 'store', backend: 'kubernetes', msg, ...fields })}\n`))
  }

  async get(kind: KvKind, name: string): Promise<KvEntry | undefined> {
    checkKind(kind, name)
    const obj = await this.read(kind, name, this.deadline())
    return obj === undefined || this.expired(obj) ? undefined : this.entryOf(kind, obj)
  }

  async list(kind: KvKind): Promise<KvList> {
    checkKind(kind)
    const { objects, revision } = await this.listObjects(kind, this.deadline())
    return { entries: objects.filter((o) => !this.expired(o)).map((o) => this.entryOf(kind, o)), revision }
  }

  async create(kind: KvKind, name: string, value: unknown, opts: KvWriteOptions = {}): Promise<KvEntry> {
    checkKind(kind, name)
    const deadline = this.deadline()
    const body = this.objectFor(kind, name, jsonOf(kind, name, value), opts.ttlMs)
    for (let attempt = 1; ; attempt++) {
      try {
        return this.written(kind, await this.request(`create ${kind}/${name}`, deadline, (o) => this.api.createNamespacedCustomObject({ ...this.where(kind), body }, o)))
      } catch (err) {
        if (statusOf(err) !== 409) throw this.failure(kind, name, 'create', err)
      }
      // It exists; unless it has expired and waits for a collector (gone, for the contract): conflict.
      const current = await this.read(kind, name, deadline)
      if (current !== undefined && !this.expired(current)) throw new KvConflict(kind, name, `store ${kind} ${name}: already exists`)
      if (current !== undefined) {
        try {
          return this.written(kind, await this.replace(kind, name, body, current.metadata.resourceVersion, deadline))
        } catch (err) {
          // Another create won the expired object (409), or a collector deleted it (404): try again.
          if (statusOf(err) === 409) throw new KvConflict(kind, name, `store ${kind} ${name}: already exists`)
          if (statusOf(err) !== 404) throw this.failure(kind, name, 'create', err)
        }
      }
      if (attempt >= PUT_ATTEMPTS) throw new KvConflict(kind, name, `store ${kind} ${name}: create raced ${attempt} times`)
    }
  }

  async put(kind: KvKind, name: string, value: unknown, opts: KvCasOptions = {}): Promise<KvEntry> {
    checkKind(kind, name)
    const deadline = this.deadline()
    const body = this.objectFor(kind, name, jsonOf(kind, name, value), opts.ttlMs)
    if (opts.revision !== undefined) {
      // That revision expired (it waits for a collector): the entry is gone, whatever the API still holds.
      if (this.collector(kind).expired(name, opts.revision)) throw new KvConflict(kind, name, `store ${kind} ${name}: revision ${opts.revision} has expired`)
      try {
        return this.written(kind, await this.replace(kind, name, body, opts.revision, deadline))
      } catch (err) {
        const code = statusOf(err)
        if (code === 409 || code === 404) throw new KvConflict(kind, name, `store ${kind} ${name}: not at revision ${opts.revision}`)
        throw this.failure(kind, name, 'put', err)
      }
    }
    // Custom resources allow no unconditional update: create, else replace what was just read; a write
    // that slips in between (409) or a delete (404) sends us round again.
    for (let attempt = 1; ; attempt++) {
      try {
        return this.written(kind, await this.request(`put ${kind}/${name}`, deadline, (o) => this.api.createNamespacedCustomObject({ ...this.where(kind), body }, o)))
      } catch (err) {
        if (statusOf(err) !== 409) throw this.failure(kind, name, 'put', err)
      }
      const current = await this.read(kind, name, deadline)
      if (current !== undefined) {
        try {
          return this.written(kind, await this.replace(kind, name, body, current.metadata.resourceVersion, deadline))
        } catch (err) {
          const code = statusOf(err)
          if (code !== 409 && code !== 404) throw this.failure(kind, name, 'put', err)
        }
      }
      if (attempt >= PUT_ATTEMPTS) throw new KvConflict(kind, name, `store ${kind} ${name}: put raced ${attempt} times`)
    }
  }

  async delete(kind: KvKind, name: string, opts: { readonly revision?: string } = {}): Promise<boolean> {
    checkKind(kind, name)
    const revision = opts.revision
    if (revision !== undefined && this.collector(kind).expired(name, revision)) throw new KvConflict(kind, name, `store ${kind} ${name}: revision ${revision} has expired`)
    try {
      const gone = kobject(await this.remove(kind, name, revision, this.deadline()))
      this.collector(kind).forget(name)
      // An expired object was already gone for the contract; deleting it is the collector's work done early.
      return revision !== undefined || gone === undefined || !this.expired(gone)
    } catch (err) {
      const code = statusOf(err)
      if (code === 404 && revision === undefined) return false
      if (code === 404 || code === 409) throw new KvConflict(kind, name, `store ${kind} ${name}: not at revision ${revision ?? ''}`)
      throw this.failure(kind, name, 'delete', err)
    }
  }

  watch(kind: KvKind, fromRevision: string, handlers: KvWatchHandlers): () => void {
    checkKind(kind)
    if (this.closed) throw new KvUnavailable(this.backend, 'kubernetes: the store is closed')
    return watchKind(
      {
        kc: this.kc,
        namespace: this.namespace,
        timeoutMs: this.timeoutMs,
        watchTimeoutSeconds: this.watchTimeoutSeconds,
        log: this.log,
        stops: this.stops,
        isClosed: () => this.closed,
        list: (k) => this.list(k),
        delay: (attempt) => this.delay(attempt),
        collector: (k) => this.collector(k),
        entryOf: (k, obj) => this.entryOf(k, obj),
      },
      kind,
      fromRevision,
      handlers,
    )
  }

  async health(): Promise<void> {
    try {
      await this.request('health', this.deadline(), (o) => this.api.listNamespacedCustomObject({ ...this.where('nodes'), limit: 1 }, o))
    } catch (err) {
      throw err instanceof KvUnavailable ? err : new KvUnavailable(this.backend, `kubernetes: ${describe(err)}`, { cause: err })
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const stop of [...this.stops]) stop()
    for (const c of this.collectors.values()) c.close()
    for (const c of this.inflight) c.abort()
  }

  // ---- requests -----------------------------------------------------------------------------------------

  private deadline(): number {
    return Date.now() + this.timeoutMs
  }

  private where(kind: KvKind): { group: string; version: string; namespace: string; plural: string } {
    const r = RESOURCES[kind]
    return { group: r.group, version: VERSION, namespace: this.namespace, plural: r.plural }
  }

  /** One API request, aborted at the deadline; rejects with KvUnavailable when it cannot be answered. */
  private async request(what: string, deadline: number, send: (options: CallOptions) => Promise<unknown>): Promise<unknown> {
    if (this.closed) throw new KvUnavailable(this.backend, `kubernetes: ${what}: the store is closed`)
    const controller = new AbortController()
    // The request's signal is set by a per-call middleware: the one way the generated client takes one.
    const middleware = {
      pre: (ctx: RequestContext) => {
        ctx.setSignal(controller.signal)
        return new Observable(Promise.resolve(ctx))
      },
      post: (res: ResponseContext) => new Observable(Promise.resolve(res)),
    }
    const options: CallOptions = { middleware: [middleware], middlewareMergeStrategy: 'append' }
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        controller.abort()
        reject(new KvUnavailable(this.backend, `kubernetes: ${what}: no answer within ${this.timeoutMs} ms`))
      }, Math.max(0, deadline - Date.now()))
    })
    this.inflight.add(controller)
    try {
      return await Promise.race([send(options), timeout])
    } catch (err) {
      if (err instanceof KvUnavailable || statusOf(err) !== undefined) throw err
      throw new KvUnavailable(this.backend, `kubernetes: ${what}: ${controller.signal.aborted && this.closed ? 'the store is closed' : describe(err)}`, { cause: err })
    } finally {
      clearTimeout(timer)
      this.inflight.delete(controller)
    }
  }

  private failure(kind: KvKind, name: string, op: string, err: unknown): Error {
    if (err instanceof KvUnavailable || err instanceof KvConflict) return err
    const message = `kubernetes: ${op} ${kind}/${name}: ${describe(err)}`
    return unavailable(err) ? new KvUnavailable(this.backend, message, { cause: err }) : new Error(message, { cause: err })
  }

  private async read(kind: KvKind, name: string, deadline: number): Promise<KObject | undefined> {
    try {
      const obj = kobject(await this.request(`get ${kind}/${name}`, deadline, (o) => this.api.getNamespacedCustomObject({ ...this.where(kind), name }, o)))
      if (obj !== undefined) this.collector(kind).observe(obj)
      return obj
    } catch (err) {
      if (statusOf(err) === 404) {
        this.collector(kind).forget(name)
        return undefined
      }
      throw this.failure(kind, name, 'get', err)
    }
  }

  private async listObjects(kind: KvKind, deadline: number): Promise<{ objects: KObject[]; revision: string }> {
    let raw: unknown
    try {
      raw = await this.request(`list ${kind}`, deadline, (o) => this.api.listNamespacedCustomObject(this.where(kind), o))
    } catch (err) {
      throw this.failure(kind, '*', 'list', err)
    }
    const list = (isObject((raw ?? null) as Json) ? raw : {}) as { items?: unknown; metadata?: { resourceVersion?: unknown } }
    const revision = list.metadata?.resourceVersion
    if (typeof revision !== 'string' || revision === '') throw new KvUnavailable(this.backend, `kubernetes: list ${kind}: no metadata.resourceVersion in the answer`)
    const objects = (Array.isArray(list.items) ? list.items : []).map(kobject).filter((o): o is KObject => o !== undefined)
    const collector = this.collector(kind)
    for (const o of objects) collector.observe(o)
    return { objects, revision }
  }

  private replace(kind: KvKind, name: string, body: JsonObject, revision: string, deadline: number): Promise<unknown> {
    const withRevision = { ...body, metadata: { ...(body['metadata'] as JsonObject), resourceVersion: revision } }
    return this.request(`replace ${kind}/${name}`, deadline, (o) => this.api.replaceNamespacedCustomObject({ ...this.where(kind), name, body: withRevision }, o))
  }

  /** DELETE, with a resourceVersion precondition when given; resolves with what the server answered. */
  private remove(kind: KvKind, name: string, revision: string | undefined, deadline: number): Promise<unknown> {
    const body = revision === undefined ? undefined : { preconditions: { resourceVersion: revision } }
    return this.request(`delete ${kind}/${name}`, deadline, (o) =>
      this.api.deleteNamespacedCustomObject({ ...this.where(kind), name, ...(body === undefined ? {} : { body }) }, o),
    )
  }

  private objectFor(kind: KvKind, name: string, value: Json, ttlMs: number | undefined): JsonObject {
    const r = RESOURCES[kind]
    const { spec, annotations } = encodeValue(kind, value)
    checkKvTtl(ttlMs)
    if (ttlMs !== undefined) {
      annotations[EXPIRES_AT] = new Date(this.now() + ttlMs).toISOString()
    }
    const metadata: JsonObject = { name, namespace: this.namespace }
    if (Object.keys(annotations).length > 0) metadata['annotations'] = annotations
    return { apiVersion: `${r.group}/${VERSION}`, kind: r.kind, metadata, spec }
  }

  private written(kind: KvKind, raw: unknown): KvEntry {
    const obj = kobject(raw)
    if (obj === undefined) throw new KvUnavailable(this.backend, `kubernetes: ${kind}: the server answered a write with no object`)
    this.collector(kind).observe(obj)
    return this.entryOf(kind, obj)
  }

  private entryOf(kind: KvKind, obj: KObject): KvEntry {
    return { kind, name: obj.metadata.name, value: decodeValue(kind, obj.spec, obj.metadata.annotations, obj.metadata.name), revision: obj.metadata.resourceVersion }
  }

  private expired(obj: KObject): boolean {
    const at = expiresAt(obj)
    return at !== undefined && at <= this.now()
  }

  private delay(attempt: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(attempt, 20))
    return base / 2 + Math.random() * (base / 2)
  }

  private collector(kind: KvKind): ExpiryCollector {
    let c = this.collectors.get(kind)
    if (c === undefined) {
      c = new ExpiryCollector(kind, {
        now: this.now,
        retryMs: () => this.delay(3),
        isClosed: () => this.closed,
        // With the revision it was seen at: a refresh meanwhile makes this a 409, and the refresh wins.
        collect: async (name, revision) => {
          try {
            await this.remove(kind, name, revision, this.deadline())
            return 'done'
          } catch (err) {
            const code = statusOf(err)
            if (code === 404) return 'done'
            if (code === 409) {
              await this.read(kind, name, this.deadline()) // observes the object as it is now
              return 'changed'
            }
            throw err
          }
        },
        log: this.log,
      })
      this.collectors.set(kind, c)
    }
    return c
  }
}

function checkKind(kind: KvKind, name?: string): void {
  if (!KV_KINDS.includes(kind)) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
  if (name !== undefined) checkKvName(kind, name)
}
