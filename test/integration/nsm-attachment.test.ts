// dist/nsm in attachment mode, exec'd as a runtime does, with the real agent and real namespaces: ADD
// puts CNI_IFNAME into the pod netns with the endpoint's point-to-point address and routes, and a ping
// reaches the endpoint; CHECK passes, and fails once the interface is gone; DEL removes everything and is
// idempotent (twice, without CNI_NETNS, after the netns is gone); a second ADD is 106 (the agent's answer
// to the first Request) and leaves the first attachment as it was; results in 0.3.1, 0.4.0, 1.0.0, 1.1.0;
// Multus-style CNI_ARGS with runtimeConfig (a deviceID is refused: test/integration/hardening-cni-agent.test.ts);
// services from args.cni and CNI_ARGS.
import t from 'tap'
import { ip, linkAddresses as allAddresses, linkNames, makeNetns, removeNetns, sh } from '../lib/netns'
import { resultOf, startMesh, WEB } from './nsm-fixture'

const mesh = await startMesh(t)
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.1.0/24'], routes: ['10.99.0.0/16'] })

/** Addresses on a link, without the kernel's IPv6 link-local one. */
const linkAddresses = (ns: string, ifname: string): string[] => allAddresses(ns, ifname).filter((a) => !a.startsWith('fe80:'))

function ping(ns: string, addr: string): boolean {
  try {
    sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', addr])
    return true
  } catch {
    return false
  }
}

for (const version of ['0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
  t.test(`ADD / CHECK / DEL, cniVersion ${version}`, async (t) => {
    const pod = makeNetns(t, 'p')
    const id = `att-${version.replace(/\./g, '')}-${pod.name}`
    const conf = mesh.conf({ cniVersion: version, networkService: WEB, labels: { app: 'web' } })
    const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    const res = resultOf(out)
    t.equal(res.cniVersion, version)
    const mac = (JSON.parse(ip(pod.name, '-j', 'link', 'show', 'net1')) as Array<{ address: string }>)[0]?.address
    t.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)
    t.same(res.interfaces, [{ name: 'net1', sandbox: pod.path, mac, ...(version === '1.1.0' ? { mtu: 1500 } : {}) }], 'one interface, in the pod netns, with its MAC')
    const ips = res.ips as Array<{ address: string; interface: number; version?: string }>
    t.equal(ips.length, 1)
    t.match(ips[0], { address: /^172\.30\.1\.\d+\/32$/, interface: 0 })
    if (version < '1.0.0') t.equal(ips[0]?.version, '4')
    else t.notOk('version' in (ips[0] ?? {}))
    const routes = res.routes as Array<{ dst: string; gw?: string }>
    const peer = routes.find((r) => r.gw === undefined)?.dst.split('/')[0] ?? ''
    t.match(peer, /^172\.30\.1\.\d+$/, 'a host route to the endpoint')
    t.ok(routes.some((r) => r.dst === '10.99.0.0/16' && r.gw === peer), 'the endpoint\'s offered route via its address')
    t.same(linkAddresses(pod.name, 'net1'), [ips[0]?.address], 'the address is on net1 in the pod')
    t.ok(ping(pod.name, peer), `the pod pings the endpoint at ${peer}`)
    t.same(await mesh.connectionIds(), [`${id}-net1`], 'the agent holds one connection, named <containerid>-<ifname>')

    if (version !== '0.3.1') {
      const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'net1', stdin: { ...conf, prevResult: res } })
      t.equal(check.exitCode, 0, `CHECK passes: ${check.stdout}`)
      t.equal(check.stdout, '')
    }
    const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: { ...conf, prevResult: res } })
    t.equal(del.exitCode, 0, `DEL: ${del.stdout}`)
    t.same(linkNames(pod.name), ['lo'], 'net1 is gone')
    t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone')
    t.same(await mesh.connectionIds(), [], 'the agent holds nothing')
    const again = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    t.equal(again.exitCode, 0, 'a second DEL succeeds')
  })
}

t.test('CHECK fails (110) when the interface is gone; ADD twice fails (106) and leaves the first intact', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `chk-${pod.name}`
  const conf = mesh.conf({ networkService: WEB })
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth1', stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'eth1', stdin: conf }))
  const mac = (): string | undefined => (JSON.parse(ip(pod.name, '-j', 'link', 'show', 'eth1')) as Array<{ address: string }>)[0]?.address
  const before = { links: linkNames(pod.name), ep: linkNames(ep.name), mac: mac() }
  const twice = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth1', stdin: conf })
  t.equal(twice.exitCode, 1)
  t.equal(twice.json?.code, 106, `second ADD: ${twice.stdout}`)
  t.equal(twice.json?.msg, `container ${id} interface eth1 is already attached to network nsm-net (connections ${id}-eth1): DEL it first`)
  t.same(linkAddresses(pod.name, 'eth1'), [(res.ips as Array<{ address: string }>)[0]?.address], 'the first attachment is intact')
  t.same({ links: linkNames(pod.name), ep: linkNames(ep.name), mac: mac() }, before, 'the same interface (not re-made) on both sides')
  t.same(await mesh.connectionIds(), [`${id}-eth1`], 'the first ADD\'s connection is kept (the refused Request is not rolled back)')
  const ok = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth1', stdin: { ...conf, prevResult: res } })
  t.equal(ok.exitCode, 0, ok.stdout)
  const noPrev = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth1', stdin: { ...conf, prevResult: { ...res, ips: [] } } })
  t.equal(noPrev.json?.code, 110, `CHECK with a prevResult lacking the address: ${noPrev.stdout}`)
  ip(pod.name, 'link', 'del', 'eth1')
  const bad = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'eth1', stdin: { ...conf, prevResult: res } })
  t.equal(bad.exitCode, 1)
  t.equal(bad.json?.code, 110, bad.stdout)
  t.match(String(bad.json?.msg), /link-missing/)
  const unknown = await mesh.cni({ command: 'CHECK', containerId: `${id}-x`, netns: pod.path, ifname: 'eth1', stdin: { ...conf, prevResult: res } })
  t.equal(unknown.json?.code, 3, `CHECK of an attachment never added: ${unknown.stdout}`)
})

