// CHECK through the KERNEL mechanism over a real kernel (Dataplane.check, what CNI CHECK calls): an intact
// connection has no problem; a route deleted on the client side or on the endpoint side, a link set down
// (and up again: the kernel flushes the routes through it), a missing endpoint-side link, a removed
// address, a vanished netns are each reported on the side where they happened. A refresh repairs what
// CHECK finds, and a restarted agent's reconciliation (the same intactness test) rebuilds a broken
// datapath, keeps an intact one, and reads a record journaled in the version-1 format.
import t from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import { silentLogger } from '../../agent/server/log'
import type { CheckProblem } from '../../proto/gen/nsmcni/nsmcni'
import { ip, linkNames, makeNetns, removeNetns, type TestNetns } from '../lib/netns'
import { kernelRequest, registerEndpoint, seedServices, serviceMessage, testContext } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

interface Fixture {
  registry: Registry
  table: ConnectionTable
  dp: Dataplane
  client: TestNetns
  fw: TestNetns
  /** The endpoint-side interface of connection `c1`. */
  epIf: string
  check(): Promise<CheckProblem[]>
  refresh(): Promise<void>
}

/** A dataplane over `table` (a new one: an agent restart over the same journal). */
function dataplane(t: Teardown, registry: Registry, table: ConnectionTable): Dataplane {
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: silentLogger })
  t.teardown(() => dp.stop())
  return dp
}

/** Connection c1: client `nsm0` ↔ firewall, IPv4 and IPv6 pairs, the firewall offering 10.60.0.0/16. */
async function fixture(t: Teardown): Promise<Fixture> {
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: ['/var/run/netns/*'], defaultTtlMs: 60_000 })
  t.teardown(() => registry.close())
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const table = ConnectionTable.inMemory()
  const dp = dataplane(t, registry, table)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29', 'fd00:1::/125'], routes: ['10.60.0.0/16'] })
  await dp.handler.request(kernelRequest('c1', client.path, 'nsm0', { app: 'web' }), testContext())
  const epIf = linkNames(fw.name).find((n) => n.startsWith('nsm-'))
  if (epIf === undefined) throw new Error('no endpoint-side link')
  return {
    registry,
    table,
    dp,
    client,
    fw,
    epIf,
    check: () => {
      const entry = table.get('c1')
      if (entry === undefined) throw new Error('c1 is not in the table')
      return dp.check(entry)
    },
    refresh: async () => {
      await dp.handler.request(kernelRequest('c1', client.path, 'nsm0', { app: 'web' }), testContext())
    },
  }
}

const found = (problems: CheckProblem[], code: string, message: RegExp): boolean => problems.some((p) => p.code === code && message.test(p.message) && p.connectionId === 'c1')

t.test('an intact connection has no problem, also when checked concurrently (one dump per socket at a time)', async (t) => {
  const f = await fixture(t)
  t.same(await f.check(), [])
  t.same(await Promise.all([f.check(), f.check(), f.check()]), [[], [], []])
})

t.test('a route deleted on the client side is found, and a refresh puts it back', async (t) => {
  const f = await fixture(t)
  ip(f.client.name, 'route', 'del', '10.60.0.0/16')
  const problems = await f.check()
  t.equal(problems.length, 1, JSON.stringify(problems))
  t.ok(found(problems, 'route-missing', /^client interface nsm0 in \/var\/run\/netns\/\S+: route 10\.60\.0\.0\/16 via 172\.16\.1\.0 is missing$/), 'names side, interface, netns, route')
  await f.refresh()
  t.same(await f.check(), [], 'the refresh rebuilt the broken datapath')
  t.match(ip(f.client.name, 'route', 'show', '10.60.0.0/16'), /via 172\.16\.1\.0 dev nsm0/)
})

t.test('routes deleted on the endpoint side are found (IPv4 and IPv6)', async (t) => {
  const f = await fixture(t)
  ip(f.fw.name, 'route', 'del', '172.16.1.1/32', 'dev', f.epIf)
  ip(f.fw.name, '-6', 'route', 'del', 'fd00:1::1/128', 'dev', f.epIf)
  const problems = await f.check()
  t.equal(problems.length, 2, JSON.stringify(problems))
  t.ok(found(problems, 'route-missing', new RegExp(`^endpoint interface ${f.epIf} in ${f.fw.path}: route 172\\.16\\.1\\.1/32 is missing$`)))
  t.ok(found(problems, 'route-missing', /^endpoint .*route fd00:1::1\/128 is missing$/))
})

t.test('a link set down is found; up again, the routes the kernel flushed are found missing', async (t) => {
  const f = await fixture(t)
  ip(f.client.name, 'link', 'set', 'nsm0', 'down')
  t.ok(found(await f.check(), 'link-down', /^client interface nsm0 .* is down$/))
  ip(f.client.name, 'link', 'set', 'nsm0', 'up')
  const problems = await f.check()
  t.notOk(problems.some((p) => p.code === 'link-down'), 'up again')
  t.ok(found(problems, 'route-missing', /^client .*route 172\.16\.1\.0\/32 is missing$/), 'the host route to the endpoint was flushed')
  t.ok(found(problems, 'route-missing', /^client .*route 10\.60\.0\.0\/16 via 172\.16\.1\.0 is missing$/), 'the offered route was flushed')
  t.ok(problems.every((p) => p.message.startsWith('client ')), 'nothing on the endpoint side')
  await f.refresh()
  t.same(await f.check(), [], 'a refresh repairs it')
})

