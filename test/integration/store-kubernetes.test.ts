// The Kubernetes backend of the cluster store (agent/store/kubernetes.ts) against the project's Kubernetes API
// fixture (the one stand-in allowed): the store contract (test/lib/kv-conformance.ts, with the fixture's
// compaction and outage switch), the objects as NSM's CRDs and ours define them, two agents racing on one
// object, expiry collected by an agent that outlives the writer, 410 Gone, bookmarks, a black-holed server,
// and the fixture features the backend relies on.
import { request } from 'node:https'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { KubernetesKv, type KubernetesKvOptions } from '../../agent/store/kubernetes'
import { KvConflict, type Kv, type KvKind } from '../../agent/store/kv'
import { serviceCodec, storedEndpointCodec } from '../../agent/registry/records'
import { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni'
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry'
import { startK8sFixture, type K8sFixture } from '../lib/k8s-fixture'
import type { KObject, Resource } from '../lib/k8s-fixture-api'
import { FIXTURE_CA } from '../lib/k8s-fixture-cert'
import { kvConformance } from '../lib/kv-conformance'
import { rejectsUnavailable } from '../lib/kv-unavailable'
import { WatchRecorder } from '../lib/kv-watch-recorder'

const NS = 'nsm-system'
const quiet = (): void => {}
type Teardown = { teardown(fn: () => void | Promise<void>): void }

/** A store client on the fixture that t.teardown closes. */
function store(t: Teardown, f: K8sFixture, opts: Partial<KubernetesKvOptions> = {}): KubernetesKv {
  const kv = new KubernetesKv({ kubeconfig: f.writeKubeconfig(), timeoutMs: 1000, backoff: { initialMs: 50, maxMs: 500 }, log: quiet, ...opts })
  t.teardown(() => kv.close())
  return kv
}

t.test('the store contract, on the Kubernetes API', async (t) => {
  const f = await startK8sFixture(t)
  const kubeconfig = f.writeKubeconfig()
  const timeoutMs = 1000
  await kvConformance(t, 'kubernetes', async () => ({
    kv: new KubernetesKv({ kubeconfig, timeoutMs, backoff: { initialMs: 50, maxMs: 500 }, log: quiet }),
    timeoutMs,
    compact: async () => f.compact(),
    outage: { stop: () => f.stop(), start: () => f.start() },
  }))
})

// ---- the objects ------------------------------------------------------------------------------------------

interface Schema {
  type?: string
  properties?: Record<string, Schema>
  additionalProperties?: Schema
  items?: Schema
  enum?: unknown[]
  'x-kubernetes-preserve-unknown-fields'?: boolean
}

function crdSchema(file: string): Schema {
  const crd = parse(readFileSync(join(import.meta.dirname, '../../deploy/crds', file), 'utf8')) as { spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> } }
  return crd.spec.versions[0]!.schema.openAPIV3Schema
}

/** Where `value` breaks `schema` (type, enum, fields the API server would prune), as "path: why". */
function problems(schema: Schema, value: unknown, path = 'spec'): string[] {
  const kind = Array.isArray(value) ? 'array' : value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value
  if (schema.type !== undefined && schema.type !== kind) return [`${path}: expected ${schema.type}, got ${kind}`]
  if (schema.enum !== undefined && !schema.enum.includes(value)) return [`${path}: ${JSON.stringify(value)} not in the enum`]
  if (Array.isArray(value)) return value.flatMap((v, i) => (schema.items === undefined ? [] : problems(schema.items, v, `${path}[${i}]`)))
  if (kind !== 'object' || schema['x-kubernetes-preserve-unknown-fields'] === true) return []
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) => {
    const sub = schema.properties?.[k] ?? schema.additionalProperties
    return sub === undefined ? [`${path}.${k}: not in the schema (pruned)`] : problems(sub, v, `${path}.${k}`)
  })
}

function raw(f: K8sFixture, resource: Resource, name: string): KObject {
  const o = f.get(resource, NS, name)
  if (o === undefined) throw new Error(`${resource}/${name}: not in the fixture`)
  return o
}

function annotations(o: KObject): Record<string, string> {
  return (o.metadata['annotations'] ?? {}) as Record<string, string>
}

