// dist/nsm chained after Debian's ptp + host-local, as the last plugin of a cluster network's conflist:
// the runtime's order is exec'd by hand (ptp ADD → nsm ADD with ptp's result as prevResult; DEL in
// reverse). The pod's annotations (v1 and legacy forms, read by the agent from its pod-info directory)
// name the services: eth0 is kept, nsm's interfaces are appended to the result with their addresses
// (interface indexes past eth0) and routes, each reaches its endpoint, CHECK passes on the final result,
// and DEL leaves no link, address, connection or host-local reservation. A second ADD is 106 and changes
// nothing; a pod without annotations gets prevResult back unchanged; a bad annotation is 105 and a
// failure midway closes what was made.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execPlugin } from '../conformance/exec'
import { ip, linkAddresses, linkNames, makeNetns, sh, type TestNetns } from '../lib/netns'
import { resultOf, startMesh, WEB } from './nsm-fixture'

const mesh = await startMesh(t, { network: 'cluster' })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.2.0/24'], routes: ['10.98.0.0/16'] })
const dataDir = mkdtempSync(join(tmpdir(), 'nsm-chain-hl-'))
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
const PTP = { cniVersion: '1.0.0', name: 'cluster', type: 'ptp', ipam: { type: 'host-local', subnet: '10.215.7.0/24', dataDir } }
const nsmConf = (prevResult: unknown) => ({ ...mesh.conf({ cniVersion: '1.0.0' }), prevResult })

const ping = (ns: string, addr: string): boolean => {
  try {
    sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', addr])
    return true
  } catch {
    return false
  }
}
const reservations = (): string[] => {
  try {
    return readdirSync(join(dataDir, 'cluster')).filter((f) => /^\d/.test(f))
  } catch {
    return []
  }
}

/** ptp ADD for a pod, with its DEL registered at teardown (the runtime's order: nsm DEL first). */
async function ptpAdd(t: { teardown(fn: () => unknown): void }, pod: TestNetns, id: string, args: string): Promise<Record<string, unknown>> {
  const out = await execPlugin('/usr/lib/cni/ptp', { command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, path: '/usr/lib/cni', stdin: PTP })
  t.teardown(() => execPlugin('/usr/lib/cni/ptp', { command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, path: '/usr/lib/cni', stdin: PTP }).then(() => undefined))
  return resultOf(out)
}

