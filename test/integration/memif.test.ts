// The MEMIF mechanism through dist/nsm and a real agent, with a real memif peer: DPDK testpmd in the client
// pod's netns as the memif client (test/lib/memif-peer.ts), the agent's forwarder (testpmd, memif server +
// af_packet) as the other side, and a kernel endpoint in its own netns.
// Covered: an ADD for `memif://` gives a socketPath in the pod's directory (named by K8S_POD_UID) and the
// client's address; frames the client sends arrive on the endpoint's interface, and pings from the
// endpoint are answered through the memif; CHECK; nsmctl shows MEMIF and the socket; DEL removes the
// socket, its directory, the veth and the forwarder (a forwarder without pairs quits). A client that starts
// before the forwarder serves its socket connects once it reopens its port. The forwarder SIGKILLed
// mid-traffic: restarted by the agent with its pairs, traffic back after the client reopens. A pod deleted
// while connected (and under traffic) leaves the other pod's connection forwarding. The agent SIGKILLed and
// restarted: the forwarder is adopted, traffic never stops. Bad input (a K8S_POD_UID that is no directory
// name, a netconf mechanism that conflicts) changes nothing.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { startAgent } from '../lib/agent'
import { linkNames, makeNetns, sh } from '../lib/netns'
import { startMemifPeer, type MemifPeer } from '../lib/memif-peer'
import { findForwarderProcesses } from '../../agent/mechanisms/memif/forwarder-identity'
import { resultOf, startMesh, WEB } from './nsm-fixture'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'

const ROOT = resolve(import.meta.dirname, '../..')
const memifRoot = mkdtempSync(join(tmpdir(), 'nsm-memif-'))
// Registered first: tap runs teardowns in order, so this runs after the agent's (the agent would restart a
// forwarder killed while it runs). Forwarders outlive an agent on purpose: any a failed test left are killed.
let runDir = ''
t.teardown(() => {
  if (runDir !== '') killForwarders(runDir)
  rmSync(memifRoot, { recursive: true, force: true })
})
/** SIGKILLs the forwarders of an agent's run directory and removes their DPDK runtime directories. */
function killForwarders(dir: string): void {
  for (const [pid, name] of findForwarderProcesses(dir)) {
    spawnSync('kill', ['-9', String(pid)])
    rmSync(`/var/run/dpdk/${name}`, { recursive: true, force: true })
  }
}
const agentArgs = ['--memif-root', memifRoot, '--memif-cpu', '1']
const mesh = await startMesh(t, { agentArgs })
runDir = join(mesh.agent.stateDir, 'memif-fwd')
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.31.6.0/24'] })

const forwarders = (): number[] => [...findForwarderProcesses(runDir).keys()]

function nsmctl(...args: string[]): string {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', mesh.socket, ...args], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`nsmctl ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

/** RX packets of the endpoint's interface (the veth end in its netns). */
function endpointRx(ifname: string): number {
  const out = JSON.parse(sh('ip', ['-n', ep.name, '-j', '-s', 'link', 'show', 'dev', ifname])) as Array<{ stats64: { rx: { packets: number } } }>
  return out[0]?.stats64.rx.packets ?? 0
}

/** The endpoint's interface of a connection: the one nsm-* link in the endpoint netns besides others seen before. */
function endpointIfnames(): string[] {
  return linkNames(ep.name).filter((n) => n.startsWith('nsm-'))
}

function ping(addr: string, count = 3): boolean {
  return spawnSync('ip', ['netns', 'exec', ep.name, 'ping', '-c', String(count), '-i', '0.2', '-W', '2', addr], { stdio: 'ignore' }).status === 0
}

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

interface MemifPod {
  netns: { name: string; path: string }
  id: string
  uid: string
  conf: Record<string, unknown>
  socket: string
  address: string
  del(): Promise<void>
}

let pods = 0
async function addPod(t: { teardown(fn: () => unknown): void }, opts: { uid?: string; conf?: Record<string, unknown> } = {}): Promise<MemifPod> {
  pods += 1
  const netns = makeNetns(t, 'mp')
  const id = `memif-${netns.name}`
  const uid = opts.uid ?? `0b0e7c2a-6b5a-4d1e-9f3e-${String(pods).padStart(12, '0')}`
  const conf = opts.conf ?? mesh.conf({ networkService: `memif://${WEB}` })
  const args = `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${netns.name};K8S_POD_UID=${uid}`
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: netns.path, ifname: 'net1', args, stdin: conf }))
  const del = async (): Promise<void> => {
    const out = await mesh.cni({ command: 'DEL', containerId: id, netns: netns.path, ifname: 'net1', args, stdin: conf })
    if (out.exitCode !== 0) throw new Error(`DEL: ${out.stdout}`)
  }
  t.teardown(del)
  const socket = String(res.interfaces?.[0]?.socketPath ?? '')
  const address = String(res.ips?.[0]?.address ?? '').split('/')[0] ?? ''
  return { netns, id, uid, conf, socket, address, del }
}

