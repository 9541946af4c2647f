// Issue 11 in-process: two registries (two agents) over one shared store (MemoryKv, the reference backend
// the conformance suite pins etcd and Kubernetes to). What one registers the other announces once, stamped
// with its node; the echo of an agent's own write announces nothing twice; a reset (history compacted)
// re-syncs; an entry that does not decode is reported and skipped; the engine away: registrations fail
// with STORE_FAILURE and the view stays; CNI endpoints are refreshed in one batch by their own node only.
import t from 'tap'
import { MemoryKv } from '../../agent/store/memory.js'
import { KvStore } from '../../agent/store/kv-store.js'
import { Registry, type RegistryEvent } from '../../agent/registry/registry.js'
import { checkStoredEndpoint, checkStoredService, serviceCodec, storedEndpointCodec, timestampMs, type StoredEndpoint } from '../../agent/registry/records.js'
import type { StoreDamage } from '../../agent/registry/store.js'
import { refreshCniEndpoints } from '../../agent/cni/endpoint.js'
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'
import type { Kv } from '../../agent/store/kv.js'
import { makeNetns } from '../lib/netns.js'

const ALLOW = ['/var/run/netns/*']
const NETNS = makeNetns(t, 'sr').path

async function agent(t: { teardown(fn: () => void): void }, kv: Kv, node: string) {
  const damage: StoreDamage[] = []
  const registry = await Registry.open({
    services: new KvStore(kv, 'services', serviceCodec, { onDamage: (d) => damage.push(d), check: checkStoredService }),
    endpoints: new KvStore(kv, 'endpoints', storedEndpointCodec, { onDamage: (d) => damage.push(d), check: checkStoredEndpoint, ttlOf: (e: StoredEndpoint) => (timestampMs(e.endpoint.expirationTime) ?? 0) - Date.now() }),
    netnsAllow: ALLOW,
    defaultTtlMs: 60_000,
    nodeName: node,
  })
  t.teardown(() => registry.close())
  const events: RegistryEvent[] = []
  registry.subscribe((e) => events.push(e))
  return { registry, events, damage }
}

const settle = () => new Promise((r) => setTimeout(r, 20))
const nse = (name: string, ttlMs = 3_600_000) =>
  NetworkServiceEndpoint.fromPartial({ name, networkServiceNames: ['svc'], url: `file://${NETNS}`, expirationTime: { seconds: Math.floor((Date.now() + ttlMs) / 1000), nanos: 0 } })

t.test('what one agent registers, the other announces once; its own echo announces nothing again', async (t) => {
  const store = new MemoryKv()
  const a = await agent(t, store, 'n1')
  const b = await agent(t, store.connect(), 'n2')
  await a.registry.registerEndpoint(nse('e1'), EndpointExtension.fromPartial({ cidrPools: ['10.0.0.0/24'] }))
  await settle()
  t.same(a.events.map((e) => `${e.kind}:${e.type}:${e.kind === 'endpoint' ? e.reason : ''}`), ['endpoint:update:registered'], 'the writer: one event, no echo')
  t.same(b.events.map((e) => `${e.kind}:${e.type}:${e.kind === 'endpoint' ? e.reason : ''}`), ['endpoint:update:registered'], 'the other agent: one event')
  t.equal(b.registry.endpoint('e1')?.extension.nodeName, 'n1', 'stamped with the registering node')
  await b.registry.registerService(NetworkService.fromPartial({ name: 'svc' }), ServicePolicy.fromPartial({ namespace: 'ops' }))
  await settle()
  t.equal(a.registry.servicePolicy('svc')?.namespace, 'ops', 'a service and its policy travel')
  await b.registry.unregisterEndpoint('e1')
  await settle()
  t.equal(a.registry.endpoint('e1'), undefined)
  t.match(a.events.at(-1), { kind: 'endpoint', type: 'delete', reason: 'unregistered' })
  await store.close()
})

t.test('expiry in the engine: a delete announced as expired; a reset re-syncs; damage is skipped', async (t) => {
  const store = new MemoryKv({ historyLimit: 5 })
  const a = await agent(t, store, 'n1')
  const b = await agent(t, store.connect(), 'n2')
  // 2 s, as whole seconds (nse() floors): at least 1 s left when b is asked, gone 2.3 s later.
  await a.registry.registerEndpoint(nse('short', 2_000))
  await settle()
  t.ok(b.registry.endpoint('short'))
  await new Promise((r) => setTimeout(r, 2_300))
  t.equal(b.registry.endpoint('short'), undefined)
  t.ok(b.events.some((e) => e.kind === 'endpoint' && e.type === 'delete' && e.endpoint.name === 'short' && e.reason === 'expired'), 'announced as expired')
  // b's engine goes away; a writes more than the history holds; b comes back: reset.
  const other = store.connect()
  store.down()
  await t.rejects(b.registry.registerEndpoint(nse('refused')), { code: 'STORE_FAILURE', message: /memory store endpoints\/refused: write failed, the store is unreachable/ })
  t.equal(b.registry.endpoint('refused'), undefined, 'nothing registered')
  store.up()
  await other.put('endpoints', 'garbage', { endpoint: 'not an endpoint' })
  for (let i = 0; i < 8; i++) await a.registry.registerEndpoint(nse(`x${i}`))
  store.compact()
  await a.registry.registerEndpoint(nse('after'))
  await settle()
  t.same(
    b.registry.findEndpoints().map((e) => e.endpoint.name),
    ['after', ...Array.from({ length: 8 }, (_, i) => `x${i}`)].sort(),
    'b converged',
  )
  t.ok(b.damage.some((d) => d.file === 'memory:endpoints/garbage'), 'the undecodable entry was reported, not loaded')
  await store.close()
})

t.test('CNI endpoints are refreshed by their own node, in one batch', async (t) => {
  const store = new MemoryKv()
  const a = await agent(t, store, 'n1')
  const b = await agent(t, store.connect(), 'n2')
  await a.registry.registerEndpoint(nse('web.cni-pod1', 30_000))
  const byHand = nse('by-hand', 30_000)
  await a.registry.registerEndpoint(byHand)
  await b.registry.registerEndpoint(nse('web.cni-pod2', 30_000))
  await settle()
  const before = timestampMs(a.registry.endpoint('web.cni-pod1')?.endpoint.expirationTime) ?? 0
  t.equal(await refreshCniEndpoints(a.registry, 'n1', 600_000), 1, 'only n1\'s CNI endpoint')
  await settle()
  t.ok((timestampMs(b.registry.endpoint('web.cni-pod1')?.endpoint.expirationTime) ?? 0) > before + 500_000, 'seen refreshed on n2')
  // The expiration it was registered with (a second `nse(...)` made now may fall in the next second).
  t.equal(timestampMs(a.registry.endpoint('by-hand')?.endpoint.expirationTime), timestampMs(byHand.expirationTime), 'an API registration is its owner\'s to refresh')
  await store.close()
})