t.test("the objects are what the CRDs say: NSM's fields in snake_case, ours in an annotation, exact round trip", async (t) => {
  const f = await startK8sFixture(t)
  const kv = store(t, f)
  const nseSchema = crdSchema('networkserviceendpoints.yaml').properties!['spec']!
  const nsSchema = crdSchema('networkservices.yaml').properties!['spec']!

  // An endpoint as the registry stores it (registry.ts storedEndpointCodec).
  const stored = {
    endpoint: NetworkServiceEndpoint.fromPartial({
      name: 'firewall-1', networkServiceNames: ['secure-intranet-connectivity'],
      networkServiceLabels: { 'secure-intranet-connectivity': { labels: { app: 'firewall', nodeName: 'node-a' } } },
      url: 'file:///var/run/netns/fw-1', expirationTime: { seconds: 1893456000, nanos: 123000000 },
      initialRegistrationTime: { seconds: 1893455000, nanos: 0 }, pathIds: ['p1'],
    }),
    extension: EndpointExtension.fromPartial({
      endpointName: 'firewall-1', netnsPath: '/var/run/netns/fw-1', cidrPools: ['172.16.1.0/24', 'fd00::/64'],
      routes: [{ prefix: '10.0.0.0/8' }], excludedPrefixes: ['172.16.1.1/32'], nodeName: 'node-a',
    }),
  }
  const value = storedEndpointCodec.toJSON(stored)
  const written = await kv.put('endpoints', 'firewall-1', value, { ttlMs: 60_000 })
  const nse = raw(f, 'networkserviceendpoints', 'firewall-1')
  t.same(nse.spec, {
    name: 'firewall-1', network_service_names: ['secure-intranet-connectivity'],
    network_service_labels: { 'secure-intranet-connectivity': { labels: { app: 'firewall', nodeName: 'node-a' } } },
    url: 'file:///var/run/netns/fw-1', expiration_time: { seconds: 1893456000, nanos: 123000000 },
    initial_registration_time: { seconds: 1893455000, nanos: 0 }, path_ids: ['p1'],
  }, 'the spec is NSM\'s NetworkServiceEndpoint in its JSON form: snake_case, timestamps {seconds, nanos}')
  t.same(problems(nseSchema, nse.spec), [], 'and validates against deploy/crds/networkserviceendpoints.yaml, nothing pruned')
  t.equal(nse.metadata.name, 'firewall-1')
  t.equal(nse['kind'], 'NetworkServiceEndpoint')
  t.same(JSON.parse(annotations(nse)['nsm-cni.io/extension'] ?? 'null'), { extension: EndpointExtension.toJSON(stored.extension) }, 'the extension is in the nsm-cni.io/extension annotation')
  t.ok(Date.parse(annotations(nse)['nsm-cni.io/expires-at'] ?? '') > Date.now(), 'the ttl is the nsm-cni.io/expires-at annotation (RFC 3339)')
  t.equal(written.revision, nse.metadata['resourceVersion'], 'the revision is metadata.resourceVersion')
  const got = await kv.get('endpoints', 'firewall-1')
  t.strictSame(got?.value, value, 'the value comes back exactly')
  t.strictSame(storedEndpointCodec.fromJSON(got?.value), stored, "and decodes to the registry's messages")

  // A service as the registry stores it (registry.ts serviceCodec: NSM's message plus our policy).
  const service = {
    service: NetworkService.fromPartial({
      name: 'secure-intranet-connectivity', payload: 'IP', pathIds: ['p'],
      matches: [
        { sourceSelector: { app: 'firewall' }, routes: [{ destinationSelector: { app: 'vpn-gateway' }, weight: 2 }], metadata: { labels: { m: '1' } } },
        { routes: [{ destinationSelector: { app: 'firewall' } }], fallthrough: true },
      ],
    }),
    policy: ServicePolicy.fromPartial({ namespace: 'default', endpointNamespaces: ['*'], endpointSelector: { role: 'fw' } }),
  }
  const svcValue = serviceCodec.toJSON(service)
  await kv.put('services', 'secure-intranet-connectivity', svcValue)
  const ns = raw(f, 'networkservices', 'secure-intranet-connectivity')
  t.same(ns.spec, {
    name: 'secure-intranet-connectivity', payload: 'IP', path_ids: ['p'],
    matches: [
      { source_selector: { app: 'firewall' }, routes: [{ destination_selector: { app: 'vpn-gateway' }, weight: 2 }], metadata: { labels: { m: '1' } } },
      { routes: [{ destination_selector: { app: 'firewall' } }], fallthrough: true },
    ],
  }, "the spec is NSM's NetworkService in snake_case")
  t.same(problems(nsSchema, ns.spec), [], 'and validates against deploy/crds/networkservices.yaml')
  t.same(JSON.parse(annotations(ns)['nsm-cni.io/extension'] ?? 'null'), { nsmcniPolicy: ServicePolicy.toJSON(service.policy) }, 'our policy is in the annotation')
  t.notOk('nsm-cni.io/expires-at' in annotations(ns), 'no expiry without a ttl')
  t.strictSame((await kv.get('services', 'secure-intranet-connectivity'))?.value, svcValue, 'the service comes back exactly')

  // Our own kinds: spec = the value.
  const claim = { pool: '172.16.1.0/24', address: '172.16.1.2', connectionId: 'c1', node: 'node-a' }
  await kv.create('claims', '172.16.1.0-24.172.16.1.2', claim)
  const c = raw(f, 'nsmaddressclaims', '172.16.1.0-24.172.16.1.2')
  t.same([c['apiVersion'], c['kind'], c.spec], ['nsm-cni.io/v1', 'NsmAddressClaim', claim], 'a claim is an NsmAddressClaim with spec = the value')
  await kv.put('nodes', 'node-a', { name: 'node-a', underlayAddress: '192.0.2.1' })
  t.same(raw(f, 'nsmnodes', 'node-a').spec, { name: 'node-a', underlayAddress: '192.0.2.1' }, 'a node record is an NsmNode')

  // What NSM's own tools write (no annotations, the name left to metadata.name) reads as the registry's form.
  f.put('networkserviceendpoints', { metadata: { namespace: NS, name: 'nse-by-nsm' }, spec: { network_service_names: ['s'], url: 'tcp://10.0.0.1:5001', expiration_time: { seconds: 1893456000, nanos: 5e8 } } })
  t.strictSame((await kv.get('endpoints', 'nse-by-nsm'))?.value, { endpoint: { name: 'nse-by-nsm', networkServiceNames: ['s'], url: 'tcp://10.0.0.1:5001', expirationTime: '2030-01-01T00:00:00.500Z' } }, "an NSE written by NSM's tools")

  // Values that do not fit NSM's messages are kept whole, and still come back exactly.
  const odd: Array<[KvKind, string, unknown]> = [
    ['endpoints', 'odd-timestamp', { endpoint: { name: 'x', expirationTime: '2030-01-01T00:00:00Z' }, extension: {} }],
    ['endpoints', 'odd-field', { endpoint: { name: 'x', futureField: 1 } }],
    ['endpoints', 'odd-shape', ['not', 'an', 'object']],
    ['services', 'odd-payload', { name: 'x', payload: 'CARRIER-PIGEON' }],
    ['services', 'odd-weight', { matches: [{ routes: [{ weight: -1 }] }] }],
    ['nodes', 'odd-scalar', 'just a string'],
    ['claims', 'odd-null', null],
  ]
  for (const [kind, name, v] of odd) {
    await kv.put(kind, name, v)
    t.strictSame((await kv.get(kind, name))?.value, v, `${kind} ${name}: round-trips`)
  }
  const kept = raw(f, 'networkservices', 'odd-payload')
  t.same([kept.spec, JSON.parse(annotations(kept)['nsm-cni.io/value'] ?? 'null')], [{}, { name: 'x', payload: 'CARRIER-PIGEON' }], 'kept whole in the nsm-cni.io/value annotation, with an empty spec')
})