t.test('ADD gives a served socket in the pod directory; frames both ways; CHECK; nsmctl; DEL leaves nothing', async (t) => {
  const linksBefore = linkNames()
  const pod = await addPod(t)
  t.equal(pod.socket, join(memifRoot, pod.uid, 'net1.sock'), 'socketPath: <memif root>/<pod uid>/<ifname>.sock')
  t.ok(existsSync(pod.socket), 'the socket is served when ADD answers')
  t.match(pod.address, /^172\.31\.6\.\d+$/, "the client's address, for the pod's application")
  t.equal(forwarders().length, 1, 'one forwarder process')
  const [epIf] = endpointIfnames()
  t.ok(epIf, "the endpoint's interface")
  t.equal(linkNames(pod.netns.name).join(','), 'lo', 'nothing moved into the pod netns')

  const peer = await startMemifPeer(t, { socket: pod.socket, netns: pod.netns.name, mode: 'icmpecho', cpu: 0 })
  t.ok(ping(pod.address), 'the endpoint pings the client through the forwarder (ARP and ICMP answered by testpmd)')
  const rx0 = endpointRx(epIf ?? '')
  await peer.stopForwarding()
  await peer.setMode('txonly')
  const tx0 = (await peer.stats()).txPackets
  await peer.startForwarding()
  await new Promise((r) => setTimeout(r, 500))
  await peer.stopForwarding()
  const sent = (await peer.stats()).txPackets - tx0
  await until('the frames to arrive', () => endpointRx(epIf ?? '') - rx0 >= sent)
  const got = endpointRx(epIf ?? '') - rx0
  t.ok(sent > 1000, `the client sent ${sent} frames at full rate for 0.5 s`)
  t.ok(got >= sent, `the endpoint's interface received them all (${got} frames counted there)`)
  // TCP through af_packet needs real checksums from the endpoint's side (pkg/ethtool.ts).
  t.match(sh('ip', ['netns', 'exec', ep.name, 'ethtool', '-k', epIf ?? '']), /tx-checksumming: off/, "TX checksum offload is off on the endpoint's interface")

  const check = await mesh.cni({ command: 'CHECK', containerId: pod.id, netns: pod.netns.path, ifname: 'net1', args: `IgnoreUnknown=1;K8S_POD_UID=${pod.uid}`, stdin: { ...pod.conf, prevResult: { cniVersion: '1.1.0', interfaces: [{ name: 'net1', sandbox: pod.netns.path, socketPath: pod.socket }], ips: [{ address: `${pod.address}/32`, interface: 0 }] } } })
  t.equal(check.exitCode, 0, `CHECK passes: ${check.stdout}`)
  t.match(nsmctl('get', 'connections'), new RegExp(`MEMIF net1 ${pod.socket.replace(/[.]/g, '\\.')}`), 'nsmctl shows the mechanism and the socket')

  await peer.stop()
  await pod.del()
  t.notOk(existsSync(pod.socket), 'the socket is gone')
  t.notOk(existsSync(join(memifRoot, pod.uid)), "the pod's directory is gone")
  t.same(endpointIfnames(), [], "the endpoint's interface is gone")
  t.same(linkNames().filter((n) => !linksBefore.includes(n) && (n.startsWith('nsmm-') || n.startsWith('nsm.'))), [], "no link of ours left in the agent's netns")
  await until('the forwarder to quit', () => forwarders().length === 0)
  t.same(await mesh.connectionIds(), [])
  await pod.del() // idempotent
})

