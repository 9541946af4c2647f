// Endpoint pods through dist/nsm: a pod annotated `endpoint.networkservicemesh.io` is registered with the
// agent at ADD (its netns, pod + entry labels, cidr pool, offered routes, an expiry years away), a client
// attached to the service reaches it and the prefix behind it, and DEL unregisters it, also when the pod
// is no longer known to the agent (the name comes from the container id). An endpoint pod's second ADD is
// 106 (the plugin's Check, before registering) and leaves the first ADD's registration alone.
import t from 'tap'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { ip, linkNames, makeNetns, sh } from '../lib/netns'
import { resultOf, startMesh, WEB } from './nsm-fixture'
import { rmSync } from 'node:fs'
import { join } from 'node:path'

const mesh = await startMesh(t)

const ping = (ns: string, addr: string): boolean => {
  try {
    sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', addr])
    return true
  } catch {
    return false
  }
}

t.test('an endpoint pod is registered at ADD, serves a client, and is unregistered at DEL', async (t) => {
  const epPod = makeNetns(t, 'e')
  const epId = `EpPod_${epPod.name}`
  ip(epPod.name, 'addr', 'add', '10.50.0.1/32', 'dev', 'lo')
  await mesh.admit(WEB, { endpointNamespaces: ['db'] })
  mesh.pod('db', 'db-0', { labels: { app: 'db' }, annotations: { 'endpoint.networkservicemesh.io': `${WEB}?role=primary&cidr=172.31.5.0/24&route=10.50.0.0/16` } })
  const epArgs = `IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0`
  const conf = mesh.conf()
  // Chained after an empty prevResult: the pod asks for no service, it only offers one.
  const epRes = resultOf(await mesh.cni({ command: 'ADD', containerId: epId, netns: epPod.path, ifname: 'eth0', args: epArgs, stdin: { ...conf, prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } } }))
  t.same(epRes.interfaces, [], 'the endpoint pod gets no nsm interface')
  const regs = await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
  t.equal(regs.endpoints.length, 1)
  const reg = regs.endpoints[0]
  const name = reg?.endpoint?.name ?? ''
  t.match(name, new RegExp(`^${WEB}\\.cnh-eppod-${epPod.name.toLowerCase()}-[0-9a-f]{16}$`), 'named <service>.cnh-<clean id>-<hash> (the id had upper case and _)')
  t.same(reg?.endpoint?.networkServiceNames, [WEB])
  t.same(reg?.endpoint?.networkServiceLabels[WEB]?.labels, { app: 'db', role: 'primary' }, 'pod labels + entry labels')
  t.equal(reg?.endpoint?.url, `file://${epPod.path}`)
  t.same(reg?.extension?.cidrPools, ['172.31.5.0/24'])
  t.same(reg?.extension?.routes, [{ prefix: '10.50.0.0/16', nextHop: '' }])
  t.ok((reg?.endpoint?.expirationTime?.seconds ?? 0) > Date.now() / 1000 + 5 * 365 * 24 * 3600, 'expires years from now: CNI registrations are never refreshed')

  const client = makeNetns(t, 'c')
  const cRes = resultOf(await mesh.cni({ command: 'ADD', containerId: `cl-${client.name}`, netns: client.path, ifname: 'net1', stdin: mesh.conf({ networkService: WEB }) }))
  const peer = (cRes.routes as Array<{ dst: string; gw?: string }>).find((r) => r.gw === undefined)?.dst.split('/')[0] ?? ''
  t.match(peer, /^172\.31\.5\.\d+$/, 'the client got an address pair from the endpoint pod\'s pool')
  t.ok(linkNames(epPod.name).some((n) => n.startsWith('nsm-')), 'the endpoint side is in the endpoint pod')
  t.ok(ping(client.name, peer), 'the client pings the endpoint pod')
  t.ok(ping(client.name, '10.50.0.1'), 'and the prefix it offers (10.50.0.1 behind it)')
  t.equal((await mesh.cni({ command: 'DEL', containerId: `cl-${client.name}`, netns: client.path, ifname: 'net1', stdin: mesh.conf({ networkService: WEB }) })).exitCode, 0)

  // The pod is gone from the API before the DEL: the registration is still found by container id.
  rmSync(join(mesh.podInfoDir, 'db_db-0.json'))
  const del = await mesh.cni({ command: 'DEL', containerId: epId, netns: epPod.path, ifname: 'eth0', args: epArgs, stdin: { ...conf, prevResult: epRes } })
  t.equal(del.exitCode, 0, del.stdout)
  t.same(await mesh.endpointNames(), [], 'unregistered')
  t.same(linkNames(epPod.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('an endpoint that is also a client (the seed\'s firewall): registered before its own request', async (t) => {
  const gw = makeNetns(t, 'g')
  await mesh.endpoint({ name: 'vpn-gateway', netns: gw.path, service: 'secure-intranet-connectivity', labels: { app: 'vpn-gateway' }, pools: ['172.31.9.0/24'], routes: ['10.60.0.0/16'] })
  t.teardown(async () => {
    await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'vpn-gateway' }).catch(() => undefined)
  })
  ip(gw.name, 'addr', 'add', '10.60.0.1/32', 'dev', 'lo')
  const fw = makeNetns(t, 'f')
  await mesh.admit('secure-intranet-connectivity', { namespace: 'sec' })
  mesh.pod('sec', 'firewall', {
    labels: { app: 'firewall' },
    annotations: {
      'endpoint.networkservicemesh.io': 'secure-intranet-connectivity?app=firewall&cidr=172.31.8.0/24&route=10.60.0.0/16',
      'ns.networkservicemesh.io': 'secure-intranet-connectivity/up0',
    },
  })
  const fwArgs = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=sec;K8S_POD_NAME=firewall'
  const conf = mesh.conf()
  const prev = { cniVersion: '1.1.0', interfaces: [], ips: [] }
  const fwRes = resultOf(await mesh.cni({ command: 'ADD', containerId: `fw-${fw.name}`, netns: fw.path, ifname: 'eth0', args: fwArgs, stdin: { ...conf, prevResult: prev } }))
  t.same((fwRes.interfaces as Array<{ name: string }>).map((i) => i.name), ['up0'], 'the firewall is connected upstream (app=firewall → vpn-gateway)')
  const client = makeNetns(t, 'c')
  mesh.pod('sec', 'client', { labels: { app: 'client' }, annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity' } })
  const cArgs = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=sec;K8S_POD_NAME=client'
  const cRes = resultOf(await mesh.cni({ command: 'ADD', containerId: `cl-${client.name}`, netns: client.path, ifname: 'eth0', args: cArgs, stdin: { ...conf, prevResult: prev } }))
  t.match((cRes.ips as Array<{ address: string }>)[0]?.address, /^172\.31\.8\./, 'the client is connected to the firewall')
  t.ok(ping(client.name, '10.60.0.1'), 'the client reaches the intranet behind the gateway, through the firewall')
  for (const [id, ns, args, res] of [[`cl-${client.name}`, client, cArgs, cRes], [`fw-${fw.name}`, fw, fwArgs, fwRes]] as const) {
    const d = await mesh.cni({ command: 'DEL', containerId: id, netns: ns.path, ifname: 'eth0', args, stdin: { ...conf, prevResult: res } })
    t.equal(d.exitCode, 0, d.stdout)
  }
  t.same(await mesh.endpointNames(), ['vpn-gateway'], 'the firewall\'s registration is gone')
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(gw.name), ['lo'])
})

t.test('an endpoint pod\'s second ADD is 106 before registering: the first ADD\'s registration and connection survive', async (t) => {
  const gw = makeNetns(t, 'g')
  await mesh.endpoint({ name: 'vpn-gw-twice', netns: gw.path, service: 'secure-intranet-connectivity', labels: { app: 'vpn-gateway' }, pools: ['172.31.10.0/24'] })
  t.teardown(async () => {
    await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'vpn-gw-twice' }).catch(() => undefined)
  })
  const fw = makeNetns(t, 'f')
  await mesh.admit('secure-intranet-connectivity', { namespace: 'sec' })
  mesh.pod('sec', 'fw-twice', {
    labels: { app: 'firewall' },
    annotations: {
      'endpoint.networkservicemesh.io': 'secure-intranet-connectivity?app=firewall&cidr=172.31.11.0/24',
      'ns.networkservicemesh.io': 'secure-intranet-connectivity/up0',
    },
  })
  const id = `fw2-${fw.name}`
  const call = { containerId: id, netns: fw.path, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=sec;K8S_POD_NAME=fw-twice' }
  const stdin = { ...mesh.conf(), prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } }
  const res = resultOf(await mesh.cni({ ...call, command: 'ADD', stdin }))
  t.teardown(() => mesh.cni({ ...call, command: 'DEL', stdin: { ...stdin, prevResult: res } }).then(() => undefined))
  const registrations = async () => (await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints.filter((e) => e.endpoint?.name.endsWith(`.cni-${id}`) === true)
  const snapshot = async () => ({ regs: await registrations(), conns: await mesh.connectionIds(), links: linkNames(fw.name).sort(), gw: linkNames(gw.name).length })
  const before = await snapshot()
  t.equal(before.regs.length, 1, 'the firewall pod is registered as an endpoint')
  t.same(before.conns, [`${id}-up0`])
  const twice = await mesh.cni({ ...call, command: 'ADD', stdin })
  t.equal(twice.json?.code, 106, twice.stdout)
  t.equal(twice.json?.msg, `container ${id} interface eth0 is already attached to network nsm-net (connections ${id}-up0): DEL it first`)
  t.same(await snapshot(), before, 'the registration (not re-made: same expiry), the connection and the links are as they were')
  const del = await mesh.cni({ ...call, command: 'DEL', stdin: { ...stdin, prevResult: res } })
  t.equal(del.exitCode, 0, del.stdout)
  t.same(await registrations(), [], 'DEL unregisters it')
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(fw.name), ['lo'])
  t.same(linkNames(gw.name), ['lo'])
})
