// agent/registry in-process: validation stores nothing on failure, default expiry, refresh semantics,
// event order, expiry on load and by timer, the file store's atomic snapshot (and rollback when a write
// fails), concurrent registrations; plus the connection table's persistence and events, and the netns
// policy applied to endpoint urls and netns paths (the policy itself: netns-policy.test.ts).
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import { Registry, type RegistryEvent } from '../../agent/registry/registry.js'
import { serviceCodec, storedEndpointCodec, timestampMs, timestampOf, type StoredEndpoint, type StoredService } from '../../agent/registry/records.js'
import { FileStore, MemoryStore } from '../../agent/registry/store.js'
import { ConnectionTable, type ConnectionTableEvent } from '../../agent/connections/table.js'
import { AgentError } from '../../agent/errors.js'

const ALLOW = ['/var/run/netns/*', '/run/netns/*', '/proc/*/ns/net']

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-registry-unit-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function nse(name: string, extra: Partial<NetworkServiceEndpoint> = {}): NetworkServiceEndpoint {
  return NetworkServiceEndpoint.fromPartial({ name, networkServiceNames: ['svc'], url: `file:///run/netns/${name}`, ...extra })
}

async function memoryRegistry(now: () => number, ttl = 60_000) {
  const services = new MemoryStore<StoredService>()
  const endpoints = new MemoryStore<StoredEndpoint>()
  const registry = await Registry.open({ services, endpoints, netnsAllow: ALLOW, defaultTtlMs: ttl, now })
  const events: RegistryEvent[] = []
  registry.subscribe((e) => events.push(e))
  return { registry, services, endpoints, events }
}