const k8sArgs = (ns: string, name: string, id: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=${id}`

t.test('v1 and legacy annotations: eth0 kept, nsm-1 and eth2 appended, both reach the endpoint', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `ch-${pod.name}`
  mesh.pod('default', 'client-1', {
    labels: { app: 'client' },
    annotations: { 'networkservicemesh.io': `kernel://${WEB}?color=blue`, 'ns.networkservicemesh.io': `${WEB}/eth2?color=red` },
  })
  const args = k8sArgs('default', 'client-1', id)
  const prev = await ptpAdd(t, pod, id, args)
  const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) })
  const res = resultOf(out)
  const prevIfaces = prev.interfaces as Array<{ name: string }>
  const ifaces = res.interfaces as Array<{ name: string; sandbox?: string }>
  t.same(ifaces.slice(0, prevIfaces.length), prevIfaces, 'prevResult interfaces first, unchanged')
  const macOf = (dev: string) => (JSON.parse(ip(pod.name, '-j', 'link', 'show', dev)) as Array<{ address: string }>)[0]?.address
  t.same(ifaces.slice(prevIfaces.length), [{ name: 'nsm-1', sandbox: pod.path, mac: macOf('nsm-1') }, { name: 'eth2', sandbox: pod.path, mac: macOf('eth2') }], 'nsm-1 (v1 entry) then eth2 (legacy entry), with their MACs')
  const ips = res.ips as Array<{ address: string; interface: number; gateway?: string }>
  t.same(ips.slice(0, (prev.ips as unknown[]).length), prev.ips, 'prevResult ips first, unchanged')
  const ours = ips.slice((prev.ips as unknown[]).length)
  t.equal(ours.length, 2)
  t.equal(ours[0]?.interface, prevIfaces.length, 'nsm-1 address points at nsm-1')
  t.equal(ours[1]?.interface, prevIfaces.length + 1, 'eth2 address points at eth2')
  t.ok(linkNames(pod.name).includes('eth0'), 'eth0 is still there')
  t.same(linkAddresses(pod.name, 'nsm-1').filter((a) => !a.startsWith('fe80')), [ours[0]?.address])
  t.same(linkAddresses(pod.name, 'eth2').filter((a) => !a.startsWith('fe80')), [ours[1]?.address])
  const routes = res.routes as Array<{ dst: string; gw?: string }>
  t.ok((prev.routes as Array<{ dst: string }> | undefined ?? []).every((r) => routes.some((x) => x.dst === r.dst)), 'prevResult routes kept')
  t.ok(routes.some((r) => r.dst === '10.98.0.0/16'), 'the endpoint\'s offered route appended')
  const peers = routes.filter((r) => r.dst.startsWith('172.30.2.') && r.gw === undefined).map((r) => r.dst.split('/')[0] as string)
  t.equal(peers.length, 2, 'one host route per connection')
  for (const p of peers) t.ok(ping(pod.name, p), `the pod pings the endpoint at ${p}`)
  t.same(await mesh.connectionIds(), [`${id}-eth2`, `${id}-nsm-1`])

  const listed = (await mesh.connections()).filter((c) => c.id.startsWith(`${id}-`))
  const labels = Object.fromEntries(listed.map((c) => [c.mechanism?.parameters.name, c.labels.color]))
  t.same(labels, { 'nsm-1': 'blue', eth2: 'red' }, 'each entry\'s query labels go with its request')

  const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })
  t.equal(check.exitCode, 0, `CHECK on the final result: ${check.stdout}`)
  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })
  t.equal(del.exitCode, 0, del.stdout)
  t.same(linkNames(pod.name).sort(), ['eth0', 'lo'], 'nsm\'s interfaces are gone, eth0 is ptp\'s to remove')
  t.same(linkNames(ep.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('a second ADD of the attachment is 106; the first ADD\'s connections, interfaces and addresses are untouched', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `twice-${pod.name}`
  mesh.pod('default', 'twice', { annotations: { 'networkservicemesh.io': `kernel://${WEB}, kernel://${WEB}/eth2` } })
  const args = k8sArgs('default', 'twice', id)
  const prev = await ptpAdd(t, pod, id, args)
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) }).then(() => undefined))
  const snapshot = async () => ({
    links: linkNames(pod.name).sort(),
    addrs: ['nsm-1', 'eth2'].map((n) => linkAddresses(pod.name, n).filter((a) => !a.startsWith('fe80'))),
    macs: ['nsm-1', 'eth2'].map((n) => (JSON.parse(ip(pod.name, '-j', 'link', 'show', n)) as Array<{ address: string }>)[0]?.address),
    ep: linkNames(ep.name).sort(),
    conns: await mesh.connectionIds(),
  })
  const before = await snapshot()
  t.same(before.conns, [`${id}-eth2`, `${id}-nsm-1`])
  const twice = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) })
  t.equal(twice.exitCode, 1)
  t.equal(twice.json?.code, 106, twice.stdout)
  t.equal(twice.json?.msg, `container ${id} interface eth0 is already attached to network cluster (connections ${id}-nsm-1, ${id}-eth2): DEL it first`)
  t.same(await snapshot(), before, 'nothing of the first ADD changed')
  const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })
  t.equal(check.exitCode, 0, `CHECK of the first ADD's result still passes: ${check.stdout}`)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })).exitCode, 0)
  t.same(linkNames(pod.name).sort(), ['eth0', 'lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('a pod without annotations: prevResult passed on unchanged, nothing made', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `plain-${pod.name}`
  mesh.pod('default', 'plain', { labels: { app: 'plain' } })
  const args = k8sArgs('default', 'plain', id)
  const prev = await ptpAdd(t, pod, id, args)
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) }))
  // ptp prints an empty "dns": {}; the protocol layer leaves an empty dns out (same meaning).
  const { dns, ...rest } = prev
  t.same(res, dns !== undefined && Object.keys(dns as object).length > 0 ? prev : rest, 'the result is prevResult')
  t.same(linkNames(pod.name).sort(), ['eth0', 'lo'])
  const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })
  t.equal(check.exitCode, 0, `CHECK: ${check.stdout}`)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })).exitCode, 0)
})

