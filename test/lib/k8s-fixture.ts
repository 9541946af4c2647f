// A Kubernetes API fixture: the one stand-in the project allows (no API server installs here).
//
// It speaks the real API's JSON over HTTPS (or HTTP) on 127.0.0.1, for pods (core v1), the NSM custom resources
// NetworkService / NetworkServiceEndpoint (networkservicemesh.io/v1) and the project's own NsmAddressClaim /
// NsmNode (nsm-cni.io/v1, deploy/crds), all namespaced:
//   GET    /api/v1/pods, /api/v1/namespaces/{ns}/pods[/{name}]                        list / get
//   GET    /apis/networkservicemesh.io/v1/[namespaces/{ns}/]{networkservices|networkserviceendpoints}[/{name}]
//   GET    /apis/nsm-cni.io/v1/[namespaces/{ns}/]{nsmaddressclaims|nsmnodes}[/{name}]
//   GET    ...?watch=1|true[&resourceVersion=N][&timeoutSeconds=S][&allowWatchBookmarks=true]
//          newline-delimited JSON watch events
//   POST   collection (create, 409 AlreadyExists), PUT item (replace, 409 Conflict on a stale
//          metadata.resourceVersion), PATCH item (merge patch), DELETE item (with a DeleteOptions body whose
//          preconditions.resourceVersion / .uid must match, else 409 Conflict): for a registry store.
// A watch with allowWatchBookmarks=true gets a BOOKMARK (an object of the watched kind with only
// metadata.resourceVersion, the current version) once its replay is sent, then every `bookmarkIntervalMs`
// (default 1000, 0 = never) and on `sendBookmarks()`.
// Lists carry metadata.resourceVersion; a watch from N replays history after N, then streams live
// ADDED/MODIFIED/DELETED; an object that starts or stops matching the selectors is ADDED/DELETED as the
// real API does. A watch from a version older than `compact()` gets 410 Gone (an ERROR event with a
// Status, or an HTTP 410 with `goneAs: 'status'`). fieldSelector (metadata.name, metadata.namespace, and
// for pods spec.nodeName, status.phase; =, ==, !=) and equality-based labelSelector filter lists and
// watches; other fields answer 400 as the real API does. Requests need `Authorization: Bearer <token>`.
// Outages: `stop()` closes the listener and every connection (clients get ECONNREFUSED/ECONNRESET) and
// `start()` listens again on the same port with the same state; `stall()` leaves every new request
// unanswered (a black-holed server: clients must time out) until `unstall()`, which destroys them.
// Everything it makes (server, streams, kubeconfig dir) is removed in t.teardown.
// Its state (objects, history, open watches) is K8sObjectStore (k8s-fixture-store.ts), which it extends; the
// API's rules it follows (resources, selectors, watch events, merge patch, Status) are k8s-fixture-api.ts;
// its certificate is k8s-fixture-cert.ts.
import { EventEmitter } from 'node:events'
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { eventFor, makeFilter, mergePatch, notFound, PREFIXES, readBody, RESOURCES, status, statusBody, json, writeBookmark, type Filter, type KObject, type Resource } from './k8s-fixture-api'
import { FIXTURE_CA, FIXTURE_KEY } from './k8s-fixture-cert'
import { K8sObjectStore, type OpenWatch } from './k8s-fixture-store'

export interface FixtureOptions {
  /** HTTPS with FIXTURE_CA (default, as real clusters); false serves plain HTTP, and the kubeconfig then
   *  sets insecure-skip-tls-verify (the client library refuses http:// otherwise). */
  tls?: boolean
  /** How a watch from a compacted version is refused: an ERROR event in a 200 stream (default) or HTTP 410. */
  goneAs?: 'event' | 'status'
  /** How often a watch that allows bookmarks gets one (ms); 0 = only after the replay and on sendBookmarks(). Default 1000. */
  bookmarkIntervalMs?: number
}
export interface RequestRecord { method: string; path: string; query: URLSearchParams }
interface Teardown { teardown(fn: () => void | Promise<void>): void }

