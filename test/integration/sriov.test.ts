// The SR-IOV mechanism through dist/nsm and a real agent, against a fake sysfs tree whose VF entries name
// real links: each "VF" is one end of a veth pair in the host netns, its "PF" the other end (the macvlan
// of the endpoint's side sits on it). The moves, renames, MAC/MTU changes and restores are real kernel
// operations. Covered: a Multus-style ADD (runtimeConfig.deviceID and mac) puts the VF into the pod as
// CNI_IFNAME with its MAC, MTU and address, the result carries pciID, the pod pings the endpoint, a
// device-info file (spec 1.1.0) is written, nsmctl shows KERNEL VF and its PCI address; DEL gives the VF
// back with its original name, MAC and MTU, down; a second pod asking for the same VF is refused and
// nothing moves; an unknown, malformed or absent VF is a clear error naming the field; CNI_ARGS
// PCIDEVICE_*; a VF bound to vfio-pci is VFIO (PCI address and IOMMU group, nothing moved); the agent
// SIGKILLed right after moving a VF (before journaling) or after the ADD: at restart the VF is given back,
// or kept and given back by DEL.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { startAgent } from '../lib/agent'
import { ip, linkAddresses, linkNames, makeNetns, sh, showLink, uniqueName } from '../lib/netns'
import { resultOf, startMesh, WEB, type Mesh } from './nsm-fixture'

const ROOT = resolve(import.meta.dirname, '../..')
const PF_PCI = '0000:5e:00.0'

const sysfs = mkdtempSync(join(tmpdir(), 'nsm-sysfs-'))
const devinfo = mkdtempSync(join(tmpdir(), 'nsm-devinfo-'))
t.teardown(() => {
  rmSync(sysfs, { recursive: true, force: true })
  rmSync(devinfo, { recursive: true, force: true })
})
const agentArgs = ['--sysfs-root', sysfs, '--devinfo-dir', devinfo]

interface FakeVf {
  pci: string
  /** The VF's netdev in the host netns (its original name). */
  name: string
  pf: string
  mac: string
}

let vfCount = 0
/**
 * A "VF": a veth pair in the host netns (VF end: MTU 1400, its own MAC, down; PF end up), and its sysfs
 * entries (net/<name>, physfn, driver, iommu_group). Both ends are deleted at teardown (deleting the PF end
 * takes the VF end with it, wherever it is).
 */
function fakeVf(pfPci = PF_PCI): FakeVf {
  vfCount += 1
  const pci = `0000:5e:01.${vfCount - 1}`
  const name = uniqueName('vf')
  const pf = uniqueName('pf')
  const mac = `02:5e:01:00:00:${vfCount.toString(16).padStart(2, '0')}`
  sh('ip', ['link', 'add', name, 'mtu', '1400', 'address', mac, 'type', 'veth', 'peer', 'name', pf])
  t.teardown(() => {
    spawnSync('ip', ['link', 'del', pf], { stdio: 'ignore' })
  })
  sh('ip', ['link', 'set', pf, 'up'])
  const dev = join(sysfs, 'bus/pci/devices', pci)
  mkdirSync(join(dev, 'net', name), { recursive: true })
  // Each VF has its own PF stand-in here (a veth has one peer): a PF device per VF in the tree.
  const pfDev = join(sysfs, 'bus/pci/devices', `${pfPci.slice(0, -1)}${vfCount % 8}`)
  mkdirSync(join(pfDev, 'net', pf), { recursive: true })
  symlinkSync(`../${pfDev.split('/').pop() ?? ''}`, join(dev, 'physfn'))
  symlinkSync('../../../../bus/pci/drivers/iavf', join(dev, 'driver'))
  symlinkSync(`../../../../kernel/iommu_groups/${100 + vfCount}`, join(dev, 'iommu_group'))
  return { pci, name, pf, mac }
}

/** A VF bound to vfio-pci: no netdev, an IOMMU group. */
function fakeVfioVf(group: number): { pci: string; pfPci: string } {
  const pf = uniqueName('pf')
  sh('ip', ['link', 'add', pf, 'type', 'veth', 'peer', 'name', uniqueName('pp')])
  t.teardown(() => {
    spawnSync('ip', ['link', 'del', pf], { stdio: 'ignore' })
  })
  sh('ip', ['link', 'set', pf, 'up'])
  const pci = '0000:5e:02.0'
  const pfPci = '0000:5e:00.7'
  mkdirSync(join(sysfs, 'bus/pci/devices', pfPci, 'net', pf), { recursive: true })
  const dev = join(sysfs, 'bus/pci/devices', pci)
  mkdirSync(dev, { recursive: true })
  symlinkSync(`../${pfPci}`, join(dev, 'physfn'))
  symlinkSync('../../../../bus/pci/drivers/vfio-pci', join(dev, 'driver'))
  symlinkSync(`../../../../kernel/iommu_groups/${group}`, join(dev, 'iommu_group'))
  return { pci, pfPci }
}

