// The Kubernetes backend of the cluster store (kv.ts): every entry is a namespaced custom resource, read and
// written through @kubernetes/client-node (CustomObjectsApi, Watch). Nothing of the library leaks out.
//
//   kind       resource (deploy/crds)                                   spec
//   services   networkservices.networkservicemesh.io/v1 NetworkService   NSM's NetworkService, snake_case
//   endpoints  networkserviceendpoints.networkservicemesh.io/v1          NSM's NetworkServiceEndpoint, snake_case,
//              NetworkServiceEndpoint                                   timestamps {seconds, nanos}
//   claims     nsmaddressclaims.nsm-cni.io/v1 NsmAddressClaim            the value
//   nodes      nsmnodes.nsm-cni.io/v1 NsmNode                            the value
//
// Mapping (both ways; a value always comes back deep-equal to what was written):
// - metadata.name = the Kv name; revision = metadata.resourceVersion; a list's revision = the list's.
// - services: the value is NetworkService.toJSON(...) (camelCase) plus fields of our own; the NSM fields go
//   to spec in NSM's JSON form so that NSM's tools read them, the others (e.g. `nsmcniPolicy`) to the
//   annotation `nsm-cni.io/extension` as a JSON object. endpoints: the value is {endpoint, extension}:
//   `endpoint` goes to spec, every other field ({"extension": EndpointExtension.toJSON(...)}) to that annotation.
//   An annotation, not a spec field: a cluster running NSM's own CRDs (structural schemas without our field)
//   would prune an unknown spec field silently, an annotation never.
// - claims, nodes: spec = the value.
// - A value that does not fit (not an object, an unknown NSM field, a wrong type, a timestamp that would
//   not come back identical) is stored whole as JSON in the annotation `nsm-cni.io/value`, spec = {}.
// - ttlMs: the annotation `nsm-cni.io/expires-at` (RFC 3339, ms). get/list never return an entry past it;
//   a collector (one per kind, in every instance that saw such an object through a watch, list, get or its
//   own write) deletes it with a resourceVersion precondition (a concurrent refresh wins), driven by one
//   timer armed for the earliest expiry it knows: no polling. Watchers see the collection as a delete.
//
// Operations: create = POST (409 AlreadyExists: KvConflict, unless the existing object has expired: then a
// PUT on its resourceVersion). put = PUT with the given revision (409/404: KvConflict), or without one:
// create, else GET + PUT on what was read, retried on 409 races. delete = DELETE with
// preconditions.resourceVersion. Every call is bounded by timeoutMs (one deadline over its requests) and
// rejects with KvUnavailable when the server cannot be reached, times out, or answers 5xx/401/403/429.
//
// watch = list-then-watch as client-go's reflector: Watch with resourceVersion and allowWatchBookmarks; a
// stream the server ends resumes from the last version seen (event or BOOKMARK); 410 Gone (an ERROR
// event or HTTP 410) re-lists and hands the list to onReset; a failure reports onState('down') once and
// retries with backoff; the first success after it reports onState('up').
import { POLICY_ANNOTATIONS, policyFromMetadata } from '../../conf/endpoint-policy.js'
import { CustomObjectsApi, Observable, Watch, type KubeConfig, type RequestContext, type ResponseContext } from '@kubernetes/client-node'
import { isDeepStrictEqual } from 'node:util'
import { loadKubeConfig, statusOf } from '../podinfo/kubernetes.js'
import { checkKvName, checkKvTtl, KV_KINDS, KvConflict, KvUnavailable, type Kv, type KvCasOptions, type KvEntry, type KvEvent, type KvKind, type KvList, type KvWatchHandlers, type KvWriteOptions } from './kv.js'

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

export const EXPIRES_AT = 'nsm-cni.io/expires-at'
export const EXTENSION = 'nsm-cni.io/extension'
export const OPAQUE_VALUE = 'nsm-cni.io/value'

const RESOURCES: Record<KvKind, { readonly group: string; readonly plural: string; readonly kind: string }> = {
  services: { group: 'networkservicemesh.io', plural: 'networkservices', kind: 'NetworkService' },
  endpoints: { group: 'networkservicemesh.io', plural: 'networkserviceendpoints', kind: 'NetworkServiceEndpoint' },
  claims: { group: 'nsm-cni.io', plural: 'nsmaddressclaims', kind: 'NsmAddressClaim' },
  nodes: { group: 'nsm-cni.io', plural: 'nsmnodes', kind: 'NsmNode' },
}
const VERSION = 'v1'
const PUT_ATTEMPTS = 5

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
type JsonObject = { [k: string]: Json }
interface KObject {
  metadata: { name: string; resourceVersion: string; annotations: Record<string, string> }
  spec: Json | undefined
}