t.test('TCP through the memif: a pod whose DPDK app bridges its memif to a tap runs iperf3 against the endpoint', async (t) => {
  const pod = await addPod(t)
  const epIf = endpointIfnames()[0] ?? ''
  const epAddress = (JSON.parse(sh('ip', ['-n', ep.name, '-j', 'addr', 'show', 'dev', epIf])) as Array<{ addr_info: Array<{ family: string; local: string }> }>)[0]?.addr_info.find((a) => a.family === 'inet')?.local ?? ''
  // The pod's application: testpmd forwarding between its memif (port 0) and a tap (port 1) that the pod's
  // kernel uses with the connection's address, as a DPDK app handing traffic to the pod's stack would.
  const tap = 'podtap0'
  const peer = await startMemifPeer(t, { socket: pod.socket, netns: pod.netns.name, mode: 'io', cpu: 0, extraVdevs: [`net_tap0,iface=${tap}`] })
  sh('ip', ['-n', pod.netns.name, 'addr', 'add', `${pod.address}/32`, 'dev', tap])
  sh('ip', ['-n', pod.netns.name, 'link', 'set', tap, 'up'])
  sh('ip', ['-n', pod.netns.name, 'route', 'add', `${epAddress}/32`, 'dev', tap])
  // The tap is the pod's own sending side into DPDK: its checksums must be filled in by the kernel too.
  sh('ip', ['netns', 'exec', pod.netns.name, 'ethtool', '-K', tap, 'tx', 'off'])
  const server = spawn('ip', ['netns', 'exec', ep.name, 'iperf3', '-s', '-1', '-B', epAddress], { stdio: 'ignore' })
  t.teardown(() => {
    if (server.exitCode === null) server.kill('SIGKILL')
  })
  await new Promise((r) => setTimeout(r, 500))
  const client = spawnSync('ip', ['netns', 'exec', pod.netns.name, 'iperf3', '-c', epAddress, '-t', '2', '-J'], { encoding: 'utf8', timeout: 20_000 })
  t.equal(client.status, 0, `iperf3 over TCP through the memif: ${client.stderr}`)
  const bps = (JSON.parse(client.stdout || '{}') as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second ?? 0
  t.ok(bps > 0, `TCP carried data: ${(bps / 1e6).toFixed(0)} Mbit/s`)
  await peer.stop()
})

t.test('a client that started before its socket was served connects once it reopens its port', async (t) => {
  const netns = makeNetns(t, 'mp')
  const uid = 'early-client'
  const socket = join(memifRoot, uid, 'net1.sock')
  // The pod's directory is there before its containers start (kubelet makes a hostPath DirectoryOrCreate
  // volume); a DPDK memif client refuses a socket whose directory is missing.
  mkdirSync(join(memifRoot, uid))
  // Not forwarding until its link is up: testpmd's "stop" of a forwarding lcore polling a port that never came
  // up once went unanswered for 10 s under the full suite's load.
  const peer = await startMemifPeer(t, { socket, netns: netns.name, mode: 'icmpecho', cpu: 0, waitUp: false, start: false })
  t.notOk(await peer.linkUp(), 'no server yet: its port is down')
  const conf = mesh.conf({ networkService: `memif://${WEB}` })
  const args = `IgnoreUnknown=1;K8S_POD_UID=${uid}`
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: 'early', netns: netns.path, ifname: 'net1', args, stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: 'early', netns: netns.path, ifname: 'net1', args, stdin: conf }))
  t.equal(res.interfaces?.[0]?.socketPath, socket)
  await peer.reopen()
  await peer.waitLinkUp(5000).catch((err: unknown) => {
    t.comment(peer.output())
    throw err
  })
  await peer.startForwarding()
  t.ok(ping(String(res.ips?.[0]?.address ?? '').split('/')[0] ?? ''), 'traffic flows after the reopen')
  await peer.stop()
})