/** The host's view of a link: name, MAC, MTU, up, alias; undefined when it is not in the host netns. */
function hostLink(name: string): { mac: string; mtu: number; up: boolean; alias: string | undefined } | undefined {
  const r = spawnSync('ip', ['-j', '-d', 'link', 'show', 'dev', name], { encoding: 'utf8' })
  if (r.status !== 0) return undefined
  const l = (JSON.parse(r.stdout) as Array<{ address: string; mtu: number; flags: string[]; ifalias?: string }>)[0]
  if (l === undefined) return undefined
  return { mac: l.address, mtu: l.mtu, up: l.flags.includes('UP'), alias: l.ifalias }
}

function ping(ns: string, addr: string): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', addr], { stdio: 'ignore' }).status === 0
}

function nsmctl(socket: string, ...args: string[]): string {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', socket, ...args], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`nsmctl ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

const mesh = await startMesh(t, { agentArgs })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.31.5.0/24'], routes: ['10.77.0.0/16'] })
const claimDir = (m: Mesh): string => join(m.agent.stateDir, 'sriov')

t.test('ADD with a Multus deviceID and mac: the VF in the pod, pciID, ping, device info; DEL gives it back', async (t) => {
  const vf = fakeVf()
  const pod = makeNetns(t, 'p')
  const id = `sriov-${pod.name}`
  const conf = mesh.conf({ networkService: WEB, runtimeConfig: { deviceID: vf.pci, mac: '0A:58:0A:F4:00:07' } })
  const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p', stdin: conf })
  const res = resultOf(out)
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }))
  t.same(res.interfaces, [{ name: 'net1', sandbox: pod.path, mac: '0a:58:0a:f4:00:07', mtu: 1500, pciID: vf.pci }], 'one interface with the VF\'s PCI address')
  t.equal(hostLink(vf.name), undefined, 'the VF left the host netns')
  const inPod = showLink(pod.name, 'net1')
  t.equal(inPod.address, '0a:58:0a:f4:00:07', 'the requested MAC')
  t.equal(inPod.mtu, 1500, 'the MTU (it was 1400)')
  t.ok(inPod.flags.includes('UP'), 'up')
  const ips = res.ips as Array<{ address: string }>
  t.same(linkAddresses(pod.name, 'net1').filter((a) => !a.startsWith('fe80:')), [ips[0]?.address], 'the client address from the endpoint\'s pool')
  const peer = (res.routes as Array<{ dst: string; gw?: string }>).find((r) => r.gw === undefined)?.dst.split('/')[0] ?? ''
  t.match(peer, /^172\.31\.5\.\d+$/)
  t.ok(ping(pod.name, peer), `the pod pings the endpoint ${peer} over the VF (macvlan on the PF in the endpoint's netns)`)
  const file = join(devinfo, `nsm-net-${id}_net1`)
  t.same(JSON.parse(readFileSync(file, 'utf8')), { type: 'pci', version: '1.1.0', pci: { 'pci-address': vf.pci, 'pf-pci-address': '0000:5e:00.1' } }, 'the device-info file (spec 1.1.0), Multus\'s name')
  t.ok(existsSync(join(claimDir(mesh), `${vf.pci}.json`)), 'the VF is claimed')
  const table = nsmctl(mesh.socket, 'get', 'connections')
  t.match(table, `KERNEL VF net1 ${vf.pci}`, `nsmctl get connections shows the VF:\n${table}`)
  const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'net1', stdin: { ...conf, prevResult: res } })
  t.equal(check.exitCode, 0, `CHECK passes: ${check.stdout}`)

  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
  t.equal(del.exitCode, 0, `DEL: ${del.stdout}`)
  t.same(hostLink(vf.name), { mac: vf.mac, mtu: 1400, up: false, alias: undefined }, 'the VF is back: original name, MAC, MTU, down, no tag')
  t.same(linkNames(pod.name), ['lo'], 'nothing left in the pod')
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone')
  t.notOk(existsSync(file), 'the device-info file is removed')
  t.notOk(existsSync(join(claimDir(mesh), `${vf.pci}.json`)), 'the claim is released')
  t.same(await mesh.connectionIds(), [])
})