// ---- value <-> object -------------------------------------------------------------------------------

/** The JSON shapes of NSM's registry messages: camelCase in the value, snake_case in the CRD. */
type Shape =
  | { readonly t: 'string'; readonly enum?: readonly string[] }
  | { readonly t: 'bool' | 'uint32' | 'timestamp' }
  | { readonly t: 'array' | 'map'; readonly of: Shape }
  | { readonly t: 'object'; readonly fields: readonly Field[] }
type Field = readonly [json: string, crd: string, shape: Shape]

const str: Shape = { t: 'string' }
const labels: Shape = { t: 'map', of: str }
const labelsObject: Shape = { t: 'object', fields: [['labels', 'labels', labels]] }
const SERVICE_FIELDS: readonly Field[] = [
  ['name', 'name', str],
  ['payload', 'payload', { t: 'string', enum: ['IP', 'ETHERNET'] }],
  ['matches', 'matches', { t: 'array', of: { t: 'object', fields: [
    ['sourceSelector', 'source_selector', labels],
    ['routes', 'routes', { t: 'array', of: { t: 'object', fields: [['destinationSelector', 'destination_selector', labels], ['weight', 'weight', { t: 'uint32' }]] } }],
    ['fallthrough', 'fallthrough', { t: 'bool' }],
    ['metadata', 'metadata', labelsObject],
  ] } }],
  ['pathIds', 'path_ids', { t: 'array', of: str }],
]
const ENDPOINT_FIELDS: readonly Field[] = [
  ['name', 'name', str],
  ['networkServiceNames', 'network_service_names', { t: 'array', of: str }],
  ['networkServiceLabels', 'network_service_labels', { t: 'map', of: labelsObject }],
  ['url', 'url', str],
  ['expirationTime', 'expiration_time', { t: 'timestamp' }],
  ['initialRegistrationTime', 'initial_registration_time', { t: 'timestamp' }],
  ['pathIds', 'path_ids', { t: 'array', of: str }],
]

class Unfit extends Error {}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The value in NSM's CRD form; throws Unfit where it does not fit the message (then it is stored whole). */
function toCrd(shape: Shape, v: Json): Json {
  switch (shape.t) {
    case 'string':
      if (typeof v !== 'string' || (shape.enum !== undefined && !shape.enum.includes(v))) throw new Unfit()
      return v
    case 'bool':
      if (typeof v !== 'boolean') throw new Unfit()
      return v
    case 'uint32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Unfit()
      return v
    case 'timestamp': {
      const ms = typeof v === 'string' ? Date.parse(v) : NaN
      // Only the form toJSON writes (toISOString) comes back identical.
      if (!Number.isFinite(ms) || new Date(ms).toISOString() !== v) throw new Unfit()
      const seconds = Math.floor(ms / 1000)
      return { seconds, nanos: (ms - seconds * 1000) * 1e6 }
    }
    case 'array':
      if (!Array.isArray(v)) throw new Unfit()
      return v.map((e) => toCrd(shape.of, e))
    case 'map':
      if (!isObject(v)) throw new Unfit()
      return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, toCrd(shape.of, e)]))
    case 'object': {
      if (!isObject(v)) throw new Unfit()
      const { known, rest } = fieldsToCrd(shape.fields, v)
      if (Object.keys(rest).length > 0) throw new Unfit()
      return known
    }
  }
}

function fieldsToCrd(fields: readonly Field[], v: JsonObject): { known: JsonObject; rest: JsonObject } {
  const known: JsonObject = {}
  const rest: JsonObject = { ...v }
  for (const [json, crd, shape] of fields) {
    const e = v[json]
    if (!Object.hasOwn(v, json) || e === undefined) continue
    known[crd] = toCrd(shape, e)
    delete rest[json]
  }
  return { known, rest }
}

