// The MEMIF mechanism's userspace forwarders (agent/mechanisms/memif/forwarder.ts) with real DPDK (Debian's
// dpdk-testpmd 22.11) and a real kernel, no mocks: the pairs a supervisor serves while nothing dies. Per pair:
// a memif server socket the forwarder serves, a veth whose agent-side end (in this process's netns, the
// agent's) carries the af_packet port and whose other end is in an "endpoint" netns with an address
// (test/lib/memif-forwarder.ts); the pod is a testpmd memif client in a "client" netns (test/lib/memif-peer.ts)
// answering ARP and ping (icmpecho) for any address.
//
// Covers: one pair end to end (ping and kernel counters, connected/disconnected, forwarding only while a
// client is connected), two pairs in one process with one detached while the other forwards, the pool (a new
// process when one is full, a process without pairs ends), and refused input (nothing started, nothing left).
// Forwarder and agent deaths, adoption and reconcile: memif-forwarder-recovery.test.ts.
//
// Every netns, link, process and file is removed at teardown, also on failure; forwarders are found by
// their DPDK file prefix, which names the test's run directory.
import t from 'tap'
import { existsSync, lstatSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { findForwarderProcesses, processStartTime } from '../../agent/mechanisms/memif/forwarder-identity'
import { forwarderFileNames, ifindex, kernelCounters, makeEndpoint, makeForwarders, makeRunDir, makeVeth, ping, POLL_MS, waitFor, type Endpoint } from '../lib/memif-forwarder'
import { sleep } from '../lib/wait'
import { startMemifPeer } from '../lib/memif-peer'
import { makeNetns, uniqueName } from '../lib/netns'

t.test('one pair: a pod client answers pings from the endpoint; forwarding only while it is connected', async (t) => {
  const dir = makeRunDir(t)
  const ep = makeEndpoint(t)
  const clientNs = makeNetns(t, 'cl')
  const fw = makeForwarders(t, dir, { outputLimitBytes: 1024 })
  await fw.start()
  const events: string[] = []
  fw.on('connected', (id: string) => events.push(`connected ${id}`))
  fw.on('disconnected', (id: string) => events.push(`disconnected ${id}`))
  fw.on('restarted', (ids: string[]) => events.push(`restarted ${ids.join(',')}`))
  const socket = join(dir, 'sock', 'c1.sock')
  const port = { id: 'c1', socket, iface: ep.iface }

  await fw.attach(port)
  t.ok(lstatSync(socket).isSocket(), 'the socket is served once attach resolves')
  t.equal(lstatSync(socket).mode & 0o777, 0o666, 'a non-root client may connect')
  const [proc] = fw.processes()
  t.equal(fw.processes().length, 1)
  t.same(fw.state('c1'), { served: true, connected: false, pid: proc?.pid })
  t.same(fw.ports(), [port])
  await sleep(4 * POLL_MS)
  t.equal(fw.processes()[0]?.forwarding, false, 'no client: forwarding stays stopped')
  await fw.attach(port)
  t.equal(fw.processes()[0]?.pid, proc?.pid, 'attach again: nothing changes')
  await t.rejects(fw.attach({ ...port, iface: makeVeth(t) }), /c1 is served on socket/, 'the same id with another iface is refused')

  const client = await startMemifPeer(t, { netns: clientNs.name, socket, mode: 'icmpecho' })
  await waitFor('connected and forwarding', () => fw.state('c1')?.connected === true && fw.processes()[0]?.forwarding === true)
  const before = kernelCounters(ep)
  const p = await ping(ep, 5)
  t.equal(p.received, 5, `pings are answered through the forwarder (${p.received}/${p.sent})`)
  const after = kernelCounters(ep)
  t.ok(after.tx - before.tx >= 5 && after.rx - before.rx >= 5, `the endpoint veth counts them (tx +${after.tx - before.tx}, rx +${after.rx - before.rx})`)
  const stats = await fw.stats('c1')
  t.ok(stats !== undefined && stats.kernel.rxPackets >= 5 && stats.memif.txPackets >= 5 && stats.memif.rxPackets >= 5 && stats.kernel.txPackets >= 5, 'forwarder counters on both ports')
  t.ok((await client.stats()).rxPackets >= 5, 'the client received them')
  // Link polls every 100 ms write ~350 B each: ~7 kB in 2 s unless the output file is truncated.
  await sleep(2000)
  const out = forwarderFileNames(dir).find((f) => f.endsWith('.out')) ?? ''
  t.ok(statSync(join(dir, out)).size < 3000, `the output file is kept short (${statSync(join(dir, out)).size} B)`)
  t.ok(((await fw.stats('c1'))?.memif.rxPackets ?? 0) >= 5, 'the prompt still answers after truncation')

  await client.stop()
  await waitFor('disconnected and stopped', () => fw.state('c1')?.connected === false && fw.processes()[0]?.forwarding === false)
  t.same(events, ['connected c1', 'disconnected c1'])

  await fw.detach('c1')
  await fw.detach('c1')
  t.notOk(existsSync(socket), 'the socket file is removed')
  t.same(fw.processes(), [], 'a process without pairs ends')
  await waitFor('the process to exit', () => processStartTime(proc?.pid ?? 0) === undefined, 4000)
  t.same(forwarderFileNames(dir), [], 'its files are removed')
})

t.test('two pairs in one process: one detached while the other keeps forwarding', async (t) => {
  const dir = makeRunDir(t)
  const [a, b] = [makeEndpoint(t), makeEndpoint(t)] as [Endpoint, Endpoint]
  const clientNs = makeNetns(t, 'cl')
  const fw = makeForwarders(t, dir)
  await fw.start()
  const sa = join(dir, 'sock', 'a.sock')
  const sb = join(dir, 'sock', 'b.sock')
  await fw.attach({ id: 'a', socket: sa, iface: a.iface })
  await fw.attach({ id: 'b', socket: sb, iface: b.iface })
  t.equal(fw.processes().length, 1)
  t.equal(fw.processes()[0]?.ports, 2)
  const ca = await startMemifPeer(t, { netns: clientNs.name, socket: sa })
  await startMemifPeer(t, { netns: clientNs.name, socket: sb })
  await waitFor('both connected', () => fw.state('a')?.connected === true && fw.state('b')?.connected === true)
  t.equal((await ping(a, 3)).received, 3, 'pair a forwards')
  t.equal((await ping(b, 3)).received, 3, 'pair b forwards')

  // A ping every 20 ms on b across the removal of a.
  const onB = ping(b, 100, 0.02)
  await sleep(500)
  await fw.detach('a')
  const pb = await onB
  t.ok(pb.received === 100 && pb.sent === 100, `b kept forwarding across the detach of a, nothing lost (${pb.received}/${pb.sent})`)
  t.notOk(existsSync(sa), 'socket a removed')
  t.ok(lstatSync(sb).isSocket(), 'socket b still served')
  t.equal(fw.state('a'), undefined)
  t.same(fw.processes().map((p) => p.ports), [1])
  // (22.11's client may also crash when its server goes away while it polls: gone is down too.)
  await waitFor('client a link down', async () => ca.exited || !(await ca.linkUp().catch(() => false)))
  t.equal((await ping(a, 2, 0.2, 2)).received, 0, 'pair a no longer forwards')
})

t.test('pool: a new process when one is full; a process left without pairs ends', async (t) => {
  const dir = makeRunDir(t)
  const fw = makeForwarders(t, dir, { pairsPerProcess: 2 })
  await fw.start()
  const ports = [0, 1, 2].map((i) => ({ id: `p${i}`, socket: join(dir, 'sock', `p${i}.sock`), iface: makeVeth(t) }))
  for (const p of ports) await fw.attach(p)
  t.same(fw.processes().map((p) => p.ports), [2, 1])
  const second = fw.processes()[1]?.pid ?? 0
  await fw.detach('p2')
  await waitFor('the second process to exit', () => processStartTime(second) === undefined, 4000)
  t.same(fw.processes().map((p) => p.ports), [2])
  await fw.attach(ports[2] as (typeof ports)[0])
  t.same(fw.processes().map((p) => p.ports), [2, 1])
  t.same(fw.ports().map((p) => p.id).sort(), ['p0', 'p1', 'p2'])

  // DPDK's af_packet fanout group id is (pid ^ ifindex) & 0xffff, per netns: an interface whose id in the
  // first process equals the second process's group for p2 must go to the second process.
  const [a, b] = fw.processes().map((p) => p.pid) as [number, number]
  await fw.detach('p1')
  const clash = (a ^ b ^ ifindex(ports[2]?.iface ?? '')) & 0xffff
  const iface = makeVeth(t, clash)
  t.equal(ifindex(iface), clash)
  await fw.attach({ id: 'p3', socket: join(dir, 'sock', 'p3.sock'), iface })
  t.equal(fw.state('p3')?.pid, b, 'not into the first process, where its fanout group is the second one\'s')
  t.same(fw.processes().map((p) => p.ports), [1, 2])
})

t.test('bad input is refused and nothing is started or left behind', async (t) => {
  const dir = makeRunDir(t)
  const veth = makeVeth(t)
  const fw = makeForwarders(t, dir)
  await fw.start()
  await t.rejects(fw.attach({ id: 'x', socket: join(dir, 'sock', 'a,b.sock'), iface: veth }), { code: 'INVALID_ARGUMENT', message: /a,b\.sock/ }, 'a comma in the socket path')
  await t.rejects(fw.attach({ id: 'x', socket: join(dir, 'sock', 'a b.sock'), iface: veth }), { code: 'INVALID_ARGUMENT' }, 'a blank in the socket path')
  await t.rejects(fw.attach({ id: 'x', socket: 'rel.sock', iface: veth }), { code: 'INVALID_ARGUMENT' }, 'a relative socket path')
  await t.rejects(fw.attach({ id: 'x', socket: join(dir, 'sock', 'x.sock'), iface: 'eth0,iface=lo' }), { code: 'INVALID_ARGUMENT', message: /eth0,iface=lo/ }, 'devargs in the iface name')
  await t.rejects(fw.reconcile([{ id: 'x', socket: '/tmp/a b', iface: veth }]), { code: 'INVALID_ARGUMENT' }, 'reconcile checks before it changes anything')
  t.same(fw.processes(), [])
  t.same(forwarderFileNames(dir), [], 'no forwarder was started')
  t.equal(findForwarderProcesses(dir).size, 0)

  // Valid input that cannot be served: a process is started for it and ends again.
  const file = join(dir, 'sock', 'file.sock')
  writeFileSync(file, 'not a socket')
  await t.rejects(fw.attach({ id: 'y', socket: file, iface: veth }), { code: 'FAILED_PRECONDITION' }, 'a file that is not a socket is never removed')
  t.ok(existsSync(file))
  await t.rejects(fw.attach({ id: 'z', socket: join(dir, 'sock', 'z.sock'), iface: uniqueName('no') }), /af_packet/, 'an interface that does not exist')
  t.notOk(existsSync(join(dir, 'sock', 'z.sock')), 'its socket is removed again')
  t.same(fw.processes(), [])
  await waitFor('no forwarder process', () => findForwarderProcesses(dir).size === 0, 4000)
  t.same(forwarderFileNames(dir), [])
})