t.test('bad annotations are 105 naming the entry; nothing is made, eth0 untouched', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `bad-${pod.name}`
  const prev = await ptpAdd(t, pod, id, k8sArgs('default', 'bad', id))
  for (const [annotations, want] of [
    [{ 'networkservicemesh.io': 'kernel://web-service/this-name-is-too-long' }, /networkservicemesh\.io\[0\].*longer than 15/],
    [{ 'ns.networkservicemesh.io': 'Bad_Service' }, /ns\.networkservicemesh\.io\[0\].*invalid service name/],
    [{ 'networkservicemesh.io': 'carrier-pigeon://web-service' }, /unsupported mechanism/],
    [{ 'networkservicemesh.io': `kernel://${WEB}/eth0` }, /eth0 is already made by an earlier plugin/],
    [{ 'endpoint.networkservicemesh.io': `${WEB}?cidr=300.1.1.0/24` }, /endpoint\.networkservicemesh\.io\[0\]/],
    [{ 'endpoint.networkservicemesh.io': `${WEB}?app=x` }, /needs an address pool/],
  ] as const) {
    mesh.pod('default', 'bad', { annotations })
    const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args: k8sArgs('default', 'bad', id), stdin: nsmConf(prev) })
    t.equal(out.json?.code, 105, `${JSON.stringify(annotations)}: ${out.stdout}`)
    t.match(String(out.json?.msg), want)
  }
  t.same(linkNames(pod.name).sort(), ['eth0', 'lo'])
  t.same(await mesh.connectionIds(), [])
  t.same(await mesh.endpointNames(), ['web-ep'])
})

t.test('a failure midway (second service has no endpoint: 101) closes the first connection', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `mid-${pod.name}`
  mesh.pod('default', 'mid', { annotations: { 'networkservicemesh.io': `kernel://${WEB}/nsm-a, kernel://no-such-service/nsm-b` } })
  const args = k8sArgs('default', 'mid', id)
  const prev = await ptpAdd(t, pod, id, args)
  const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) })
  t.equal(out.json?.code, 101, out.stdout)
  t.match(String(out.json?.msg), /no-such-service/)
  t.same(linkNames(pod.name).sort(), ['eth0', 'lo'], 'nsm-a was removed again')
  t.same(linkNames(ep.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('DEL in the runtime\'s order leaves no host-local reservation and no ptp link', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `order-${pod.name}`
  mesh.pod('default', 'order', { annotations: { 'networkservicemesh.io': WEB } })
  const args = k8sArgs('default', 'order', id)
  const hostLinks = linkNames().length
  const prevOut = await execPlugin('/usr/lib/cni/ptp', { command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, path: '/usr/lib/cni', stdin: PTP })
  const prev = resultOf(prevOut)
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(prev) }))
  t.equal(reservations().length, 1)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, stdin: nsmConf(res) })).exitCode, 0)
  const ptpDel = await execPlugin('/usr/lib/cni/ptp', { command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth0', args, path: '/usr/lib/cni', stdin: { ...PTP, prevResult: res } })
  t.equal(ptpDel.exitCode, 0, ptpDel.stdout)
  t.same(reservations(), [], 'host-local released the address')
  t.same(linkNames(pod.name), ['lo'])
  t.equal(linkNames().length, hostLinks, 'no host-side link left')
  t.same(await mesh.connectionIds(), [])
})