/** The value from NSM's CRD form (also objects NSM's tools wrote: what does not fit the shape is left out). */
function fromCrd(shape: Shape, v: Json | undefined): Json | undefined {
  switch (shape.t) {
    case 'string':
      return typeof v === 'string' ? v : undefined
    case 'bool':
      return typeof v === 'boolean' ? v : undefined
    case 'uint32':
      return typeof v === 'number' ? v : undefined
    case 'timestamp': {
      if (!isObject(v)) return undefined
      const ms = Number(v['seconds'] ?? 0) * 1000 + Math.floor(Number(v['nanos'] ?? 0) / 1e6)
      return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined
    }
    case 'array':
      return Array.isArray(v) ? v.map((e) => fromCrd(shape.of, e)).filter((e): e is Json => e !== undefined) : undefined
    case 'map':
      return isObject(v) ? Object.fromEntries(Object.entries(v).flatMap(([k, e]) => entryOf(k, fromCrd(shape.of, e)))) : undefined
    case 'object':
      return isObject(v) ? fieldsFromCrd(shape.fields, v) : undefined
  }
}

function fieldsFromCrd(fields: readonly Field[], v: JsonObject): JsonObject {
  return Object.fromEntries(fields.flatMap(([json, crd, shape]) => (Object.hasOwn(v, crd) ? entryOf(json, fromCrd(shape, v[crd])) : [])))
}

function entryOf(k: string, v: Json | undefined): Array<[string, Json]> {
  return v === undefined ? [] : [[k, v]]
}

/** What an object holds for a value: its spec and the annotations that carry the rest. */
function encodeValue(kind: KvKind, value: Json): { spec: Json; annotations: Record<string, string> } {
  const opaque = { spec: {}, annotations: { [OPAQUE_VALUE]: JSON.stringify(value) } }
  try {
    let spec: JsonObject
    let rest: JsonObject = {}
    if (kind === 'claims' || kind === 'nodes') {
      if (!isObject(value)) return opaque
      spec = value
    } else if (kind === 'services') {
      if (!isObject(value)) return opaque
      ;({ known: spec, rest } = fieldsToCrd(SERVICE_FIELDS, value))
    } else {
      const endpoint = isObject(value) ? value['endpoint'] : undefined
      if (!isObject(value) || !isObject(endpoint)) return opaque
      spec = toCrd({ t: 'object', fields: ENDPOINT_FIELDS }, endpoint) as JsonObject
      rest = { ...value }
      delete rest['endpoint']
    }
    const annotations: Record<string, string> = Object.keys(rest).length > 0 ? { [EXTENSION]: JSON.stringify(rest) } : {}
    // The exact-round-trip promise is checked, not assumed: whatever would come back different is stored whole.
    if (!isDeepStrictEqual(decodeValue(kind, spec, annotations), value)) return opaque
    return { spec, annotations }
  } catch (err) {
    if (err instanceof Unfit) return opaque
    throw err
  }
}

function decodeValue(kind: KvKind, spec: Json | undefined, annotations: Record<string, string>, objectName?: string): Json {
  const whole = parseJson(annotations[OPAQUE_VALUE])
  if (whole !== undefined) return whole
  if (kind === 'claims' || kind === 'nodes') return spec ?? {}
  const restJson = parseJson(annotations[EXTENSION])
  const rest = isObject(restJson) ? restJson : {}
  // NSM's own objects (kubectl-applied) may leave the name to metadata.name.
  const fields = isObject(spec) ? (spec['name'] === undefined && objectName !== undefined ? { ...spec, name: objectName } : spec) : objectName === undefined ? {} : { name: objectName }
  if (kind === 'services') {
    const service: JsonObject = { ...fieldsFromCrd(SERVICE_FIELDS, fields), ...rest }
    // A NetworkService applied with kubectl declares its registration policy in nsm-cni.io/endpoint-*
    // annotations (ARCHITECTURE §5): read as the policy the agents would have stored.
    if (service['nsmcniPolicy'] === undefined) {
      const policy = annotatedPolicy(annotations)
      if (policy !== undefined) service['nsmcniPolicy'] = policy
    }
    return service
  }
  return { endpoint: fieldsFromCrd(ENDPOINT_FIELDS, fields), ...rest }
}

/** The policy of nsm-cni.io/endpoint-* annotations; undefined when there are none or they are invalid. */
function annotatedPolicy(annotations: Record<string, string>): JsonObject | undefined {
  if (!Object.values(POLICY_ANNOTATIONS).some((k) => annotations[k] !== undefined)) return undefined
  try {
    const p = policyFromMetadata({ annotations })
    return p === undefined ? undefined : { ...p }
  } catch {
    return undefined
  }
}

