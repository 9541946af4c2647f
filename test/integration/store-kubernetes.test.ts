// The Kubernetes backend of the cluster store (agent/store/kubernetes.ts) against the project's Kubernetes API
// fixture (the one stand-in allowed): the store contract (test/lib/kv-conformance.ts, with the fixture's
// compaction and outage switch) and the objects as NSM's CRDs and ours define them. Agents sharing the
// store and expiry are store-kubernetes-agents.test.ts; 410 Gone, bookmarks and a black-holed server
// store-kubernetes-watch.test.ts; the fixture features the backend relies on store-kubernetes-fixture.test.ts.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { KubernetesKv } from '../../agent/store/kubernetes'
import type { KvKind } from '../../agent/store/kv'
import { serviceCodec, storedEndpointCodec } from '../../agent/registry/records'
import { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni'
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry'
import { startK8sFixture } from '../lib/k8s-fixture'
import { kvConformance } from '../lib/kv-conformance'
import { annotations, NS, quiet, raw, store } from '../lib/kv-kubernetes'

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