const restartLogs = (): number => mesh.agent.logs.filter((l) => l.msg === "memif forwarder restarted: its pods' DPDK clients reopen their ports").length

/** After the forwarder's restart: the client reopens its port, or (when it crashed with its server) is started again. */
async function reconnect(t: { teardown(fn: () => unknown): void }, peer: MemifPeer, pod: MemifPod): Promise<MemifPeer> {
  // A client whose server was killed while it received at full rate may also be left wedged (its reopened
  // port never comes up: seen here in about half the runs) or dead (SIGSEGV): DPDK 22.11's memif client.
  if (!peer.exited) {
    try {
      await peer.reopen()
      await peer.waitLinkUp(5000)
      return peer
    } catch {
      await peer.kill()
    }
  }
  const again = await startMemifPeer(t, { socket: pod.socket, netns: pod.netns.name, mode: 'icmpecho', cpu: 0, waitUp: false })
  try {
    await again.waitLinkUp(15_000)
  } catch (err) {
    // What the agent said about its forwarders, for the failure's record.
    process.stderr.write(`${JSON.stringify(mesh.agent.logs.filter((l) => /memif/.test(String(l.msg))).slice(-20))}\n${again.output().slice(-1500)}\n`)
    throw err
  }
  return again
}

t.test('the forwarder SIGKILLed mid-traffic is restarted with its pairs; a pod deleted while connected leaves the other forwarding', async (t) => {
  const a = await addPod(t)
  const b = await addPod(t)
  let pa: MemifPeer = await startMemifPeer(t, { socket: a.socket, netns: a.netns.name, mode: 'icmpecho', cpu: 0 })
  let pb: MemifPeer = await startMemifPeer(t, { socket: b.socket, netns: b.netns.name, mode: 'icmpecho', cpu: 0 })
  t.ok(ping(a.address) && ping(b.address), 'both pods answer')
  const [pid] = forwarders()
  t.equal(forwarders().length, 1, 'both pairs in one forwarder process')
  // Traffic while it dies: a flood ping from the endpoint toward a.
  const flood = spawnSync('bash', ['-c', `ip netns exec ${ep.name} ping -f -c 2000 -W 1 ${a.address} >/dev/null 2>&1 & sleep 0.3; kill -9 ${String(pid)}; wait`])
  t.equal(flood.status, 0)
  await until('a new forwarder', () => forwarders().length === 1 && forwarders()[0] !== pid)
  await until('both sockets served again', () => existsSync(a.socket) && existsSync(b.socket))
  // A DPDK 22.11 memif client sometimes segfaults when its server is killed: the pod's application restarts.
  pa = await reconnect(t, pa, a)
  pb = await reconnect(t, pb, b)
  t.ok(ping(a.address) && ping(b.address), 'both pods answer again after reopening their ports')
  t.ok(restartLogs() > 0, 'the agent logged the restart')
  const restartsBefore = restartLogs()

  // a's pod is deleted while its client is connected and receiving a flood; b keeps forwarding.
  const flood2 = spawnSync('bash', ['-c', `ip netns exec ${ep.name} ping -f -c 3000 -W 1 ${a.address} >/dev/null 2>&1 & sleep 0.2; wait`])
  t.equal(flood2.status, 0)
  await a.del()
  t.notOk(existsSync(a.socket), "a's socket is gone")
  // Detaching a's port while its client is connected and under traffic can crash 22.11's memif PMD (then
  // the forwarder is restarted and b's client reopens its port, as above); otherwise b never noticed.
  if (!ping(b.address)) {
    await until('a restart logged', () => restartLogs() > restartsBefore, 15_000)
    pb = await reconnect(t, pb, b)
    t.comment('the forwarder crashed when a detached under traffic: restarted')
  }
  t.ok(ping(b.address), 'b still forwards')
  await pa.stop()
  await pb.stop()
})

