// The kernel layer (pkg/netlink) against the real kernel, each operation on its own, in namespaces
// this test makes. Assertions read the kernel back through `ip -j` (an independent reader), not
// through our own code.
import t from 'tap'
import {
  NetlinkSessions,
  addAddress,
  addRoute,
  createVeth,
  createVxlan,
  delAddress,
  delRoute,
  deleteLink,
  getLink,
  listAddresses,
  listLinks,
  listRoutes,
  moveLink,
  readSysctl,
  renameLink,
  setLink,
  writeSysctl,
} from '../../pkg/netlink'
import { ip, linkAddresses, linkNames, makeNetns, sh, showLink, uniqueName } from '../lib/netns'

const sessions = new NetlinkSessions()
t.teardown(() => sessions.closeAll())
// Cached sockets pin their namespace: close those of namespaces each subtest removed.
t.afterEach(() => {
  sessions.sweep()
})


t.test('veth pair created with each end directly in its namespace, with MTU and MAC', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  await createVeth(sessions, { name: 'va', netns: a.path, mtu: 1400, mac: '02:00:00:00:00:0a', peer: { name: 'vb', netns: b.path, mtu: 1400 } })
  const la = showLink(a.name, 'va')
  t.equal(la.linkinfo?.info_kind, 'veth')
  t.equal(la.mtu, 1400)
  t.equal(la.address, '02:00:00:00:00:0a')
  t.equal(showLink(b.name, 'vb').mtu, 1400)
  t.notOk(linkNames().includes('va'), 'nothing in the root namespace')
  const seen = await getLink(sessions.forNetns(a.path), 'va')
  t.equal(seen?.kind, 'veth')
  t.equal(seen?.up, false)
  t.ok((await listLinks(sessions.forNetns(b.path))).some((l) => l.name === 'vb'))
  t.equal(await getLink(sessions.forNetns(a.path), 'nope0'), undefined)
  await deleteLink(sessions.forNetns(a.path), 'va')
  t.notOk(linkNames(b.name).includes('vb'), 'deleting one end removes the peer')
  t.equal(await deleteLink(sessions.forNetns(a.path), 'va', { missingOk: true }), false, 'idempotent delete')
})

t.test('move, rename, up/down, MTU, MAC', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const ha = sessions.forNetns(a.path)
  const hb = sessions.forNetns(b.path)
  await createVeth(sessions, { name: 'm1', peer: { name: 'm2' } }, a.path)
  await moveLink(sessions, 'm2', b.path, { via: a.path })
  t.ok(linkNames(b.name).includes('m2'), 'moved into b')
  t.notOk(linkNames(a.name).includes('m2'), 'gone from a')
  await moveLink(sessions, 'm2', a.path, { via: b.path, newName: 'm3' })
  t.ok(linkNames(a.name).includes('m3'), 'moved back and renamed in one step')
  await renameLink(ha, 'm3', 'm4')
  t.ok(linkNames(a.name).includes('m4'))
  await setLink(ha, 'm4', { up: true, mtu: 1280, mac: '02:00:00:00:00:44' })
  const l = showLink(a.name, 'm4')
  t.ok(l.flags.includes('UP'))
  t.equal(l.mtu, 1280)
  t.equal(l.address, '02:00:00:00:00:44')
  await setLink(ha, 'm4', { up: false })
  t.notOk(showLink(a.name, 'm4').flags.includes('UP'))
  t.equal(hb.netns, b.path)
})

t.test('IPv4 and IPv6 addresses: add, list, remove', async (t) => {
  const a = makeNetns(t)
  const h = sessions.forNetns(a.path)
  await createVeth(sessions, { name: 'ad0', peer: { name: 'ad1' } }, a.path)
  await setLink(h, 'ad0', { up: true })
  await setLink(h, 'ad1', { up: true })
  await addAddress(h, 'ad0', '10.99.0.1/24')
  await addAddress(h, 'ad0', '172.16.5.2/32', { peer: '172.16.5.1/32' })
  await addAddress(h, 'ad0', 'fd00:99::1/64', { noDad: true })
  const got = linkAddresses(a.name, 'ad0')
  t.ok(got.includes('10.99.0.1/24'))
  t.ok(got.includes('172.16.5.2/32'))
  t.ok(got.includes('fd00:99::1/64'))
  const v6 = (JSON.parse(ip(a.name, '-j', 'addr', 'show', 'dev', 'ad0')) as Array<{ addr_info: Array<{ local: string; tentative?: boolean }> }>)[0]?.addr_info.find((x) => x.local === 'fd00:99::1')
  t.notOk(v6?.tentative, 'no-DAD address is not tentative')
  const listed = (await listAddresses(h, 'ad0')).map((x) => x.cidr)
  t.ok(listed.includes('10.99.0.1/24') && listed.includes('fd00:99::1/64'), 'listAddresses sees both families')
  await t.rejects(addAddress(h, 'ad0', '10.99.0.1/24'), { code: 'EXISTS' })
  await delAddress(h, 'ad0', '10.99.0.1/24')
  await delAddress(h, 'ad0', 'fd00:99::1/64')
  t.notOk(linkAddresses(a.name, 'ad0').includes('10.99.0.1/24'))
  t.equal(await delAddress(h, 'ad0', '10.99.0.1/24', { missingOk: true }), false)
  await t.rejects(delAddress(h, 'ad0', '10.99.0.1/24'), { code: 'NOT_FOUND' })
  await t.rejects(addAddress(h, 'ad0', '10.99.0.300/24'), { code: 'INVALID_ARGUMENT' })
})