function parseJson(text: string | undefined): Json | undefined {
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as Json
  } catch {
    return undefined
  }
}

/** A JSON copy of a caller's value (what any backend stores: undefined fields dropped, no shared objects). */
function jsonOf(kind: KvKind, name: string, value: unknown): Json {
  const text = JSON.stringify(value) as string | undefined
  if (text === undefined) throw new TypeError(`store ${kind} ${name}: the value is not JSON`)
  return JSON.parse(text) as Json
}

/** The fields we use of an API object, or undefined for something that is not one. */
function kobject(raw: unknown): KObject | undefined {
  if (!isObject(raw as Json) || !isObject((raw as JsonObject)['metadata'] ?? null)) return undefined
  const o = raw as JsonObject
  const m = o['metadata'] as JsonObject
  if (typeof m['name'] !== 'string') return undefined
  const annotations: Record<string, string> = {}
  if (isObject(m['annotations'] ?? null)) {
    for (const [k, v] of Object.entries(m['annotations'] as JsonObject)) if (typeof v === 'string') annotations[k] = v
  }
  return { metadata: { name: m['name'], resourceVersion: typeof m['resourceVersion'] === 'string' ? m['resourceVersion'] : '', annotations }, spec: o['spec'] }
}

function expiresAt(obj: KObject): number | undefined {
  const text = obj.metadata.annotations[EXPIRES_AT]
  const ms = text === undefined ? NaN : Date.parse(text)
  return Number.isFinite(ms) ? ms : undefined
}

// ---- errors ---------------------------------------------------------------------------------------------

function describe(err: unknown): string {
  const code = statusOf(err)
  const body = (err as { body?: unknown } | null)?.body
  const message = isObject((body ?? null) as Json) && typeof (body as JsonObject)['message'] === 'string' ? (body as JsonObject)['message'] as string : undefined
  if (code !== undefined) return `HTTP ${code}${message === undefined ? '' : `: ${message}`}`
  return err instanceof Error ? err.message : String(err)
}

/** Failures that mean "the engine cannot serve us now" rather than "this request is wrong". */
function unavailable(err: unknown): boolean {
  const code = statusOf(err)
  return code === undefined || code >= 500 || code === 401 || code === 403 || code === 429
}

// ---- the store ------------------------------------------------------------------------------------------