t.test('a missing endpoint-side link is found (the client end still exists)', async (t) => {
  const f = await fixture(t)
  const elsewhere = makeNetns(t, 'ot')
  ip(f.fw.name, 'link', 'set', f.epIf, 'netns', elsewhere.name)
  const problems = await f.check()
  t.same(problems, [{ code: 'link-missing', message: `endpoint interface ${f.epIf} in ${f.fw.path} is missing`, connectionId: 'c1' }])
  ip(f.fw.name, 'link', 'show', 'dev', 'lo') // the endpoint netns itself is there
  ip(elsewhere.name, 'link', 'del', f.epIf) // takes the client end with it
  const both = await f.check()
  t.ok(found(both, 'link-missing', /^client interface nsm0 .* is missing$/) && found(both, 'link-missing', /^endpoint /), 'both ends missing')
})

t.test('a removed address is found, on either side', async (t) => {
  const f = await fixture(t)
  ip(f.client.name, '-6', 'addr', 'del', 'fd00:1::1/128', 'dev', 'nsm0')
  ip(f.fw.name, 'addr', 'del', '172.16.1.0/32', 'dev', f.epIf)
  const problems = await f.check()
  t.ok(found(problems, 'address-missing', /^client interface nsm0 .* lacks address fd00:1::1\/128$/))
  t.ok(found(problems, 'address-missing', new RegExp(`^endpoint interface ${f.epIf} .* lacks address 172\\.16\\.1\\.0/32$`)))
  t.notOk(problems.some((p) => p.code === 'address-missing' && /172\.16\.1\.1\/32|fd00:1::\/128/.test(p.message)), 'the addresses still there are not reported')
})

t.test('a vanished namespace is found', async (t) => {
  const f = await fixture(t)
  removeNetns(f.fw.name)
  const problems = await f.check()
  t.ok(found(problems, 'netns-missing', /^endpoint netns \/var\/run\/netns\/\S+: .*does not exist/))
})

t.test('restart: reconciliation rebuilds a broken datapath and keeps an intact one', async (t) => {
  const f = await fixture(t)
  await f.dp.handler.request(kernelRequest('c2', f.client.path, 'nsm1', { app: 'web' }), testContext())
  await f.dp.stop()
  ip(f.fw.name, 'route', 'del', '172.16.1.1/32', 'dev', f.epIf) // c1 breaks while the agent is down
  const restarted = dataplane(t, f.registry, f.table)
  t.same(await restarted.healer.reconcile(), { kept: 1, rebuilt: 1, closed: 0, swept: 0 })
  for (const id of ['c1', 'c2']) {
    const entry = f.table.get(id)
    t.ok(entry !== undefined && (await restarted.check(entry)).length === 0, `${id} is intact after reconciliation`)
  }
})

t.test('restart: a record journaled in the version-1 format is read, kept, checked and closed', async (t) => {
  const f = await fixture(t)
  const entry = f.table.get('c1')
  const rec = f.dp.records.record('c1')
  if (entry === undefined || rec === undefined || rec.mechanism.type !== 'KERNEL') throw new Error('no record')
  const v1 = {
    version: 1,
    connectionId: rec.connectionId,
    service: rec.service,
    endpointName: rec.endpointName,
    clientNetns: rec.clientNetns,
    clientIfname: rec.clientIfname,
    endpointNetns: rec.mechanism.endpointNetns,
    endpointIfname: rec.mechanism.endpointIfname,
    src: rec.ipContext.src,
    dst: rec.ipContext.dst,
    srcRoutes: rec.ipContext.srcRoutes,
    dstRoutes: rec.ipContext.dstRoutes,
    mtu: rec.mtu,
    p2p: rec.p2p,
    clientLabels: rec.clientLabels,
  }
  await f.dp.stop()
  const journal = ConnectionTable.inMemory()
  await journal.upsert(entry.connection, entry.attachment, v1)
  const restarted = dataplane(t, f.registry, journal)
  t.same(restarted.records.record('c1'), rec, 'migrated to the current version')
  t.same(await restarted.healer.reconcile(), { kept: 1, rebuilt: 0, closed: 0, swept: 0 })
  const reread = journal.get('c1')
  t.ok(reread !== undefined)
  if (reread !== undefined) t.same(await restarted.check(reread), [])
  await restarted.handler.close(entry.connection, testContext())
  t.same(linkNames(f.client.name), ['lo'])
  t.same(linkNames(f.fw.name), ['lo'])
  t.same(restarted.pool.allRecords(), [], 'the allocation was rebuilt from the v1 record, and released')
})
