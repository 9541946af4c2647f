// Debian's reference main plugins (bridge, ptp, macvlan) delegating to nsm-ipam in real namespaces:
// the address nsm-ipam reserves ends up on the container interface, traffic flows between the test's
// own namespaces, CHECK passes, and DEL releases the reservation and removes the interface.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { execPlugin, stageNsmIpam } from '../conformance/exec'
import { ip, linkAddresses, linkNames, makeNetns, sh, uniqueName, type TestNetns } from '../lib/netns'

const binDir = await stageNsmIpam(t)
const cniPath = `${binDir}:/usr/lib/cni`

interface Net {
  conf: Record<string, unknown>
  dataDir: string
}

function network(t: Test, main: Record<string, unknown>, ipam: Record<string, unknown>): Net {
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-interop-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const name = `interop-${uniqueName('n')}`
  return { dataDir, conf: { cniVersion: '1.0.0', name, ...main, ipam: { type: 'nsm-ipam', dataDir, ...ipam } } }
}

function reservationCount(n: Net): number {
  try {
    return readdirSync(join(n.dataDir, n.conf.name as string, 'reservations')).length
  } catch {
    return 0
  }
}

async function attach(t: Test, plugin: string, n: Net, ns: TestNetns, id: string): Promise<Record<string, unknown>> {
  const out = await execPlugin(`/usr/lib/cni/${plugin}`, { command: 'ADD', containerId: id, netns: ns.path, ifname: 'eth0', path: cniPath, stdin: n.conf })
  t.equal(out.exitCode, 0, `${plugin} ADD ${id}: ${out.stdout.slice(0, 300)}`)
  t.teardown(() => execPlugin(`/usr/lib/cni/${plugin}`, { command: 'DEL', containerId: id, netns: ns.path, ifname: 'eth0', path: cniPath, stdin: n.conf }).then(() => undefined))
  return out.json ?? {}
}

async function detach(t: Test, plugin: string, n: Net, ns: TestNetns, id: string, prevResult: unknown): Promise<void> {
  const check = await execPlugin(`/usr/lib/cni/${plugin}`, { command: 'CHECK', containerId: id, netns: ns.path, ifname: 'eth0', path: cniPath, stdin: { ...n.conf, prevResult } })
  t.equal(check.exitCode, 0, `${plugin} CHECK ${id} (delegates to nsm-ipam CHECK): ${check.stdout}`)
  const del = await execPlugin(`/usr/lib/cni/${plugin}`, { command: 'DEL', containerId: id, netns: ns.path, ifname: 'eth0', path: cniPath, stdin: { ...n.conf, prevResult } })
  t.equal(del.exitCode, 0, `${plugin} DEL ${id}: ${del.stdout}`)
  t.notOk(linkNames(ns.name).includes('eth0'), `eth0 gone from ${ns.name}`)
}

const addressOf = (r: Record<string, unknown>, family: 4 | 6): string =>
  ((r.ips as Array<{ address: string }>).find((i) => i.address.includes(':') === (family === 6)) as { address: string }).address

function ping(from: TestNetns, to: string): void {
  // Three tries a fifth of a second apart: exit 0 on the first reply (a loaded machine may drop one).
  sh('ip', ['netns', 'exec', from.name, 'ping', '-c', '3', '-i', '0.2', '-W', '3', to])
}

t.test('bridge + nsm-ipam (dual-stack): two containers reach each other', async (t) => {
  const bridge = uniqueName('br')
  t.teardown(() => {
    if (linkNames().includes(bridge)) ip(undefined, 'link', 'del', bridge)
  })
  const n = network(t, { type: 'bridge', bridge, isGateway: true }, { ranges: [[{ subnet: '10.214.10.0/24' }], [{ subnet: 'fd14:10::/64' }]] })
  const a = makeNetns(t)
  const b = makeNetns(t)
  const ra = await attach(t, 'bridge', n, a, 'bridge-a')
  const rb = await attach(t, 'bridge', n, b, 'bridge-b')
  t.equal(reservationCount(n), 4, 'two addresses per container')
  t.same(linkAddresses(a.name, 'eth0').filter((x) => !x.startsWith('fe80')), [addressOf(ra, 4), addressOf(ra, 6)], 'nsm-ipam addresses on eth0')
  t.ok(linkAddresses(undefined, bridge).includes('10.214.10.1/24'), 'the gateway from nsm-ipam is on the bridge')
  ping(a, addressOf(rb, 4).split('/')[0] as string)
  t.pass('IPv4 ping a -> b over the bridge')
  await detach(t, 'bridge', n, a, 'bridge-a', ra)
  await detach(t, 'bridge', n, b, 'bridge-b', rb)
  t.equal(reservationCount(n), 0, 'DEL released every reservation')
})

t.test('ptp + nsm-ipam: host route to the container, gateway reachable', async (t) => {
  const n = network(t, { type: 'ptp' }, { subnet: '10.214.20.0/24', routes: [{ dst: '0.0.0.0/0' }] })
  const a = makeNetns(t)
  const ra = await attach(t, 'ptp', n, a, 'ptp-a')
  const addr = addressOf(ra, 4)
  t.same(linkAddresses(a.name, 'eth0').filter((x) => !x.startsWith('fe80')), [addr], `eth0 has ${addr}`)
  t.match(ip(a.name, 'route', 'show', 'default'), /default via 10\.214\.20\.1 dev eth0/, 'the route from nsm-ipam is installed')
  ping(a, '10.214.20.1')
  t.pass('the container reaches its ptp gateway')
  t.match(ip(undefined, 'route', 'show', `${addr.split('/')[0]}/32`), /dev veth/, 'host route to the container')
  await detach(t, 'ptp', n, a, 'ptp-a', ra)
  t.equal(reservationCount(n), 0)
  t.equal(ip(undefined, 'route', 'show', `${addr.split('/')[0]}/32`).trim(), '', 'host route removed')
})

t.test('macvlan + nsm-ipam: two containers on one parent reach each other', async (t) => {
  // The parent is a veth of the test's own (the kernel here has no dummy links).
  const parent = uniqueName('mv')
  const peer = uniqueName('mp')
  ip(undefined, 'link', 'add', parent, 'type', 'veth', 'peer', 'name', peer)
  t.teardown(() => {
    if (linkNames().includes(parent)) ip(undefined, 'link', 'del', parent)
  })
  ip(undefined, 'link', 'set', parent, 'up')
  ip(undefined, 'link', 'set', peer, 'up')
  const n = network(t, { type: 'macvlan', master: parent, mode: 'bridge' }, { ranges: [[{ subnet: '10.214.30.0/24', rangeStart: '10.214.30.100', rangeEnd: '10.214.30.110' }]] })
  const a = makeNetns(t)
  const b = makeNetns(t)
  const ra = await attach(t, 'macvlan', n, a, 'macvlan-a')
  const rb = await attach(t, 'macvlan', n, b, 'macvlan-b')
  t.same([addressOf(ra, 4), addressOf(rb, 4)], ['10.214.30.100/24', '10.214.30.101/24'], 'addresses from rangeStart on')
  ping(b, '10.214.30.100')
  t.pass('IPv4 ping b -> a between macvlans of one parent')
  await detach(t, 'macvlan', n, a, 'macvlan-a', ra)
  await detach(t, 'macvlan', n, b, 'macvlan-b', rb)
  t.equal(reservationCount(n), 0)
})