t.test('heal: the endpoint goes away, the memif is rebuilt toward the standby, its client stays connected', async (t) => {
  const ep2 = makeNetns(t, 'ep2')
  await mesh.endpoint({ name: 'web-ep2', netns: ep2.path, pools: ['172.31.6.0/24'] })
  // Gone already when the connection first went through it (the heal unregisters the endpoint it used).
  t.teardown(() => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'web-ep2' }).catch(() => undefined))
  const pod = await addPod(t)
  const peer = await startMemifPeer(t, { socket: pod.socket, netns: pod.netns.name, mode: 'icmpecho', cpu: 0 })
  const [first] = await mesh.connections()
  const from = first?.networkServiceEndpointName ?? ''
  const [standby, standbyNs] = from === 'web-ep' ? ['web-ep2', ep2.name] : ['web-ep', ep.name]
  const pingFrom = (ns: string): boolean => spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '2', '-i', '0.2', '-W', '2', pod.address], { stdio: 'ignore' }).status === 0
  t.ok(pingFrom(from === 'web-ep' ? ep.name : ep2.name), `the client answers through ${from}`)
  await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: from })
  await until('the heal to the standby', async () => (await mesh.connections())[0]?.networkServiceEndpointName === standby, 15_000)
  const [healed] = await mesh.connections()
  t.equal(healed?.mechanism?.parameters.socketfile, pod.socket, 'the same socket')
  t.same(healed?.context?.ipContext?.srcIpAddrs, [`${pod.address}/32`], 'the same address')
  t.ok(existsSync(pod.socket), 'the socket stayed')
  t.ok(await peer.linkUp(), "the pod's memif client stayed connected: only the endpoint side was made anew")
  t.ok(mesh.agent.logs.some((l) => l.msg === 'memif pair: its kernel port attached again (the memif stays connected)' && l.id === `${pod.id}-net1`), 'the forwarder re-attached the kernel port in place')
  t.ok(pingFrom(standbyNs), `the client answers through ${standby}, without reopening its port`)
  await peer.stop()
  await pod.del()
  // The endpoint that went away is registered again for the tests that follow.
  if (from === 'web-ep') await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.31.6.0/24'] })
})