t.test('endpoint urls and netns paths go through the netns policy', async (t) => {
  const { registry } = await memoryRegistry(() => 1_000_000)
  t.teardown(() => registry.close())
  const ok = await registry.registerEndpoint(nse('pid', { url: 'file:///proc/999999999/ns/net' }))
  t.equal(ok.extension.netnsPath, '/proc/999999999/ns/net', 'a /proc/<pid> path is accepted')
  const refused: Array<[string, Partial<NetworkServiceEndpoint>, EndpointExtension | undefined, string, RegExp]> = [
    ['self', { url: 'file:///proc/self/ns/net' }, undefined, 'network_service_endpoint.url', /agent's own network namespace/],
    ['deep', { url: 'file:///var/run/netns/a/b' }, undefined, 'network_service_endpoint.url', /netns \/var\/run\/netns\/a\/b is outside the allowlist/],
    ['climb', { url: 'file:///var/run/netns/../../etc/x' }, undefined, 'network_service_endpoint.url', /outside|normal form/],
    ['ext', {}, EndpointExtension.fromPartial({ netnsPath: '/run/netns/a/../b' }), 'extension.netns_path', /normal form/],
    ['rel', {}, EndpointExtension.fromPartial({ netnsPath: 'run/netns/x' }), 'extension.netns_path', /not absolute/],
  ]
  for (const [name, extra, ext, field, message] of refused) {
    await t.rejects(registry.registerEndpoint(nse(name, extra), ext), { code: 'BAD_NETNS', field, message }, name)
  }
  t.same(registry.findEndpoints().map((e) => e.endpoint.name), ['pid'], 'nothing refused was stored')
})

t.test('register: default expiry, refresh keeps initial time and extension, events in order', async (t) => {
  let now = 1_000_000
  const { registry, endpoints, events } = await memoryRegistry(() => now)
  t.teardown(() => registry.close())
  const ext = EndpointExtension.fromPartial({ cidrPools: ['10.1.0.0/24'] })
  const first = await registry.registerEndpoint(nse('a'), ext)
  t.equal(timestampMs(first.endpoint.expirationTime), now + 60_000, 'default TTL applied')
  t.equal(first.extension.endpointName, 'a')
  t.equal(first.extension.netnsPath, '/run/netns/a', 'netns taken from the file:// url')
  now += 1000
  const refreshed = await registry.registerEndpoint(nse('a'))
  t.same(refreshed.endpoint.initialRegistrationTime, first.endpoint.initialRegistrationTime)
  t.same(refreshed.extension.cidrPools, ['10.1.0.0/24'], 'plain Register keeps the extension')
  t.equal(timestampMs(refreshed.endpoint.expirationTime), now + 60_000, 'refresh extends expiry')
  await registry.unregisterEndpoint('a')
  t.same(events.map((e) => (e.kind === 'endpoint' ? `${e.type}:${e.reason}` : '')), ['update:registered', 'update:refreshed', 'delete:unregistered'])
  t.equal(endpoints.data.size, 0)
  t.equal(await registry.unregisterEndpoint('a'), undefined, 'unknown endpoint')
})

t.test('invalid input stores nothing and names the field', async (t) => {
  const { registry, endpoints, services, events } = await memoryRegistry(() => 5_000_000)
  t.teardown(() => registry.close())
  const cases: Array<[() => Promise<unknown>, string]> = [
    [() => registry.registerEndpoint(nse('a', { networkServiceNames: [] })), 'network_service_endpoint.network_service_names'],
    [() => registry.registerEndpoint(nse('a', { networkServiceNames: ['svc', 'svc'] })), 'network_service_endpoint.network_service_names[1]'],
    [() => registry.registerEndpoint(nse('a', { url: 'file:///tmp/ns' })), 'network_service_endpoint.url'],
    [() => registry.registerEndpoint(nse('a'), EndpointExtension.fromPartial({ cidrPools: ['10.0.0.1/32'] })), 'extension.cidr_pools[0]'],
    [() => registry.registerEndpoint(nse('a'), EndpointExtension.fromPartial({ routes: [{ prefix: '10.0.0.0/8', nextHop: 'gw' }] })), 'extension.routes[0].nextHop'],
    [() => registry.registerEndpoint(nse('a'), EndpointExtension.fromPartial({ endpointName: 'b' })), 'extension.endpoint_name'],
    [() => registry.registerService(NetworkService.fromPartial({ name: 's', payload: 'MPLS' })), 'network_service.payload'],
    [() => registry.registerService(NetworkService.fromPartial({ name: '' })), 'network_service.name'],
  ]
  for (const [fn, field] of cases) {
    try {
      await fn()
      t.fail(`${field}: expected an error`)
    } catch (err) {
      t.ok(AgentError.is(err), `${field}: AgentError`)
      t.equal((err as AgentError).field, field)
    }
  }
  t.equal(endpoints.data.size, 0)
  t.equal(services.data.size, 0)
  t.same(events, [])
})

t.test('expired entries are dropped on load and by the timer', async (t) => {
  const endpoints = new MemoryStore<StoredEndpoint>()
  const old: StoredEndpoint = { endpoint: nse('old', { expirationTime: timestampOf(1000) }), extension: EndpointExtension.fromPartial({ endpointName: 'old' }) }
  endpoints.data.set('old', old)
  const registry = await Registry.open({ services: new MemoryStore(), endpoints, netnsAllow: ALLOW, defaultTtlMs: 60_000, now: () => 2000 })
  t.same(registry.findEndpoints(), [])
  t.equal(endpoints.data.size, 0, 'deleted from the store')
  registry.close()

  // Timer: a real clock and an endpoint that expires shortly; wait for the event (no timing asserted).
  const live = await memoryRegistry(Date.now)
  t.teardown(() => live.registry.close())
  const expired = new Promise<RegistryEvent>((res) => live.registry.subscribe((e) => e.type === 'delete' && res(e)))
  await live.registry.registerEndpoint(nse('soon', { expirationTime: timestampOf(Date.now() + 50) }))
  const ev = await expired
  t.equal(ev.kind === 'endpoint' ? ev.reason : '', 'expired')
  t.equal(live.registry.endpoint('soon'), undefined)
})

t.test('file store: durable snapshot, reload, rollback on a failed write', async (t) => {
  const dir = tmp(t)
  const path = join(dir, 'registry', 'endpoints.json')
  const make = () => Registry.open({ services: new FileStore(join(dir, 'registry', 'services.json'), serviceCodec), endpoints: new FileStore(path, storedEndpointCodec), netnsAllow: ALLOW, defaultTtlMs: 60_000 })
  const r1 = await make()
  await Promise.all(Array.from({ length: 50 }, (_, i) => r1.registerEndpoint(nse(`e${i}`))))
  await r1.registerService(NetworkService.fromPartial({ name: 'svc' }))
  r1.close()
  const onDisk = JSON.parse(readFileSync(path, 'utf8')) as { items: Record<string, unknown> }
  t.equal(Object.keys(onDisk.items).length, 50, 'all 50 concurrent registrations on disk')
  t.same(readdirSync(join(dir, 'registry')).sort(), ['endpoints.json', 'services.json'], 'no temp files left')
  const r2 = await make()
  t.equal(r2.findEndpoints().length, 50, 'reloaded')
  t.equal(r2.service('svc')?.payload, 'IP')
  r2.close()

  // A store whose directory cannot be created: put fails, registry unchanged.
  const blocker = join(dir, 'blocker')
  const broken = await Registry.open({ services: new MemoryStore(), endpoints: new FileStore(join(blocker, 'endpoints.json'), storedEndpointCodec), netnsAllow: ALLOW, defaultTtlMs: 60_000 })
  writeFileSync(blocker, 'a file where the store directory should be')
  await t.rejects(broken.registerEndpoint(nse('x')))
  t.same(broken.findEndpoints(), [], 'nothing registered after the failed write')
  broken.close()
})

t.test('connection table: events, persistence, attachments', async (t) => {
  const dir = tmp(t)
  const path = join(dir, 'connections.json')
  const table = await ConnectionTable.open(path)
  const events: ConnectionTableEvent[] = []
  table.subscribe((e) => events.push(e))
  const conn = { id: 'c1', networkService: 's', labels: {}, payload: '', networkServiceEndpointName: 'e', state: State.UP, mechanism: undefined, context: undefined, path: undefined }
  await table.upsert(conn, { network: 'n', containerId: 'ctr', ifname: 'nsm-1', netns: '/run/netns/x' })
  await table.setState('c1', State.DOWN)
  t.equal(table.get('c1')?.attachment?.ifname, 'nsm-1', 'attachment kept on state change')
  t.same(table.byAttachment('n', 'ctr').map((e) => e.connection.id), ['c1'])
  await table.flush()
  // One live table per file (as in the agent): reopen only after the first is done writing.
  const reopened = await ConnectionTable.open(path)
  t.equal(reopened.get('c1')?.connection.state, State.DOWN, 'state persisted')
  t.equal(reopened.get('c1')?.attachment?.containerId, 'ctr', 'attachment persisted')
  reopened.subscribe((e) => events.push(e))
  t.equal(await reopened.delete('c1').then((e) => e?.connection.id), 'c1')
  t.equal(await reopened.delete('c1'), undefined)
  await reopened.flush()
  t.same(events.map((e) => `${e.type}:${e.entry.connection.state}`), ['update:0', 'update:1', 'delete:1'])
  t.equal((await ConnectionTable.open(path)).size, 0)
})