t.test('two pods ask for one VF: the second is refused and nothing moves', async (t) => {
  const vf = fakeVf()
  const [p1, p2] = [makeNetns(t, 'p'), makeNetns(t, 'p')]
  const conf = mesh.conf({ networkService: WEB, deviceID: vf.pci })
  const first = resultOf(await mesh.cni({ command: 'ADD', containerId: `a-${p1.name}`, netns: p1.path, ifname: 'net1', stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: `a-${p1.name}`, netns: p1.path, ifname: 'net1', stdin: conf }))
  const mac = showLink(p1.name, 'net1').address
  t.match(mac, /^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/, 'without a requested MAC: a locally administered one derived from the connection')
  t.not(mac, vf.mac)
  t.equal((first.interfaces as Array<{ pciID?: string }>)[0]?.pciID, vf.pci)
  const before = { ep: linkNames(ep.name), p1: linkNames(p1.name), ids: await mesh.connectionIds() }
  const second = await mesh.cni({ command: 'ADD', containerId: `b-${p2.name}`, netns: p2.path, ifname: 'net1', stdin: conf })
  t.equal(second.json?.code, 7, `refused: ${second.stdout}`)
  t.match(String(second.json?.msg), `deviceID ${vf.pci}`, 'the message names the field')
  t.match(String(second.json?.msg), `VF ${vf.pci} is in use by connection a-${p1.name}-net1`, 'and who holds the VF')
  t.same(linkNames(p2.name), ['lo'], 'nothing in the second pod')
  t.same({ ep: linkNames(ep.name), p1: linkNames(p1.name), ids: await mesh.connectionIds() }, before, 'the first pod\'s VF and connection as they were')
})

t.test('an unknown, malformed or absent VF: a clear error naming the field, nothing changed', async (t) => {
  const pod = makeNetns(t, 'p')
  const gone = fakeVf()
  // Its netdev is not in the host netns (moved elsewhere: in use by someone else).
  const other = makeNetns(t, 'x')
  sh('ip', ['link', 'set', gone.name, 'netns', other.name])
  const cases: Array<[string, Record<string, unknown>, string | undefined, number, RegExp]> = [
    ['unknown', { deviceID: '0000:5e:1f.7' }, undefined, 7, /deviceID 0000:5e:1f\.7: .*pciAddress: no PCI device 0000:5e:1f\.7/],
    ['malformed', { runtimeConfig: { deviceID: '5e:1f' } }, undefined, 7, /^runtimeConfig\.deviceID: "5e:1f" is not a PCI address/],
    ['not a VF', { deviceID: PF_PCI.replace(/0$/, '1') }, undefined, 7, /is not an SR-IOV VF \(it has no physfn\)/],
    ['netdev elsewhere', { deviceID: gone.pci }, undefined, 7, new RegExp(`VF ${gone.pci.replace(/\./g, '\\.')} has no network device in the agent's netns|sysfs names ${gone.name}, which is not there`)],
    ['bad PCIDEVICE', {}, 'IgnoreUnknown=1;PCIDEVICE_INTEL_COM_SRIOV=0000:5e:01.0,0000:5e:01.1', 4, /^CNI_ARGS PCIDEVICE_INTEL_COM_SRIOV: names 2 VFs/],
  ]
  for (const [label, extra, args, code, msg] of cases) {
    const conf = mesh.conf({ networkService: WEB, ...extra })
    const before = { ep: linkNames(ep.name), host: linkNames().length, claims: existsSync(claimDir(mesh)) ? spawnSync('ls', [claimDir(mesh)], { encoding: 'utf8' }).stdout : '' }
    const out = await mesh.cni({ command: 'ADD', containerId: `u-${pod.name}`, netns: pod.path, ifname: 'net1', ...(args === undefined ? {} : { args }), stdin: conf })
    t.equal(out.json?.code, code, `${label}: ${out.stdout}`)
    t.match(String(out.json?.msg), msg, `${label}: the message`)
    t.same(linkNames(pod.name), ['lo'], `${label}: nothing in the pod`)
    const after = { ep: linkNames(ep.name), host: linkNames().length, claims: existsSync(claimDir(mesh)) ? spawnSync('ls', [claimDir(mesh)], { encoding: 'utf8' }).stdout : '' }
    t.same(after, before, `${label}: nothing changed`)
  }
  t.same(await mesh.connectionIds(), [], 'no connection')
})

t.test('CNI_ARGS PCIDEVICE_<RESOURCE> names the VF (the SR-IOV device plugin\'s variable)', async (t) => {
  const vf = fakeVf()
  const pod = makeNetns(t, 'p')
  const id = `pd-${pod.name}`
  const conf = mesh.conf({ networkService: WEB })
  const args = `IgnoreUnknown=1;PCIDEVICE_INTEL_COM_SRIOV_NETDEVICE=${vf.pci}`
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'sr0', args, stdin: conf }))
  t.equal((res.interfaces as Array<{ pciID?: string }>)[0]?.pciID, vf.pci)
  t.ok(linkNames(pod.name).includes('sr0'), 'the VF is sr0 in the pod')
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'sr0', args, stdin: conf })).exitCode, 0)
  t.equal(hostLink(vf.name)?.mac, vf.mac, 'given back')
})