t.test('the agent SIGKILLed and restarted: the forwarder is adopted and traffic never stops', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-memif-agent-'))
  const root = join(dir, 'memif')
  let restartRunDir = ''
  t.teardown(() => {
    if (restartRunDir !== '') killForwarders(restartRunDir)
    rmSync(dir, { recursive: true, force: true })
  })
  const args = ['--memif-root', root, '--memif-cpu', '1', '--node-name', 'node-r']
  const first = await startAgent(t, { dir, args })
  restartRunDir = join(first.stateDir, 'memif-fwd')
  const epr = makeNetns(t, 'epr')
  const pod = makeNetns(t, 'mp')
  // A client through the NSM API (MEMIF preference), an endpoint registered through the agent's API.
  await first.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: 'svc', payload: 'ETHERNET', matches: [], pathIds: [] })
  await first.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
    endpoint: { name: 'ep-r', networkServiceNames: ['svc'], networkServiceLabels: {}, url: `file://${epr.path}`, expirationTime: { seconds: Math.floor(Date.now() / 1000) + 3600, nanos: 0 }, initialRegistrationTime: undefined, pathIds: [] },
    extension: { endpointName: 'ep-r', netnsPath: epr.path, cidrPools: ['172.31.7.0/24'], routes: [], excludedPrefixes: [], nodeName: '' },
  })
  const conn = await first.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, {
    connection: { id: 'api-memif-1', networkService: 'svc', labels: {}, path: undefined, networkServiceEndpointName: '', payload: '', state: 0, mechanism: undefined, context: undefined },
    mechanismPreferences: [{ cls: 'LOCAL', type: 'MEMIF', parameters: { name: 'memif0', inodeURL: `file://${pod.path}` } }],
  })
  const socket = conn.mechanism?.parameters.socketfile ?? ''
  t.equal(socket, join(root, 'api-memif-1', 'memif0.sock'), 'an NSM client without memifDir: the directory is named by the connection id')
  t.equal(conn.mechanism?.type, 'MEMIF')
  const address = (conn.context?.ipContext?.srcIpAddrs[0] ?? '').split('/')[0] ?? ''
  const peer = await startMemifPeer(t, { socket, netns: pod.name, mode: 'icmpecho', cpu: 0 })
  const pinger = (): boolean => spawnSync('ip', ['netns', 'exec', epr.name, 'ping', '-c', '2', '-i', '0.2', '-W', '2', address], { stdio: 'ignore' }).status === 0
  t.ok(pinger(), 'traffic before')
  const [pid] = findForwarderProcesses(restartRunDir).keys()
  // A continuous ping across the agent's death and restart: every reply must come.
  const during = spawnSync('bash', ['-c', `ip netns exec ${epr.name} ping -c 30 -i 0.1 -W 1 ${address} | tail -2 & sleep 0.5; kill -9 ${String(first.pid)}; wait`], { encoding: 'utf8' })
  const second = await startAgent(t, { dir, args })
  t.match(during.stdout, / 0% packet loss/, `no loss while the agent died: ${during.stdout.trim()}`)
  if (!t.same([...findForwarderProcesses(restartRunDir).keys()], [pid], 'the same forwarder process, adopted')) t.comment(JSON.stringify(second.logs.filter((l) => l.level !== 'debug')))
  t.ok(await peer.linkUp(), 'the client never had to reconnect')
  t.ok(pinger(), 'traffic after the restart')
  await second.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  t.notOk(existsSync(socket), 'Close removed the socket')
  await until('the forwarder to quit', () => findForwarderProcesses(restartRunDir).size === 0)
  await peer.stop()
  await second.stop()
})

t.test('bad input: a K8S_POD_UID that is no directory name, a conflicting netconf mechanism: clear errors, nothing left', async (t) => {
  const netns = makeNetns(t, 'mp')
  const before = readdirSync(memifRoot)
  const bad = await mesh.cni({ command: 'ADD', containerId: 'bad-uid', netns: netns.path, ifname: 'net1', args: 'IgnoreUnknown=1;K8S_POD_UID=../x', stdin: mesh.conf({ networkService: `memif://${WEB}` }) })
  t.equal(bad.json?.code, 4, bad.stdout)
  t.match(String(bad.json?.msg), /K8S_POD_UID: "\.\.\/x" is not a directory name/)
  const clash = await mesh.cni({ command: 'ADD', containerId: 'bad-mech', netns: netns.path, ifname: 'net1', stdin: mesh.conf({ networkService: `kernel://${WEB}`, mechanism: 'memif' }) })
  t.equal(clash.json?.code, 7, clash.stdout)
  t.match(String(clash.json?.msg), /^networkService: "kernel:\/\/web-service" asks for kernel, while mechanism is memif/)
  const viaConf = resultOf(await mesh.cni({ command: 'ADD', containerId: 'by-conf', netns: netns.path, ifname: 'net1', stdin: mesh.conf({ networkService: WEB, mechanism: 'memif' }) }))
  t.equal(viaConf.interfaces?.[0]?.socketPath, join(memifRoot, 'by-conf', 'net1.sock'), 'netconf mechanism memif; without K8S_POD_UID the directory is the container id')
  await mesh.cni({ command: 'DEL', containerId: 'by-conf', netns: netns.path, ifname: 'net1', stdin: mesh.conf({ networkService: WEB, mechanism: 'memif' }) })
  t.same(readdirSync(memifRoot), before, 'no directory left')
  t.same(await mesh.connectionIds(), [])
  t.same(endpointIfnames(), [])
})