// ---- agents together -----------------------------------------------------------------------------------

t.test('two agents incrementing one object 50 times each with revisions lose no update', async (t) => {
  const f = await startK8sFixture(t)
  const [a, b] = [store(t, f), store(t, f)]
  await a.create('nodes', 'counter', { count: 0 })
  let conflicts = 0
  const increment = async (kv: Kv): Promise<void> => {
    for (;;) {
      const cur = await kv.get('nodes', 'counter')
      if (cur === undefined) throw new Error('the counter vanished')
      try {
        await kv.put('nodes', 'counter', { count: (cur.value as { count: number }).count + 1 }, { revision: cur.revision })
        return
      } catch (err) {
        if (!(err instanceof KvConflict)) throw err
        conflicts++
      }
    }
  }
  await Promise.all([a, b].map(async (kv) => {
    for (let i = 0; i < 50; i++) await increment(kv)
  }))
  t.strictSame((await b.get('nodes', 'counter'))?.value, { count: 100 }, `100 increments, none lost (${conflicts} 409 Conflicts retried)`)
})

/** Resolves once `cond()` holds (checked every 20 ms); fails the wait after 30 s with `what`. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let waited = 0; !cond(); waited += 20) {
    if (waited > 30_000) throw new Error(`${what}: not within 30 s`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

t.test('an entry whose writer died is collected by another agent at its expiry; a refresh wins against a stale collector', async (t) => {
  const f = await startK8sFixture(t)
  const writer = store(t, f)
  const other = store(t, f)
  const listed = await other.list('nodes')
  const rec = new WatchRecorder().seed(listed.entries)
  t.teardown(other.watch('nodes', listed.revision, rec.handlers))
  // The endpoint first: when the node's expiry has passed, the endpoint's has too.
  await writer.put('endpoints', 'nse-dead', { endpoint: { name: 'nse-dead' } }, { ttlMs: 800 })
  await writer.put('nodes', 'node-dead', { name: 'node-dead' }, { ttlMs: 800 })
  await writer.close()
  await rec.until('node-dead deleted', () => rec.events().some((e) => e.type === 'delete' && e.name === 'node-dead'))
  t.equal(f.get('nsmnodes', NS, 'node-dead'), undefined, 'the object is gone from the API')
  t.ok(f.requests.some((r) => r.method === 'DELETE' && r.path.endsWith('/nsmnodes/node-dead')), 'deleted by the surviving agent')
  t.ok(f.get('networkserviceendpoints', NS, 'nse-dead'), 'an expired object of a kind nobody watched is still there ...')
  t.equal(await other.get('endpoints', 'nse-dead'), undefined, '... but get never returns it past its expiry')
  t.notOk((await other.list('endpoints')).entries.some((e) => e.name === 'nse-dead'), '... nor list')
  await until('nse-dead collected', () => f.get('networkserviceendpoints', NS, 'nse-dead') === undefined)
  t.pass('and the agent that saw it collects it')

  // A collector that holds an old revision and whose clock runs ahead (it thinks the entry expired) meets
  // a refresh it did not see: its precondition fails, it reads the object again, and leaves it.
  const hour = 3_600_000
  let ahead = 0
  const skewed = store(t, f, { now: () => Date.now() + ahead })
  const live = store(t, f)
  const r1 = await live.put('claims', 'pool.10.0.0.9', { n: 1 }, { ttlMs: hour })
  t.ok(await skewed.get('claims', 'pool.10.0.0.9'), 'the skewed agent has seen revision 1')
  const r2 = await live.put('claims', 'pool.10.0.0.9', { n: 2 }, { ttlMs: 2 * hour })
  await live.put('claims', 'pool.10.0.0.8', { n: 3 }, { ttlMs: hour / 2 })
  const reread = new Promise<void>((resolve) => {
    let deleted = false
    const onRequest = (r: { method: string; path: string }): void => {
      if (!r.path.endsWith('/nsmaddressclaims/pool.10.0.0.9')) return
      if (r.method === 'DELETE') deleted = true
      else if (deleted && r.method === 'GET') {
        f.events.off('request', onRequest)
        resolve()
      }
    }
    f.events.on('request', onRequest)
  })
  ahead = 1.5 * hour
  await skewed.get('claims', 'pool.10.0.0.8') // an earlier expiry wakes its collector: revision 1 is due by its clock
  await reread
  t.equal(raw(f, 'nsmaddressclaims', 'pool.10.0.0.9').metadata['resourceVersion'], r2.revision, 'the refreshed object survives the stale delete')
  t.not(r1.revision, r2.revision)
  t.strictSame((await skewed.get('claims', 'pool.10.0.0.9'))?.value, { n: 2 }, 'and the skewed agent now sees the refresh')
})

t.test('an entry past its expiry that no collector deleted yet is gone for every call', async (t) => {
  const f = await startK8sFixture(t)
  const hour = 3_600_000
  let ahead = 0
  const kv = store(t, f, { now: () => Date.now() + ahead })
  const r = await kv.create('claims', 'pool.10.0.0.5', { n: 1 }, { ttlMs: hour })
  ahead = 2 * hour // its collector's timer is an hour away: the object stays in the API meanwhile
  t.ok(f.get('nsmaddressclaims', NS, 'pool.10.0.0.5'), 'the object is still in the API')
  t.equal(await kv.get('claims', 'pool.10.0.0.5'), undefined, 'get: gone')
  t.notOk((await kv.list('claims')).entries.some((e) => e.name === 'pool.10.0.0.5'), 'list: gone')
  await t.rejects(kv.put('claims', 'pool.10.0.0.5', { n: 2 }, { revision: r.revision }), KvConflict, 'put with its revision: conflict, as for a deleted entry')
  await t.rejects(kv.delete('claims', 'pool.10.0.0.5', { revision: r.revision }), KvConflict, 'delete with its revision: conflict')
  const again = await kv.create('claims', 'pool.10.0.0.5', { n: 3 })
  t.strictSame(again.value, { n: 3 }, 'create succeeds (it replaces the expired object)')
  t.notOk('nsm-cni.io/expires-at' in annotations(raw(f, 'nsmaddressclaims', 'pool.10.0.0.5')), 'and the new object has no expiry')
})

// ---- watch ----------------------------------------------------------------------------------------------

for (const goneAs of ['event', 'status'] as const) {
  t.test(`410 Gone (${goneAs === 'event' ? 'an ERROR event' : 'HTTP 410'}) on a compacted resourceVersion: onReset with the list, then events`, async (t) => {
    const f = await startK8sFixture(t, { goneAs })
    const kv = store(t, f)
    await kv.create('endpoints', 'a', { endpoint: { name: 'a' } })
    const { revision } = await kv.list('endpoints')
    await kv.create('endpoints', 'b', { endpoint: { name: 'b' } })
    await kv.delete('endpoints', 'a')
    f.compact()
    const rec = new WatchRecorder()
    t.teardown(kv.watch('endpoints', revision, rec.handlers))
    await rec.until('a reset', () => rec.resets() === 1)
    t.strictSame([...rec.view.keys()], ['b'], 'the reset holds the store as it is now')
    const c = await kv.create('endpoints', 'c', { endpoint: { name: 'c' } })
    await rec.until('c', () => rec.view.has('c'))
    t.strictSame(rec.events(), [{ type: 'put', entry: c }], 'then the changes after it')
    t.strictSame(rec.states(), [], 'a 410 is not an outage')
  })
}

t.test('a watch asks for bookmarks and resumes from the last one when the server ends it', async (t) => {
  const f = await startK8sFixture(t, { bookmarkIntervalMs: 0 })
  const kv = store(t, f)
  const { revision } = await kv.list('claims')
  const watches: URLSearchParams[] = []
  f.events.on('watch', (r: { query: URLSearchParams }) => watches.push(r.query))
  const rec = new WatchRecorder()
  t.teardown(kv.watch('claims', revision, rec.handlers))
  await until('the watch open', () => watches.length === 1)
  t.equal(watches[0]?.get('allowWatchBookmarks'), 'true')
  t.equal(watches[0]?.get('resourceVersion'), revision, 'the first watch starts at the list revision')
  for (let i = 0; i < 3; i++) await kv.put('nodes', `n${i}`, { i }) // other kinds move the version on
  const bookmarked = f.resourceVersion()
  f.sendBookmarks()
  f.dropWatches()
  await until('the watch reopened', () => watches.length === 2)
  t.equal(watches[1]?.get('resourceVersion'), bookmarked, 'resumes from the bookmark, not from the list revision')
  t.strictSame(rec.log, [], 'bookmarks and a resumed watch are invisible to the caller')
})

t.test('a black-holed API server: calls reject with KvUnavailable, the watch goes down and comes back', async (t) => {
  const f = await startK8sFixture(t)
  const kv = store(t, f, { timeoutMs: 300 })
  const writer = store(t, f)
  const { revision } = await kv.list('nodes')
  const rec = new WatchRecorder()
  t.teardown(kv.watch('nodes', revision, rec.handlers))
  await new Promise((r) => f.events.once('watch', r))
  f.stall()
  f.dropWatches()
  t.teardown(() => f.unstall())
  await rejectsUnavailable(t, kv.get('nodes', 'x'), 'kubernetes', 300, 'get')
  await rejectsUnavailable(t, kv.put('nodes', 'x', {}), 'kubernetes', 300, 'put')
  await rejectsUnavailable(t, kv.health(), 'kubernetes', 300, 'health')
  await rec.until("'down'", () => rec.states().includes('down'))
  f.unstall()
  const x = await writer.put('nodes', 'x', { back: true })
  await rec.until('the change made after the server came back', () => rec.view.get('x')?.revision === x.revision)
  t.strictSame(rec.states(), ['down', 'up'])
  t.equal(rec.resets(), 0, 'resumed from its revision')
})

// ---- the fixture ----------------------------------------------------------------------------------------

interface Reply { status: number; body: Record<string, unknown> }

function call(f: K8sFixture, method: string, path: string, body?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body)
    const headers = { authorization: `Bearer ${f.token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text ?? '')) }
    const req = request(`${f.url}${path}`, { method, ca: FIXTURE_CA, headers }, (res) => {
      let answer = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (answer += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(answer) as Record<string, unknown> }))
    })
    req.on('error', reject)
    req.end(text)
  })
}

t.test('fixture: nsm-cni.io resources, DELETE preconditions, bookmarks, stop and start', async (t) => {
  const f = await startK8sFixture(t, { bookmarkIntervalMs: 0 })
  const base = `/apis/nsm-cni.io/v1/namespaces/${NS}`
  const discovery = await call(f, 'GET', '/apis/nsm-cni.io/v1')
  t.same((discovery.body['resources'] as Array<{ name: string; kind: string }>).map((r) => [r.name, r.kind]), [['nsmaddressclaims', 'NsmAddressClaim'], ['nsmnodes', 'NsmNode']])
  const created = await call(f, 'POST', `${base}/nsmnodes`, { metadata: { name: 'n1' }, spec: { a: 1 } })
  t.same([created.status, created.body['kind'], created.body['apiVersion']], [201, 'NsmNode', 'nsm-cni.io/v1'])
  const rv = (created.body['metadata'] as { resourceVersion: string; uid: string })
  const stale = await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { resourceVersion: '1' } })
  t.same([stale.status, stale.body['reason']], [409, 'Conflict'], 'a DELETE whose resourceVersion precondition fails is 409')
  t.equal((await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { uid: 'other' } })).status, 409, 'so is a failed uid precondition')
  t.equal((await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { resourceVersion: rv.resourceVersion, uid: rv.uid } })).status, 200, 'a matching one deletes')

  // A watch with bookmarks: one once the replay is out, then on demand.
  const lines: Array<{ type: string; object: { metadata: { resourceVersion?: string } } }> = []
  const from = f.resourceVersion()
  await call(f, 'POST', `${base}/nsmaddressclaims`, { metadata: { name: 'c1' }, spec: {} })
  await new Promise<void>((resolve, reject) => {
    const req = request(`${f.url}${base}/nsmaddressclaims?watch=true&allowWatchBookmarks=true&resourceVersion=${from}`, { ca: FIXTURE_CA, headers: { authorization: `Bearer ${f.token}` } }, (res) => {
      let buf = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        buf += c
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          lines.push(JSON.parse(buf.slice(0, nl)) as (typeof lines)[number])
          buf = buf.slice(nl + 1)
          if (lines.length === 2) f.sendBookmarks()
          if (lines.length === 3) {
            req.destroy()
            resolve()
          }
        }
      })
    })
    req.on('error', (err) => (lines.length === 3 ? undefined : reject(err)))
    req.end()
  })
  t.same(lines.map((l) => l.type), ['ADDED', 'BOOKMARK', 'BOOKMARK'], 'the replay, a bookmark at its end, one on sendBookmarks()')
  t.equal(lines[1]?.object.metadata.resourceVersion, f.resourceVersion(), 'a bookmark carries the current version')

  await f.stop()
  await t.rejects(call(f, 'GET', `${base}/nsmaddressclaims`), { code: 'ECONNREFUSED' }, 'stopped: connections are refused')
  await f.start()
  const after = await call(f, 'GET', `${base}/nsmaddressclaims`)
  t.same((after.body['items'] as KObject[]).map((o) => o.metadata.name), ['c1'], 'started again on the same port, with its state')
})