export class K8sFixture extends K8sObjectStore {
  readonly token = `fixture-${randomUUID()}`
  /** Emits 'watch' (RequestRecord) when a watch stream opens, 'request' (RequestRecord) for every request. */
  readonly events = new EventEmitter()
  readonly requests: RequestRecord[] = []
  readonly dir = mkdtempSync(join(tmpdir(), 'nsm-k8s-fixture-'))
  url = ''
  private failures: number[] = []
  private holding = false
  private readonly held: Array<() => void> = []
  private stalling = false
  private readonly stalled = new Set<ServerResponse>()
  private listenPort = 0
  private readonly server
  private readonly opts: FixtureOptions

  constructor(opts: FixtureOptions = {}) {
    super()
    this.opts = opts
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      this.handle(req, res).catch((err: unknown) => status(res, 500, 'InternalError', String(err)))
    }
    this.server = opts.tls !== false ? createHttpsServer({ cert: FIXTURE_CA, key: FIXTURE_KEY }, handler) : createHttpServer(handler)
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error): void => reject(err)
      this.server.once('error', fail)
      this.server.listen(this.listenPort, '127.0.0.1', () => {
        this.server.off('error', fail)
        resolve()
      })
    })
    this.listenPort = (this.server.address() as AddressInfo).port
    this.url = `${this.opts.tls !== false ? 'https' : 'http'}://127.0.0.1:${this.listenPort}`
  }

  get port(): number {
    return this.listenPort
  }

  /** An API server outage: ends every watch, closes every connection and stops listening (state is kept). */
  async stop(): Promise<void> {
    this.held.length = 0
    this.dropWatches()
    this.unstall()
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.server.closeAllConnections()
    await closed
  }

  /** Back after `stop()`: listens again on the same port, with the objects and history it had. */
  async start(): Promise<void> {
    if (this.server.listening) return
    await this.listen()
  }

  /** While on, every new request is accepted and never answered (a black hole: clients must time out). */
  stall(): void {
    this.stalling = true
  }

  /** Ends stall(): the requests held so far are dropped (their connections destroyed), new ones are served. */
  unstall(): void {
    this.stalling = false
    for (const res of this.stalled) res.destroy()
    this.stalled.clear()
  }

  /** Writes a kubeconfig (token user, CA data when TLS) and returns its path. */
  writeKubeconfig(name = 'kubeconfig'): string {
    const cluster: Record<string, unknown> = { server: this.url }
    if (this.opts.tls !== false) cluster['certificate-authority-data'] = Buffer.from(FIXTURE_CA).toString('base64')
    else cluster['insecure-skip-tls-verify'] = true
    const doc = {
      apiVersion: 'v1', kind: 'Config', 'current-context': 'fixture',
      clusters: [{ name: 'fixture', cluster }],
      users: [{ name: 'fixture', user: { token: this.token } }],
      contexts: [{ name: 'fixture', context: { cluster: 'fixture', user: 'fixture', namespace: 'default' } }],
    }
    const path = join(this.dir, name)
    writeFileSync(path, JSON.stringify(doc, null, 2))
    return path
  }

  /** Writes the service-account files a pod sees under <root>/var/run/secrets/...; returns <root>. */
  writeServiceAccount(): string {
    const root = join(this.dir, 'incluster')
    const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount')
    mkdirSync(sa, { recursive: true })
    writeFileSync(join(sa, 'token'), this.token)
    writeFileSync(join(sa, 'ca.crt'), FIXTURE_CA)
    writeFileSync(join(sa, 'namespace'), 'nsm-system')
    return root
  }

  /** While on, new watch requests are accepted but not answered until `releaseWatches()` (a slow server). */
  holdWatches(): void {
    this.holding = true
  }

  releaseWatches(): void {
    this.holding = false
    for (const run of this.held.splice(0)) run()
  }

  /** The next requests (any kind) answer with these HTTP statuses instead of being served. */
  failNext(...codes: number[]): void {
    this.failures.push(...codes)
  }

  async close(): Promise<void> {
    this.held.length = 0
    this.dropWatches()
    this.unstall()
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.server.closeAllConnections()
    await closed
    rmSync(this.dir, { recursive: true, force: true })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://fixture')
    const rec: RequestRecord = { method: req.method ?? 'GET', path: u.pathname, query: u.searchParams }
    this.requests.push(rec)
    this.events.emit('request', rec)
    if (this.stalling) {
      this.stalled.add(res)
      res.on('close', () => this.stalled.delete(res))
      return
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) return status(res, 401, 'Unauthorized', 'Unauthorized')
    const failure = this.failures.shift()
    if (failure !== undefined) return status(res, failure, 'InternalError', `fixture: injected failure ${failure}`)
    const discovery = u.pathname.slice(1)
    if (PREFIXES.has(discovery) && req.method === 'GET') {
      // Resource discovery, which generic clients (KubernetesObjectApi) use to map a kind to its plural.
      const resources = (Object.keys(RESOURCES) as Resource[]).filter((r) => RESOURCES[r].prefix === discovery).map((r) => ({
        name: r, singularName: RESOURCES[r].kind.toLowerCase(), namespaced: true, kind: RESOURCES[r].kind,
        verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
      }))
      return json(res, 200, { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: discovery.replace(/^apis?\//, ''), resources })
    }
    const m = /^\/(api\/v1|apis\/[^/]+\/v1)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(u.pathname)
    const resource = m?.[3] as Resource | undefined
    if (m === null || resource === undefined || !(resource in RESOURCES) || RESOURCES[resource].prefix !== m[1]) {
      return status(res, 404, 'NotFound', `the server could not find the requested resource (${u.pathname})`)
    }
    const namespace = m[2]
    const name = m[4]
    const method = req.method ?? 'GET'
    if (method === 'GET' && name !== undefined) {
      const obj = namespace === undefined ? undefined : this.get(resource, namespace, name)
      return obj === undefined ? notFound(res, resource, name) : json(res, 200, obj)
    }
    if (method === 'GET') {
      let filter: Filter
      try {
        filter = makeFilter(resource, u.searchParams)
      } catch (err) {
        return status(res, 400, 'BadRequest', (err as Error).message)
      }
      const w = u.searchParams.get('watch')
      if (w === '1' || w === 'true') {
        if (this.holding) return void this.held.push(() => this.watch(res, resource, namespace, filter, u.searchParams))
        return this.watch(res, resource, namespace, filter, u.searchParams)
      }
      const items = [...this.objects.entries()]
        .filter(([k, o]) => k.startsWith(`${resource}/`) && (namespace === undefined || o.metadata.namespace === namespace) && filter.match(o))
        .map(([, o]) => o)
      return json(res, 200, { apiVersion: RESOURCES[resource].apiVersion, kind: `${RESOURCES[resource].kind}List`, metadata: { resourceVersion: String(this.rv) }, items })
    }
    if (namespace === undefined) return status(res, 405, 'MethodNotAllowed', `${method} needs a namespaced path`)
    if (method === 'DELETE' && name !== undefined) {
      const text = await readBody(req)
      let options: { preconditions?: { resourceVersion?: unknown; uid?: unknown } } = {}
      try {
        if (text.trim() !== '') options = JSON.parse(text) as typeof options
      } catch (err) {
        return status(res, 400, 'BadRequest', `request body is not JSON: ${(err as Error).message}`)
      }
      const old = this.get(resource, namespace, name)
      if (old === undefined) return notFound(res, resource, name)
      for (const field of ['resourceVersion', 'uid'] as const) {
        const want = options.preconditions?.[field]
        if (want !== undefined && want !== null && want !== old.metadata[field]) {
          const label = field === 'uid' ? 'UID' : 'ResourceVersion'
          return status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": Precondition failed: ${label} in precondition: ${String(want)}, ${label} in object meta: ${String(old.metadata[field])}`)
        }
      }
      this.remove(resource, namespace, name)
      return json(res, 200, old)
    }
    if (!['POST', 'PUT', 'PATCH'].includes(method) || (method === 'POST') !== (name === undefined)) {
      return status(res, 405, 'MethodNotAllowed', `${method} is not supported on ${u.pathname}`)
    }
    let body: KObject
    try {
      body = JSON.parse(await readBody(req)) as KObject
    } catch (err) {
      return status(res, 400, 'BadRequest', `request body is not JSON: ${(err as Error).message}`)
    }
    if (method === 'PATCH') {
      // JSON merge patch (RFC 7386), what custom resources accept besides JSON patch.
      if (!String(req.headers['content-type']).startsWith('application/merge-patch+json')) {
        return status(res, 415, 'UnsupportedMediaType', `the fixture supports application/merge-patch+json only, got ${String(req.headers['content-type'])}`)
      }
      const existing = this.get(resource, namespace, name ?? '')
      if (existing === undefined) return notFound(res, resource, name ?? '')
      const patched = mergePatch(existing, body) as KObject
      patched.metadata = { ...patched.metadata, namespace, name: existing.metadata.name }
      return json(res, 200, this.put(resource, patched))
    }
    if (typeof body !== 'object' || body === null || typeof body.metadata?.name !== 'string') {
      return status(res, 422, 'Invalid', 'metadata.name: Required value')
    }
    body.metadata.namespace = namespace
    const existing = this.get(resource, namespace, body.metadata.name)
    if (method === 'POST' && existing !== undefined) {
      return status(res, 409, 'AlreadyExists', `${resource} "${body.metadata.name}" already exists`)
    }
    if (method === 'PUT') {
      if (existing === undefined || body.metadata.name !== name) return notFound(res, resource, name ?? '')
      const want = body.metadata['resourceVersion']
      if (want !== undefined && want !== existing.metadata['resourceVersion']) {
        return status(res, 409, 'Conflict', `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`)
      }
    }
    return json(res, method === 'POST' ? 201 : 200, this.put(resource, body))
  }

  private watch(res: ServerResponse, resource: Resource, namespace: string | undefined, filter: Filter, q: URLSearchParams): void {
    const from = q.get('resourceVersion') ?? ''
    const fromRv = Number(from)
    if (from !== '' && from !== '0' && (!Number.isInteger(fromRv) || fromRv < this.compacted)) {
      const message = `too old resource version: ${from} (${this.rv})`
      if (this.opts.goneAs === 'status') return status(res, 410, 'Expired', message)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(`${JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', message) })}\n`)
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
    res.flushHeaders() // the real API answers the headers at once, before any event
    let timer: NodeJS.Timeout | undefined
    let ticker: NodeJS.Timeout | undefined
    const bookmarks = q.get('allowWatchBookmarks') === 'true'
    const w: OpenWatch = {
      resource, namespace, filter, res, bookmarks,
      end: () => {
        if (timer !== undefined) clearTimeout(timer)
        if (ticker !== undefined) clearInterval(ticker)
        if (this.watches.delete(w)) res.end()
      },
    }
    res.on('close', () => w.end())
    if (from === '' || from === '0') {
      // No version: the current state as synthetic ADDED events, then live changes (as the real API).
      for (const [k, o] of this.objects) {
        if (k.startsWith(`${resource}/`) && (namespace === undefined || o.metadata.namespace === namespace) && filter.match(o)) {
          res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`)
        }
      }
    } else {
      for (const c of this.history) {
        if (c.rv <= fromRv || c.resource !== resource) continue
        const ev = eventFor(c, namespace, filter)
        if (ev !== undefined) res.write(`${JSON.stringify(ev)}\n`)
      }
    }
    this.watches.add(w)
    if (bookmarks) {
      // As the real API: a bookmark once the replay is out, then now and then, so that a client resumes from a
      // recent version even when its own objects did not change.
      writeBookmark(res, resource, this.rv)
      const every = this.opts.bookmarkIntervalMs ?? 1000
      if (every > 0) ticker = setInterval(() => writeBookmark(res, resource, this.rv), every)
    }
    const timeout = Number(q.get('timeoutSeconds') ?? '0')
    if (timeout > 0) timer = setTimeout(() => w.end(), timeout * 1000)
    this.events.emit('watch', { method: 'GET', path: `/${RESOURCES[resource].prefix}/${resource}`, query: q })
  }
}

/** Starts a fixture on 127.0.0.1 that t.teardown closes (server, streams and its temp dir). */
export async function startK8sFixture(t: Teardown, opts: FixtureOptions = {}): Promise<K8sFixture> {
  const f = new K8sFixture(opts)
  t.teardown(() => f.close())
  await f.listen()
  return f
}