type WatchEnd = { kind: 'gone' } | { kind: 'ended'; events: number } | { kind: 'error'; err: unknown } | { kind: 'closed' }
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
    let stopped = false
    let stopCurrent: (() => void) | undefined
    let wake: (() => void) | undefined
    const stop = (): void => {
      if (stopped) return
      stopped = true
      this.stops.delete(stop)
      stopCurrent?.()
      wake?.()
    }
    this.stops.add(stop)
    let down = false
    const state = (s: 'down' | 'up', reason?: string): void => {
      if (stopped || down === (s === 'down')) return
      down = s === 'down'
      if (down) this.log('watch: store unreachable, retrying', { kind, reason })
      guard(() => (reason === undefined ? handlers.onState?.(s) : handlers.onState?.(s, reason)), this.log)
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
      while (!stopped && !this.closed) {
        if (rv === undefined) {
          try {
            const list = await this.list(kind)
            if (stopped) return
            rv = list.revision
            state('up')
            attempt = 0
            guard(() => handlers.onReset(list.entries, list.revision), this.log)
          } catch (err) {
            state('down', describe(err))
            await sleep(this.delay(attempt++))
            continue
          }
        }
        const end: WatchEnd = await this.watchOnce(kind, rv, {
          register: (s) => (stopCurrent = s),
          opened: () => {
            state('up')
            attempt = 0
          },
          version: (next) => (rv = next),
          event: (ev) => guard(() => handlers.onEvent(ev), this.log),
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
        await sleep(this.delay(attempt++))
      }
    }
    // Supervised: run() handles its own failures; this catch is the last resort that still logs.
    run().catch((err: unknown) => this.log('watch stopped', { kind, error: String(err) }))
    return stop
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

  private watchOnce(
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
      const connect = setTimeout(() => settle({ kind: 'error', err: new Error(`watch ${kind}: no answer within ${this.timeoutMs} ms`) }), this.timeoutMs)
      const stall = setTimeout(() => settle({ kind: 'error', err: new Error(`watch ${kind}: still open ${this.watchTimeoutSeconds + 30} s after it asked to end`) }), (this.watchTimeoutSeconds + 30) * 1000)
      const collector = this.collector(kind)
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
          on.event({ type: 'put', entry: this.entryOf(kind, obj) })
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
      new Watch(this.kc)
        .watch(
          `/apis/${r.group}/${VERSION}/namespaces/${this.namespace}/${r.plural}`,
          { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: this.watchTimeoutSeconds },
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
}

function checkKind(kind: KvKind, name?: string): void {
  if (!KV_KINDS.includes(kind)) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
  if (name !== undefined) checkKvName(kind, name)
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

interface CollectorDeps {
  now(): number
  retryMs(): number
  isClosed(): boolean
  /** Deletes `name` if still at `revision`: 'done' (deleted, or gone already) or 'changed' (re-observed). */
  collect(name: string, revision: string): Promise<'done' | 'changed'>
  log(msg: string, fields: Record<string, unknown>): void
}

/**
 * Deletes the objects of one kind whose `nsm-cni.io/expires-at` has passed, for whoever wrote them (they may
 * be dead). It knows what its instance saw (watch events, lists, gets, own writes) and keeps one timer, for
 * the earliest expiry; what it saw may be stale, which the revision precondition makes harmless. The timer
 * is brought forward by an earlier expiry at once, and recomputed over everything when it fires (so a
 * forgotten or refreshed entry costs nothing until then).
 */
class ExpiryCollector {
  /** name -> the revision it was seen at, its expiry, and when to (re)try to delete it. */
  private readonly due = new Map<string, { revision: string; expiresAt: number; at: number }>()
  private timer: NodeJS.Timeout | undefined
  private timerAt = Infinity
  private sweeping = false

  constructor(
    private readonly kind: KvKind,
    private readonly deps: CollectorDeps,
  ) {}

  observe(obj: KObject): void {
    const at = expiresAt(obj)
    if (at === undefined) return this.forget(obj.metadata.name)
    this.due.set(obj.metadata.name, { revision: obj.metadata.resourceVersion, expiresAt: at, at })
    if (at < this.timerAt) this.schedule(at)
  }

  /** Whether this instance knows `name` at `revision` to be past its expiry (gone, for the contract). */
  expired(name: string, revision: string): boolean {
    const e = this.due.get(name)
    return e !== undefined && e.revision === revision && e.expiresAt <= this.deps.now()
  }

  forget(name: string): void {
    this.due.delete(name)
  }

  close(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.timerAt = -Infinity // nothing is scheduled any more
    this.due.clear()
  }

  private schedule(at: number): void {
    if (this.deps.isClosed()) return
    clearTimeout(this.timer)
    this.timerAt = at
    // setTimeout's range ends at 2^31-1 ms; a later expiry is rescheduled when that fires.
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.timerAt = Infinity
      if (this.sweeping) return // the running sweep reschedules when it ends
      this.sweep().catch((err: unknown) => this.deps.log('expiry collector failed', { kind: this.kind, error: String(err) }))
    }, Math.min(Math.max(0, at - this.deps.now()), 0x7fffffff))
    this.timer.unref()
  }

  private async sweep(): Promise<void> {
    this.sweeping = true
    try {
      const now = this.deps.now()
      for (const [name, { at, revision }] of [...this.due]) {
        if (at > now || this.deps.isClosed()) continue
        try {
          if ((await this.deps.collect(name, revision)) === 'done' && this.due.get(name)?.revision === revision) this.due.delete(name)
        } catch (err) {
          if (this.deps.isClosed()) return
          // The store is unreachable: try again later; the expiry itself stays what the object says.
          const later = this.deps.now() + this.deps.retryMs()
          for (const entry of this.due.values()) if (entry.at <= now) entry.at = later
          this.deps.log('expiry collector: cannot delete now, retrying', { kind: this.kind, name, error: err instanceof Error ? err.message : String(err) })
          break
        }
      }
    } finally {
      this.sweeping = false
      let next = Infinity
      for (const { at } of this.due.values()) next = Math.min(next, at)
      clearTimeout(this.timer)
      this.timer = undefined
      this.timerAt = Infinity
      if (next !== Infinity) this.schedule(next)
    }
  }
}
