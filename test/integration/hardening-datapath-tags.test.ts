// Hardening: the agent deletes only links it made. Every link of a KERNEL datapath carries its connection's
// tag (IFLA_IFALIAS); Close, removal, the batched deletions of the LinkReaper and restart reconciliation
// delete a link only when its tag is the connection's. A device of the same name that is not ours (an
// administrator's bridge, an untagged veth) is left alone.
import t from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import { linkTag } from '../../agent/mechanisms/index'
import type { Logger } from '../../agent/server/log'
import { ip, linkNames, makeNetns, showLink, type TestNetns } from '../lib/netns'
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
  warnings: string[]
}

function recordingLogger(warnings: string[]): Logger {
  const noop = (): void => undefined
  return { debug: noop, info: noop, warn: (msg: string) => warnings.push(msg), error: (msg: string) => warnings.push(msg) } as unknown as Logger
}

async function fixture(t: Teardown, table = ConnectionTable.inMemory()): Promise<Fixture> {
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: ['/var/run/netns/*'], defaultTtlMs: 60_000 })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const warnings: string[] = []
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: recordingLogger(warnings) })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'] })
  return { registry, table, dp, client, fw, warnings }
}

const alias = (ns: string, name: string): string | undefined => (showLink(ns, name) as { ifalias?: string }).ifalias

t.test('both ends of a connection carry its tag', async (t) => {
  const f = await fixture(t)
  await f.dp.handler.request(kernelRequest('tag-1', f.client.path, 'nsm0'), testContext())
  const epIf = linkNames(f.fw.name).find((n) => n.startsWith('nsm-')) ?? ''
  t.equal(alias(f.client.name, 'nsm0'), linkTag('tag-1'), 'client end tagged')
  t.equal(alias(f.fw.name, epIf), linkTag('tag-1'), 'endpoint end tagged')
  t.not(linkTag('tag-1'), linkTag('tag-2'))
  t.ok(Buffer.byteLength(linkTag('x'.repeat(253))) <= 255, 'a tag fits IFALIASZ for the longest id')
})