t.test('a VF bound to vfio-pci: VFIO, the PCI address and IOMMU group, nothing moved; device info', async (t) => {
  const vf = fakeVfioVf(42)
  const pod = makeNetns(t, 'p')
  const id = `vfio-${pod.name}`
  const file = join(devinfo, `vfio-${pod.name}.json`)
  const conf = mesh.conf({ networkService: WEB, runtimeConfig: { deviceID: vf.pci, CNIDeviceInfoFile: file } })
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }))
  t.match(res.interfaces, [{ name: 'net1', sandbox: pod.path, pciID: vf.pci }])
  t.same(linkNames(pod.name), ['lo'], 'no netdev moved into the pod (DPDK opens /dev/vfio/42)')
  const [conn] = await mesh.connections()
  t.equal(conn?.mechanism?.type, 'VFIO')
  t.same(conn?.mechanism?.parameters.iommuGroup, '42')
  t.same(conn?.mechanism?.parameters.pciAddress, vf.pci)
  t.match(nsmctl(mesh.socket, 'get', 'connections'), `VFIO ${vf.pci} group 42`)
  t.same(JSON.parse(readFileSync(file, 'utf8')), { type: 'pci', version: '1.1.0', pci: { 'pci-address': vf.pci, 'pf-pci-address': vf.pfPci } }, 'device info at Multus\'s CNIDeviceInfoFile')
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })).exitCode, 0)
  t.notOk(existsSync(file), 'removed on DEL')
  t.same(linkNames(ep.name), ['lo'])
})

t.test('agent SIGKILLed right after moving the VF, and after an ADD: restart gives it back / DEL does', async (t) => {
  process.env.NSM_AGENT_TEST_SRIOV_HANG = 'moved'
  let crash: Mesh
  try {
    crash = await startMesh(t, { agentArgs, network: 'crash-net' })
  } finally {
    delete process.env.NSM_AGENT_TEST_SRIOV_HANG
  }
  const ep2 = makeNetns(t, 'ep')
  await crash.endpoint({ name: 'web-ep2', netns: ep2.path, pools: ['172.31.6.0/24'] })
  const vf = fakeVf()
  const pod = makeNetns(t, 'p')
  const id = `k-${pod.name}`
  const conf = crash.conf({ networkService: WEB, deviceID: vf.pci })
  const add = crash.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
  const deadline = Date.now() + 10_000
  while (!linkNames(pod.name).includes('net1')) {
    if (Date.now() > deadline) throw new Error('the VF never reached the pod')
    await new Promise((r) => setTimeout(r, 20))
  }
  t.equal(hostLink(vf.name), undefined, 'moved into the pod')
  await crash.agent.stop('SIGKILL')
  t.not((await add).exitCode, 0, 'the ADD fails with its agent')
  t.equal(ip(pod.name, '-j', 'link', 'show', 'net1').includes('"ifalias":"nsm-vf:'), true, 'the VF is still in the pod, tagged')

  const again = await startAgent(t, { dir: crash.agent.dir, args: ['--pod-info-dir', crash.podInfoDir, '--node-name', 'node-a', ...agentArgs] })
  t.same(hostLink(vf.name), { mac: vf.mac, mtu: 1400, up: false, alias: undefined }, 'the restarted agent gave the VF back: original name, MAC, MTU')
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep2.name), ['lo'], 'the endpoint side made before the crash is swept')
  t.equal((await crash.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })).exitCode, 0, 'DEL succeeds')

  // A finished ADD, then SIGKILL: the restart keeps the intact datapath; DEL gives the VF back.
  const id2 = `k2-${pod.name}`
  resultOf(await crash.cni({ command: 'ADD', containerId: id2, netns: pod.path, ifname: 'net1', stdin: conf }))
  const mac = showLink(pod.name, 'net1').address
  await again.stop('SIGKILL')
  await startAgent(t, { dir: crash.agent.dir, args: ['--pod-info-dir', crash.podInfoDir, '--node-name', 'node-a', ...agentArgs] })
  t.equal(showLink(pod.name, 'net1').address, mac, 'the restart keeps the VF in the pod')
  t.equal((await crash.cni({ command: 'DEL', containerId: id2, netns: pod.path, ifname: 'net1', stdin: conf })).exitCode, 0)
  t.same(hostLink(vf.name), { mac: vf.mac, mtu: 1400, up: false, alias: undefined }, 'DEL after the restart gave the VF back')
  t.same(linkNames(ep2.name), ['lo'])
})