t.test('routes: gateway, scope, table, metric; list and remove', async (t) => {
  const a = makeNetns(t)
  const h = sessions.forNetns(a.path)
  await createVeth(sessions, { name: 'r0', peer: { name: 'r1' } }, a.path)
  await setLink(h, 'r0', { up: true })
  await setLink(h, 'r1', { up: true })
  await addAddress(h, 'r0', '10.98.0.1/24')
  await addAddress(h, 'r0', 'fd00:98::1/64', { noDad: true })
  await addRoute(h, { dst: '192.168.50.0/24', gateway: '10.98.0.254', dev: 'r0', metric: 300 })
  await addRoute(h, { dst: '192.168.51.0/24', dev: 'r0', scope: 'link', table: 1000 })
  await addRoute(h, { dst: 'fd00:77::/64', gateway: 'fd00:98::fe', dev: 'r0' })
  await addRoute(h, { dst: 'default', gateway: '10.98.0.254' })
  const main = JSON.parse(ip(a.name, '-j', 'route', 'show')) as Array<{ dst: string; gateway?: string; metric?: number }>
  t.match(main.find((r) => r.dst === '192.168.50.0/24'), { gateway: '10.98.0.254', metric: 300 })
  t.ok(main.some((r) => r.dst === 'default' && r.gateway === '10.98.0.254'))
  const tbl = JSON.parse(ip(a.name, '-j', 'route', 'show', 'table', '1000')) as Array<{ dst: string; scope: string }>
  t.match(tbl, [{ dst: '192.168.51.0/24', scope: 'link' }])
  const v6 = JSON.parse(ip(a.name, '-j', '-6', 'route', 'show')) as Array<{ dst: string; gateway?: string }>
  t.ok(v6.some((r) => r.dst === 'fd00:77::/64' && r.gateway === 'fd00:98::fe'))
  const listed = await listRoutes(h)
  t.match(listed.find((r) => r.dst === '192.168.50.0/24'), { gateway: '10.98.0.254', dev: 'r0', metric: 300, family: 4 })
  t.match((await listRoutes(h, { table: 1000 }))[0], { dst: '192.168.51.0/24', scope: 'link', table: 1000 })
  await t.rejects(addRoute(h, { dst: '192.168.50.0/24', gateway: '10.98.0.254', dev: 'r0', metric: 300 }), { code: 'EXISTS' })
  await delRoute(h, { dst: '192.168.50.0/24', gateway: '10.98.0.254', dev: 'r0', metric: 300 })
  await delRoute(h, { dst: '192.168.51.0/24', dev: 'r0', scope: 'link', table: 1000 })
  t.notOk((JSON.parse(ip(a.name, '-j', 'route', 'show')) as Array<{ dst: string }>).some((r) => r.dst === '192.168.50.0/24'))
  t.equal(ip(a.name, 'route', 'show', 'table', '1000').trim(), '')
  t.equal(await delRoute(h, { dst: '192.168.50.0/24', dev: 'r0' }, { missingOk: true }), false)
  await t.rejects(addRoute(h, { dst: '10.0.0.0/8' }), { code: 'INVALID_ARGUMENT' })
})

t.test('sysctl inside a namespace only changes that namespace', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  // New namespaces copy the root namespace's IPv4 settings (devconf_inherit_init_net=0), and other
  // tests (podman) may have turned forwarding on there: start both from 0, set through `sysctl`.
  for (const ns of [a, b]) ip(undefined, 'netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=0')
  writeSysctl(sessions, a.path, 'net.ipv4.ip_forward', '1')
  t.equal(ip(undefined, 'netns', 'exec', a.name, 'cat', '/proc/sys/net/ipv4/ip_forward').trim(), '1')
  t.equal(ip(undefined, 'netns', 'exec', b.name, 'cat', '/proc/sys/net/ipv4/ip_forward').trim(), '0')
  t.equal(readSysctl(sessions, a.path, 'net/ipv4/ip_forward'), '1')
  t.equal(readSysctl(sessions, b.path, 'net.ipv4.ip_forward'), '0')
  t.throws(() => writeSysctl(sessions, a.path, 'kernel.hostname', 'x'), { code: 'INVALID_ARGUMENT' })
  t.throws(() => writeSysctl(sessions, a.path, 'net.ipv4.../../x', '1'), { code: 'INVALID_ARGUMENT' })
})