t.test('after the endpoint side vanished, Close leaves a bridge named like the client interface alone', async (t) => {
  const f = await fixture(t)
  const conn = await f.dp.handler.request(kernelRequest('gone-1', f.client.path, 'nsm0'), testContext())
  ip(undefined, 'netns', 'del', f.fw.name) // the endpoint's netns goes, the veth pair with it (asynchronously)
  f.dp.sessions.sweep() // as healing's poll does: the agent's socket no longer pins the namespace
  const deadline = Date.now() + 5000
  while (linkNames(f.client.name).includes('nsm0') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  t.notOk(linkNames(f.client.name).includes('nsm0'), 'the pair is gone')
  ip(f.client.name, 'link', 'add', 'nsm0', 'type', 'bridge')
  await f.dp.handler.close(conn, testContext())
  t.ok(linkNames(f.client.name).includes('nsm0'), 'the unrelated bridge survives Close')
  t.equal(showLink(f.client.name, 'nsm0').linkinfo?.info_kind, 'bridge')
  t.equal(f.table.size, 0, 'the connection is closed all the same')
  t.ok(f.warnings.some((w) => /not ours|not this connection/.test(w)), `the foreign link was logged (${f.warnings.join('; ')})`)
})

t.test('a record pointing at an untagged veth: neither Close nor reconcile deletes it', async (t) => {
  const f = await fixture(t)
  const conn = await f.dp.handler.request(kernelRequest('foreign-1', f.client.path, 'nsm0'), testContext())
  const epIf = linkNames(f.fw.name).find((n) => n.startsWith('nsm-')) ?? ''
  // Someone else's veth of the same names replaces ours.
  ip(f.client.name, 'link', 'del', 'nsm0')
  ip(f.client.name, 'link', 'add', 'nsm0', 'type', 'veth', 'peer', 'name', epIf, 'netns', f.fw.name)
  ip(f.client.name, 'link', 'set', 'nsm0', 'up')
  // A restarted agent's reconciliation over the same table: broken → rebuild, which must not remove it.
  const dp2 = createDataplane({ registry: f.registry, table: f.table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: recordingLogger(f.warnings) })
  t.teardown(() => dp2.stop())
  const entry = f.table.get('foreign-1')
  if (entry === undefined) throw new Error('no entry')
  const problems = await f.dp.check(entry)
  t.ok(problems.some((p) => p.code === 'link-foreign'), `CHECK reports the foreign link (${problems.map((p) => p.code).join(', ')})`)
  await dp2.healer.reconcile()
  t.ok(linkNames(f.client.name).includes('nsm0'), 'reconcile left the untagged veth in the client')
  t.ok(linkNames(f.fw.name).includes(epIf), 'and its peer in the endpoint')
  t.equal(alias(f.client.name, 'nsm0'), undefined, 'still untagged: not adopted')
  await dp2.handler.close(conn, testContext())
  t.ok(linkNames(f.client.name).includes('nsm0'), 'Close left the untagged veth in the client')
  t.ok(linkNames(f.fw.name).includes(epIf), 'and its peer')
  t.equal(f.table.size, 0)
})

t.test('batched closes (LinkReaper groups) delete our links only', async (t) => {
  const f = await fixture(t)
  const conns = []
  for (let i = 0; i < 4; i++) conns.push(await f.dp.handler.request(kernelRequest(`batch-${i}`, f.client.path, `nsm${i}`), testContext()))
  const epIfs = linkNames(f.fw.name).filter((n) => n.startsWith('nsm-'))
  t.equal(epIfs.length, 4)
  // Connection 3's pair is replaced by foreign devices of the same names on both sides.
  const ep3 = epIfs.find((n) => {
    const a = alias(f.fw.name, n)
    return a === linkTag('batch-3')
  }) as string
  ip(f.fw.name, 'link', 'del', ep3)
  ip(f.fw.name, 'link', 'add', ep3, 'type', 'bridge')
  ip(f.client.name, 'link', 'add', 'nsm3', 'type', 'bridge')
  await Promise.all(conns.map((c) => f.dp.handler.close(c, testContext())))
  t.same(linkNames(f.fw.name).sort(), [ep3, 'lo'].sort(), 'only the foreign bridge is left in the endpoint')
  t.same(linkNames(f.client.name).sort(), ['lo', 'nsm3'], 'only the foreign bridge is left in the client')
  t.equal(f.table.size, 0)
})

t.test('restart over a datapath built before links were tagged: an exact untagged match is adopted, then closed', async (t) => {
  const f = await fixture(t)
  const conn = await f.dp.handler.request(kernelRequest('legacy-1', f.client.path, 'nsm0'), testContext())
  const epIf = linkNames(f.fw.name).find((n) => n.startsWith('nsm-')) ?? ''
  ip(f.client.name, 'link', 'set', 'dev', 'nsm0', 'alias', '') // as an older agent left them: no tag
  ip(f.fw.name, 'link', 'set', 'dev', epIf, 'alias', '')
  t.equal(alias(f.client.name, 'nsm0'), undefined, 'untagged')
  const dp2 = createDataplane({ registry: f.registry, table: f.table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: recordingLogger(f.warnings) })
  t.teardown(() => dp2.stop())
  t.match(await dp2.healer.reconcile(), { kept: 1, rebuilt: 0 }, 'kept as intact')
  t.equal(alias(f.client.name, 'nsm0'), linkTag('legacy-1'), 'client end adopted')
  t.equal(alias(f.fw.name, epIf), linkTag('legacy-1'), 'endpoint end adopted')
  await dp2.handler.close(conn, testContext())
  t.same(linkNames(f.client.name), ['lo'])
  t.same(linkNames(f.fw.name), ['lo'])
})
