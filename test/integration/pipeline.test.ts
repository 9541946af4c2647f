// The request pipeline in-process over the real kernel, a real registry and connection table:
// request/refresh/close, every element undoing its work under fault injection, validation, the
// seed's composition (client → firewall → vpn-gateway) with a ping through the firewall, and healing.
import t from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable, type ConnectionTableEvent } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import { injectError } from '../../agent/pipeline/inject-error'
import { silentLogger } from '../../agent/server/log'
import { State } from '../../proto/gen/networkservice/connection'
import { ip, linkAddresses, linkNames, makeNetns, sh, type TestNetns } from '../lib/netns'
import { kernelRequest, registerEndpoint, SEED, seedServices, serviceMessage, testContext } from '../lib/mesh'

interface Mesh {
  registry: Registry
  table: ConnectionTable
  dp: Dataplane
}

type Insert = NonNullable<Parameters<typeof createDataplane>[0]['insertAfter']>

async function mesh(t: { teardown(fn: () => Promise<void>): void }, opts: { insertAfter?: Insert } = {}): Promise<Mesh> {
  const registry = await Registry.open({
    services: new MemoryStore(),
    endpoints: new MemoryStore(),
    netnsAllow: ['/var/run/netns/*', '/run/netns/*'],
    defaultTtlMs: 60_000,
  })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const table = ConnectionTable.inMemory()
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*', '/run/netns/*'], log: silentLogger, healPollMs: 100, ...opts })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  return { registry, table, dp }
}

const ping = (ns: string, addr: string): string => sh('ip', ['netns', 'exec', ns, 'ping', '-c', '2', '-i', '0.2', '-W', '1', addr])
const nonLocal = (ns: string, ifname: string): string[] => linkAddresses(ns, ifname).filter((a) => !a.startsWith('fe80'))

t.test('request builds the veth with addresses and routes; refresh keeps it; close removes everything', async (t) => {
  const m = await mesh(t)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(m.registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29', 'fd00:1::/125'], routes: ['10.60.0.0/16'] })
  const conn = await m.dp.handler.request(kernelRequest('c1-nsm0', client.path, 'nsm0', { app: 'web' }), testContext())
  t.equal(conn.state, State.UP)
  t.equal(conn.networkServiceEndpointName, 'firewall-1')
  t.same(conn.context?.ipContext?.srcIpAddrs, ['172.16.1.1/32', 'fd00:1::1/128'])
  t.same(conn.context?.ipContext?.dstIpAddrs, ['172.16.1.0/32', 'fd00:1::/128'])
  t.same(nonLocal(client.name, 'nsm0').sort(), ['172.16.1.1/32', 'fd00:1::1/128'])
  const routes = JSON.parse(ip(client.name, '-j', 'route', 'show')) as Array<{ dst: string; gateway?: string }>
  t.ok(routes.some((r) => r.dst === '10.60.0.0/16' && r.gateway === '172.16.1.0'), 'offered route via the endpoint')
  t.match(ping(client.name, '172.16.1.0'), /2 received/)
  const again = await m.dp.handler.request(kernelRequest('c1-nsm0', client.path, 'nsm0', { app: 'web' }), testContext())
  t.same(again.context?.ipContext?.srcIpAddrs, conn.context?.ipContext?.srcIpAddrs, 'refresh keeps the addresses')
  t.equal(linkNames(client.name).filter((n) => n === 'nsm0').length, 1)
  // a second connection of the same client never overlaps the first
  const second = await m.dp.handler.request(kernelRequest('c1-nsm1', client.path, 'nsm1', { app: 'web' }), testContext())
  t.same(second.context?.ipContext?.srcIpAddrs, ['172.16.1.3/32', 'fd00:1::3/128'])
  await m.dp.handler.close(conn, testContext())
  await m.dp.handler.close(second, testContext())
  await m.dp.handler.close(second, testContext()) // idempotent
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(fw.name), ['lo'])
  t.equal(m.table.size, 0)
  t.same(m.dp.pool.allRecords(), [])
})

t.test('bad requests get INVALID_ARGUMENT / BAD_NETNS naming the field and change nothing', async (t) => {
  const m = await mesh(t)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(m.registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29'] })
  const cases: Array<[string, ReturnType<typeof kernelRequest>, RegExp, string]> = []
  const r1 = kernelRequest('', client.path, 'nsm0')
  cases.push(['empty id', r1, /connection\.id/, 'INVALID_ARGUMENT'])
  cases.push(['long ifname', kernelRequest('x1', client.path, 'a-very-long-interface'), /parameters\.name/, 'INVALID_ARGUMENT'])
  cases.push(['netns outside allowlist', kernelRequest('x2', '/etc/passwd', 'nsm0'), /inodeURL/, 'BAD_NETNS'])
  const r4 = kernelRequest('x3', client.path, 'nsm0')
  r4.mechanismPreferences = [{ cls: 'LOCAL', type: 'MEMIF', parameters: {} }]
  cases.push(['unsupported mechanism', r4, /KERNEL/, 'MECHANISM_NOT_SUPPORTED'])
  cases.push(['unknown service', kernelRequest('x4', client.path, 'nsm0', {}, 'no-such-service'), /not registered/, 'NO_ENDPOINT'])
  for (const [name, req, msg, code] of cases) {
    await t.rejects(m.dp.handler.request(req, testContext()), { code, message: msg }, name)
  }
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(fw.name), ['lo'])
  t.equal(m.table.size, 0)
  t.same(m.dp.pool.allRecords(), [])
})

for (const after of ['validate', 'select', 'ipam', 'mechanism', 'persist']) {
  t.test(`a failure after ${after} leaves no link, address or reservation`, async (t) => {
    const m = await mesh(t, { insertAfter: { after, element: injectError({ error: () => Object.assign(new Error(`injected after ${after}`), { code: 'INTERNAL' }) }) } })
    const client = makeNetns(t, 'cl')
    const fw = makeNetns(t, 'fw')
    await registerEndpoint(m.registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29'], routes: ['10.60.0.0/16'] })
    await t.rejects(m.dp.handler.request(kernelRequest('f1', client.path, 'nsm0'), testContext()), { message: `injected after ${after}` })
    t.same(linkNames(client.name), ['lo'], 'no link in the client')
    t.same(linkNames(fw.name), ['lo'], 'no link in the endpoint')
    t.equal(m.table.size, 0, 'nothing stored')
    t.same(m.dp.pool.allRecords(), [], 'no reservation')
  })
}

t.test('composition: client → firewall → vpn-gateway, ping through the firewall', async (t) => {
  const m = await mesh(t)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  const vpn = makeNetns(t, 'vpn')
  ip(vpn.name, 'addr', 'add', '10.60.0.1/32', 'dev', 'lo')
  await registerEndpoint(m.registry, { name: 'vpn-gateway-1', netns: vpn.path, labels: { app: 'vpn-gateway' }, pools: ['172.16.2.0/24'], routes: ['10.60.0.0/16'] })
  await registerEndpoint(m.registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], routes: ['10.60.0.0/16'] })
  const up = await m.dp.handler.request(kernelRequest('fw-nsm0', fw.path, 'nsm0', { app: 'firewall' }), testContext())
  t.equal(up.networkServiceEndpointName, 'vpn-gateway-1', 'the firewall (app=firewall) is connected to the vpn-gateway')
  const c = await m.dp.handler.request(kernelRequest('cl-nsm0', client.path, 'nsm0', { app: 'web' }), testContext())
  t.equal(c.networkServiceEndpointName, 'firewall-1', 'the client is connected to the firewall')
  sh('ip', ['netns', 'exec', fw.name, 'nft', '-f', '-'], { input: 'add table inet nsmtest\nadd chain inet nsmtest forwarded { type filter hook forward priority 0; }\nadd rule inet nsmtest forwarded counter\n' })
  t.match(ping(client.name, '10.60.0.1'), /2 received/, 'the intranet address behind the vpn-gateway answers')
  const counter = sh('ip', ['netns', 'exec', fw.name, 'nft', 'list chain inet nsmtest forwarded'])
  const packets = Number(/packets (\d+)/.exec(counter)?.[1] ?? '0')
  t.ok(packets >= 4, `the firewall forwarded the pings (${packets} packets)`)
  await m.dp.handler.close(c, testContext())
  await m.dp.handler.close(up, testContext())
  for (const ns of [client, fw, vpn]) t.same(linkNames(ns.name), ['lo'])
})

t.test('heal: the endpoint goes away; the connection moves, keeps its name, DOWN then UP', async (t) => {
  const m = await mesh(t)
  const client = makeNetns(t, 'cl')
  const a = makeNetns(t, 'ea')
  const b = makeNetns(t, 'eb')
  const events: ConnectionTableEvent[] = []
  m.table.subscribe((e) => events.push(e))
  m.dp.healer.start()
  // Registered by url only (no netns path in the extension): the registry derives the path from the url.
  await registerEndpoint(m.registry, { name: 'fw-a', netns: a.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], urlOnly: true })
  await registerEndpoint(m.registry, { name: 'fw-b', netns: b.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], urlOnly: true })
  const conn = await m.dp.handler.request(kernelRequest('h1', client.path, 'nsm0'), testContext())
  const first = conn.networkServiceEndpointName
  const [gone, other]: [TestNetns, string] = first === 'fw-a' ? [a, 'fw-b'] : [b, 'fw-a']
  events.length = 0
  ip(undefined, 'netns', 'del', gone.name) // the endpoint's netns disappears
  const deadline = Date.now() + 3000
  while (Date.now() < deadline && m.table.get('h1')?.connection.networkServiceEndpointName !== other) await new Promise((r) => setTimeout(r, 50))
  await m.dp.healer.idle()
  const healed = m.table.get('h1')?.connection
  t.equal(healed?.networkServiceEndpointName, other, 'moved to the other endpoint')
  t.equal(healed?.state, State.UP)
  t.same(healed?.context?.ipContext?.srcIpAddrs, conn.context?.ipContext?.srcIpAddrs, 'kept its address (same pool)')
  t.ok(linkNames(client.name).includes('nsm0'), 'kept its interface name')
  const states = events.filter((e) => e.type === 'update').map((e) => e.entry.connection.state)
  t.same([states[0], states.at(-1)], [State.DOWN, State.UP], 'monitor saw DOWN then UP')
  t.match(ping(client.name, conn.context?.ipContext?.dstIpAddrs[0]?.split('/')[0] ?? ''), /2 received/)
  await m.dp.handler.close(healed ?? conn, testContext())
  t.same(linkNames(client.name), ['lo'])
})

for (const how of ['unregistered', 'expired'] as const) {
  t.test(`heal: the serving endpoint is ${how}; the connection moves to the other one`, async (t) => {
    const m = await mesh(t)
    const client = makeNetns(t, 'cl')
    const a = makeNetns(t, 'ea')
    const b = makeNetns(t, 'eb')
    m.dp.healer.start()
    // The one that goes away is registered alone first, so it is the one chosen.
    await registerEndpoint(m.registry, { name: 'fw-a', netns: a.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], ...(how === 'expired' ? { ttlMs: 1500 } : {}) })
    const conn = await m.dp.handler.request(kernelRequest('h2', client.path, 'nsm0'), testContext())
    t.equal(conn.networkServiceEndpointName, 'fw-a')
    await registerEndpoint(m.registry, { name: 'fw-b', netns: b.path, labels: { app: 'firewall' }, pools: ['172.16.9.0/24'] })
    const states: number[] = []
    m.table.subscribe((e) => {
      if (e.type === 'update' && e.entry.connection.id === 'h2') states.push(e.entry.connection.state)
    })
    if (how === 'unregistered') await m.registry.unregisterEndpoint('fw-a')
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && m.table.get('h2')?.connection.networkServiceEndpointName !== 'fw-b') await new Promise((r) => setTimeout(r, 50))
    await m.dp.healer.idle()
    const healed = m.table.get('h2')?.connection
    t.equal(healed?.networkServiceEndpointName, 'fw-b')
    t.same(states, [State.DOWN, State.UP], 'DOWN then UP')
    t.same(healed?.context?.ipContext?.srcIpAddrs, ['172.16.9.1/32'], "an address from the new endpoint's pool (the old one is not in it)")
    t.same(linkNames(a.name), ['lo'], 'the old endpoint side is gone')
    t.ok(linkNames(b.name).length === 2, 'the new endpoint side exists')
    t.same(nonLocal(client.name, 'nsm0'), ['172.16.9.1/32'], 'same interface name, new address, old one removed')
    t.match(ping(client.name, '172.16.9.0'), /2 received/)
    await m.dp.handler.close(healed ?? conn, testContext())
  })
}