t.test('DEL without CNI_NETNS, and after the netns is gone, succeeds and cleans up', async (t) => {
  const conf = mesh.conf({ networkService: WEB })
  const a = makeNetns(t, 'p')
  resultOf(await mesh.cni({ command: 'ADD', containerId: `nons-${a.name}`, netns: a.path, ifname: 'net1', stdin: conf }))
  const d1 = await mesh.cni({ command: 'DEL', containerId: `nons-${a.name}`, ifname: 'net1', stdin: conf })
  t.equal(d1.exitCode, 0, d1.stdout)
  t.same(linkNames(a.name), ['lo'])

  const b = makeNetns(t, 'p')
  resultOf(await mesh.cni({ command: 'ADD', containerId: `gone-${b.name}`, netns: b.path, ifname: 'net1', stdin: conf }))
  removeNetns(b.name)
  const d2 = await mesh.cni({ command: 'DEL', containerId: `gone-${b.name}`, netns: b.path, ifname: 'net1', stdin: conf })
  t.equal(d2.exitCode, 0, d2.stdout)
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side of both is gone')
  const unknown = await mesh.cni({ command: 'DEL', containerId: 'never-added', netns: '/var/run/netns/never', ifname: 'net1', stdin: conf })
  t.equal(unknown.exitCode, 0, 'DEL of an unknown container succeeds')
})

t.test('Multus delegate: IgnoreUnknown K8S_* CNI_ARGS and runtimeConfig; pod labels reach the agent', async (t) => {
  const pod = makeNetns(t, 'p')
  mesh.pod('team-a', 'web-7', { labels: { tier: 'front' } })
  const conf = mesh.conf({ cniVersion: '1.0.0', networkService: WEB, labels: { app: 'web' }, runtimeConfig: { mac: '02:00:00:00:00:01' } })
  const args = `IgnoreUnknown=true;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-7;K8S_POD_INFRA_CONTAINER_ID=mc-${pod.name};K8S_POD_UID=1234-5678`
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: `mc-${pod.name}`, netns: pod.path, ifname: 'net1', args, stdin: conf }))
  t.equal((res.interfaces as Array<{ name: string }>)[0]?.name, 'net1')
  t.equal(linkNames(pod.name).includes('net1'), true)
  const made = (await mesh.connections()).filter((c) => c.id === `mc-${pod.name}-net1`)
  t.same(made[0]?.labels, { app: 'web', tier: 'front', podName: 'web-7', namespace: 'team-a', nodeName: 'node-a' }, 'client labels: netconf + pod + podName, namespace, nodeName')
  const del = await mesh.cni({ command: 'DEL', containerId: `mc-${pod.name}`, netns: pod.path, ifname: 'net1', args, stdin: conf })
  t.equal(del.exitCode, 0)
  t.same(linkNames(pod.name), ['lo'])

  const strict = await mesh.cni({ command: 'ADD', containerId: `mc2-${pod.name}`, netns: pod.path, ifname: 'net1', args: 'K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-7;K8S_POD_UID=1;FOO=bar', stdin: conf })
  t.equal(strict.json?.code, 4, 'an unknown CNI_ARGS key without IgnoreUnknown is refused (4)')
  t.match(String(strict.json?.msg), /FOO/)
  t.same(linkNames(pod.name), ['lo'], 'nothing was made')
})

t.test('services from args.cni.networkServices and CNI_ARGS NSM_NETWORK_SERVICES', async (t) => {
  for (const [label, extra, args] of [
    ['args.cni', { args: { cni: { networkServices: [`kernel://${WEB}`] } } }, ''],
    ['CNI_ARGS', {}, `NSM_NETWORK_SERVICES=${WEB}`],
  ] as const) {
    const pod = makeNetns(t, 'p')
    const conf = mesh.conf(extra)
    const out = await mesh.cni({ command: 'ADD', containerId: `src-${pod.name}`, netns: pod.path, ifname: 'net1', args, stdin: conf })
    resultOf(out)
    t.ok(linkNames(pod.name).includes('net1'), `${label}: net1 made`)
    t.equal((await mesh.cni({ command: 'DEL', containerId: `src-${pod.name}`, netns: pod.path, ifname: 'net1', args, stdin: conf })).exitCode, 0)
  }
  t.same(await mesh.connectionIds(), [])
})