t.test('VXLAN link with VNI, local and remote, placed in a namespace', async (t) => {
  const a = makeNetns(t)
  const h = sessions.forNetns(a.path)
  await createVeth(sessions, { name: 'u0', peer: { name: 'u1' } }, a.path)
  await addAddress(h, 'u0', '10.97.0.1/24')
  await createVxlan(sessions, { name: 'vx0', vni: 4242, local: '10.97.0.1', remote: '10.97.0.2', dev: 'u0', port: 4789, mtu: 1450 }, a.path)
  const l = showLink(a.name, 'vx0')
  t.equal(l.linkinfo?.info_kind, 'vxlan')
  t.match(l.linkinfo?.info_data, { id: 4242, remote: '10.97.0.2', local: '10.97.0.1', port: 4789 })
  t.equal(l.mtu, 1450)
  await t.rejects(createVxlan(sessions, { name: 'vx1', vni: 1 << 24 }, a.path), { code: 'INVALID_ARGUMENT' })
  t.notOk(linkNames(a.name).includes('vx1'))
})

t.test('a namespace deleted and re-created under the same name gets a fresh socket', async (t) => {
  const a = makeNetns(t)
  const first = sessions.forNetns(a.path)
  t.equal(sessions.forNetns(a.path), first, 'cached')
  ip(undefined, 'netns', 'del', a.name)
  t.same(sessions.sweep(), [a.path], 'sweep closes the socket of the vanished namespace, and only that one')
  t.ok(first.isClosed)
  ip(undefined, 'netns', 'add', a.name)
  const second = sessions.forNetns(a.path)
  t.not(second, first)
  await createVeth(sessions, { name: 'fresh0', peer: { name: 'fresh1' } }, a.path)
  t.ok(linkNames(a.name).includes('fresh0'), 'the new socket acts in the new namespace')
  t.equal(uniqueName('x').length <= 15, true)
})

t.test('LinkReaper deletes concurrent requests in batches, leaves other links alone', async (t) => {
  const { LinkReaper } = await import('../../pkg/netlink')
  const a = makeNetns(t)
  const b = makeNetns(t)
  const reaper = new LinkReaper(sessions)
  for (let i = 0; i < 12; i++) await createVeth(sessions, { name: `rp${i}`, netns: a.path, peer: { name: `rq${i}`, netns: b.path } })
  await createVeth(sessions, { name: 'keep0', peer: { name: 'keep1' } }, a.path)
  const results = await Promise.all([
    ...Array.from({ length: 12 }, (_, i) => reaper.delete(a.path, `rp${i}`)),
    reaper.delete(a.path, 'ghost0'),
    reaper.delete('/var/run/netns/t-no-such-ns', 'x0'),
  ])
  t.same(results, [...Array<boolean>(12).fill(true), false, false], 'twelve deleted, a missing link and a missing netns resolve false')
  t.same(linkNames(a.name).sort(), ['keep0', 'keep1', 'lo'], 'only the links asked for are gone')
  t.same(linkNames(b.name), ['lo'], 'their peers went with them')
})

t.test('a dump interrupted by concurrent changes is run again and comes back consistent', async (t) => {
  const { spawn } = await import('node:child_process')
  const a = makeNetns(t)
  await createVeth(sessions, { name: 'dm0', peer: { name: 'dm1' } }, a.path)
  // 2,000 addresses: the dump spans many reads, so a change between two reads flags it interrupted.
  sh('ip', ['-n', a.name, '-b', '-'], { input: Array.from({ length: 2000 }, (_, i) => `addr add 10.77.${i >> 8}.${i & 255}/32 dev dm0`).join('\n') })
  const churn = spawn('sh', ['-c', `while :; do ip -n ${a.name} addr add 192.0.2.1/32 dev dm1; ip -n ${a.name} addr del 192.0.2.1/32 dev dm1; sleep 0.02; done`], { stdio: 'ignore', detached: true })
  const stop = (): void => {
    try {
      process.kill(-(churn.pid as number), 'SIGKILL')
    } catch {
      // already gone
    }
  }
  t.teardown(stop)
  const h = sessions.forNetns(a.path)
  const before = h.dumpRetries
  let dumps = 0
  let inconsistent = 0
  while (h.dumpRetries === before && dumps < 400) {
    const got = (await listAddresses(h, 'dm0')).filter((x) => x.cidr.startsWith('10.77.'))
    if (got.length !== 2000 || new Set(got.map((x) => x.cidr)).size !== 2000) inconsistent++
    dumps++
  }
  stop()
  t.ok(h.dumpRetries > before, `the kernel flagged a dump interrupted and it was run again (${h.dumpRetries - before} retries in ${dumps} dumps)`)
  t.equal(inconsistent, 0, 'every dump returned exactly the 2,000 addresses')
})
