// CNI DEL in one agent round trip: dist/nsm's DEL is one /nsmcni.Agent/Detach call (counted as HTTP/2
// request streams by a proxy in front of the agent, and as the agent's one log line per Detach), after an
// attachment-mode ADD, a chained ADD with two interfaces and an endpoint pod's ADD, and leaves no
// connection, link or registration; repeated, without CNI_NETNS, after the netns is gone, for an unknown
// container, and when the table lost the attachment, it still succeeds. Detach with bad input is
// INVALID_ARGUMENT naming the field and changes nothing. Against an agent without Detach (served from
// this process) DEL falls back to the call-by-call sequence and cleans up the same; against one whose
// Close fails, DEL is 11, stops at that connection, and the retried DEL finishes the job.
import t from 'tap'
import { endpointKey, endpointName } from '../../conf/endpoint-names'
import { GrpcCallError } from '../../agent/client/grpc-http2'
import { Connection } from '../../proto/gen/networkservice/connection'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition, type DetachRequest } from '../../proto/gen/nsmcni/nsmcni'
import { execPlugin, type CniCall } from '../conformance/exec'
import { tapGrpc } from '../lib/grpc-tap'
import { kernelRequest } from '../lib/mesh'
import { linkNames, makeNetns, removeNetns } from '../lib/netns'
import { startInProcessAgent } from './nsm-inprocess-agent'
import { resultOf, stageNsm, startMesh, WEB } from './nsm-fixture'

const DETACH = '/nsmcni.Agent/Detach'
const OFFER = 'del-offer'

const mesh = await startMesh(t)
const tap = await tapGrpc(t, mesh.socket)
await mesh.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: OFFER, payload: 'IP', matches: [], pathIds: [] })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'del-web-ep', netns: ep.path, pools: ['172.30.9.0/24'] })
/** A netconf whose socket is the counting proxy. */
const conf = (extra: Record<string, unknown> = {}) => mesh.conf({ socket: tap.socket, ...extra })
const detachLines = () => mesh.agent.logs.filter((l) => l.msg === 'detached' || l.msg === 'detach failed')

/** Waits (bounded) for the agent's log line of the `n`-th Detach: stdout may arrive after the reply. */
async function nthDetachLine(n: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 500 && detachLines().length < n; i++) await new Promise((r) => setTimeout(r, 10))
  const line = detachLines()[n - 1]
  if (line === undefined) throw new Error(`no log line for Detach #${n}: ${JSON.stringify(detachLines())}`)
  return line
}

/** A DEL through the proxy: its outcome, the calls it made, and the agent's log line for its Detach. */
async function del(call: Omit<CniCall, 'command'>): Promise<{ exitCode: number; stdout: string; paths: string[]; line: Record<string, unknown> | undefined }> {
  tap.reset()
  const before = detachLines().length
  const out = await mesh.cni({ ...call, command: 'DEL' })
  const paths = [...tap.paths]
  const line = paths.includes(DETACH) ? await nthDetachLine(before + 1) : undefined
  return { exitCode: out.exitCode, stdout: out.stdout, paths, line }
}

t.test('attachment mode: one Detach; no connection or link left; repeated, without CNI_NETNS, netns gone, unknown container', async (t) => {
  const c = conf({ networkService: WEB })
  const pod = makeNetns(t, 'p')
  const id = `att-${pod.name}`
  const call = { containerId: id, netns: pod.path, ifname: 'net1', stdin: c }
  const res = resultOf(await mesh.cni({ ...call, command: 'ADD' }))
  t.teardown(() => mesh.cni({ ...call, command: 'DEL' }).then(() => undefined))
  t.ok(linkNames(pod.name).includes('net1'))
  t.same(await mesh.connectionIds(), [`${id}-net1`])

  const d = await del({ ...call, stdin: { ...c, prevResult: res } })
  t.equal(d.exitCode, 0, d.stdout)
  t.same(d.paths, [DETACH], 'DEL is one agent call')
  t.match(d.line, { msg: 'detached', network: 'nsm-net', containerId: id, ifname: 'net1', netns: pod.path, closed: [`${id}-net1`], unregistered: [] }, 'the agent logs one line per Detach')
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone too')
  t.same(await mesh.connectionIds(), [])

  const again = await del(call)
  t.equal(again.exitCode, 0, 'a repeated DEL succeeds')
  t.same(again.paths, [DETACH])
  t.match(again.line, { msg: 'detached', closed: [], unregistered: [] })

  // Without CNI_NETNS (the runtime no longer knows it): the agent still tears the datapath down.
  const pod2 = makeNetns(t, 'p')
  const id2 = `nons-${pod2.name}`
  resultOf(await mesh.cni({ ...call, containerId: id2, netns: pod2.path, command: 'ADD' }))
  t.teardown(() => mesh.cni({ ...call, containerId: id2, netns: pod2.path, command: 'DEL' }).then(() => undefined))
  const nons = await del({ ...call, containerId: id2, netns: '' })
  t.equal(nons.exitCode, 0, nons.stdout)
  t.same(nons.paths, [DETACH])
  t.match(nons.line, { netns: '', closed: [`${id2}-net1`] })
  t.same(linkNames(pod2.name), ['lo'])
  t.same(await mesh.connectionIds(), [])

  // After the netns is gone.
  const pod3 = makeNetns(t, 'p')
  const id3 = `gone-${pod3.name}`
  resultOf(await mesh.cni({ ...call, containerId: id3, netns: pod3.path, command: 'ADD' }))
  t.teardown(() => mesh.cni({ ...call, containerId: id3, netns: pod3.path, command: 'DEL' }).then(() => undefined))
  removeNetns(pod3.name)
  const gone = await del({ ...call, containerId: id3, netns: pod3.path })
  t.equal(gone.exitCode, 0, gone.stdout)
  t.same(gone.paths, [DETACH])
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(ep.name), ['lo'])

  const unknown = await del({ ...call, containerId: 'never-added', netns: '/var/run/netns/never' })
  t.equal(unknown.exitCode, 0, 'DEL of an unknown container succeeds')
  t.same(unknown.paths, [DETACH])
})

t.test('attachment mode: the conventional id is closed when the table lost the attachment', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `lost-${pod.name}`
  // A Request without the nsmcni-* attachment metadata: the table has the connection, not its attachment.
  await mesh.agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`${id}-net1`, pod.path, 'net1', {}, WEB))
  t.teardown(() => mesh.agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, Connection.fromPartial({ id: `${id}-net1` })).then(() => undefined))
  t.ok(linkNames(pod.name).includes('net1'))
  const d = await del({ containerId: id, netns: pod.path, ifname: 'net1', stdin: conf({ networkService: WEB }) })
  t.equal(d.exitCode, 0, d.stdout)
  t.same(d.paths, [DETACH])
  t.match(d.line, { closed: [`${id}-net1`] })
  t.same(linkNames(pod.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('chained mode, two interfaces: one Detach closes both', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `chain-${pod.name}`
  mesh.pod('default', 'del-chain', { annotations: { 'networkservicemesh.io': `kernel://${WEB}, kernel://${WEB}/eth2` } })
  const args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=del-chain'
  const prevResult = { cniVersion: '1.1.0', interfaces: [], ips: [] }
  const call = { containerId: id, netns: pod.path, ifname: 'eth0', args }
  const res = resultOf(await mesh.cni({ ...call, command: 'ADD', stdin: conf({ prevResult }) }))
  t.teardown(() => mesh.cni({ ...call, command: 'DEL', stdin: conf({ prevResult: res }) }).then(() => undefined))
  t.same(linkNames(pod.name).sort(), ['eth2', 'lo', 'nsm-1'])
  t.same(await mesh.connectionIds(), [`${id}-eth2`, `${id}-nsm-1`])

  const d = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(d.exitCode, 0, d.stdout)
  t.same(d.paths, [DETACH], 'no pod lookup, no Check: one call')
  t.same((d.line?.closed as string[] | undefined)?.sort(), [`${id}-eth2`, `${id}-nsm-1`])
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
  const again = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(again.exitCode, 0)
  t.same(again.paths, [DETACH])
})

t.test('an endpoint pod that is also a client: one Detach closes its connection and ends its registration, and no other', async (t) => {
  const pod = makeNetns(t, 'e')
  const id = `EpDel_${pod.name}`
  mesh.pod('db', 'del-ep', { labels: { app: 'db' }, annotations: { 'endpoint.networkservicemesh.io': `${OFFER}?cidr=172.31.9.0/24`, 'networkservicemesh.io': `kernel://${WEB}` } })
  // Endpoints that must survive: one named for a container whose id starts with this one's, one by nsmctl.
  const other = makeNetns(t, 'o')
  const decoys = [endpointName(OFFER, `${id}-2`), `${OFFER}-by-hand`]
  for (const name of decoys) {
    await mesh.endpoint({ name, service: OFFER, netns: other.path, pools: ['172.31.10.0/24'] })
    t.teardown(() => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name }).then(() => undefined, () => undefined))
  }
  const args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=del-ep'
  const call = { containerId: id, netns: pod.path, ifname: 'eth0', args }
  const res = resultOf(await mesh.cni({ ...call, command: 'ADD', stdin: conf({ prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } }) }))
  t.teardown(() => mesh.cni({ ...call, command: 'DEL', stdin: conf({ prevResult: res }) }).then(() => undefined))
  const mine = endpointName(OFFER, id)
  t.match(mine, new RegExp(`\\.${endpointKey(id)}$`))
  t.same(await mesh.endpointNames(), [...decoys, mine, 'del-web-ep'].sort())
  t.same(await mesh.connectionIds(), [`${id}-nsm-1`])

  // The pod is gone from the API before its DEL: nothing needs it.
  mesh.pod('db', 'del-ep', { annotations: {} })
  const d = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(d.exitCode, 0, d.stdout)
  t.same(d.paths, [DETACH], 'no ListEndpoints, no UnregisterEndpoint: one call')
  t.match(d.line, { closed: [`${id}-nsm-1`], unregistered: [mine] })
  t.same(await mesh.endpointNames(), [...decoys, 'del-web-ep'].sort(), 'its registration is gone, the others are not')
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'])
  const again = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(again.exitCode, 0)
  t.match(again.line, { closed: [], unregistered: [] })
})

t.test('Detach with bad input is INVALID_ARGUMENT naming the field and changes nothing', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `bad-${pod.name}`
  const c = conf({ networkService: WEB })
  const call = { containerId: id, netns: pod.path, ifname: 'net1', stdin: c }
  resultOf(await mesh.cni({ ...call, command: 'ADD' }))
  t.teardown(() => mesh.cni({ ...call, command: 'DEL' }).then(() => undefined))
  const mine = endpointName(OFFER, id)
  await mesh.endpoint({ name: mine, service: OFFER, netns: pod.path, pools: ['172.31.11.0/24'] })
  t.teardown(() => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: mine }).then(() => undefined, () => undefined))
  const attachment = { network: 'nsm-net', containerId: id, ifname: 'net1', netns: pod.path }
  const detach = (req: DetachRequest) => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.detach, req)
  const before = detachLines().length
  const cases: Array<[DetachRequest, string]> = [
    [{ attachment: undefined, connectionIds: [] }, 'attachment'],
    [{ attachment: { ...attachment, network: '' }, connectionIds: [] }, 'attachment.network'],
    [{ attachment: { ...attachment, containerId: '' }, connectionIds: [] }, 'attachment.container_id'],
    [{ attachment: { ...attachment, ifname: '' }, connectionIds: [] }, 'attachment.ifname'],
    [{ attachment, connectionIds: [''] }, 'connection_ids[0]'],
    [{ attachment, connectionIds: [`${id}-net1`, 'someone-else-net1'] }, 'connection_ids[1]'],
  ]
  for (const [req, field] of cases) {
    const err = await detach(req).then(
      () => undefined,
      (e: unknown) => e,
    )
    t.ok(err instanceof GrpcCallError, `${field}: refused`)
    t.match(err, { code: 3, agentCode: 'INVALID_ARGUMENT', cniCode: 7 }, `${field}: INVALID_ARGUMENT`)
    t.match((err as Error).message, new RegExp(`^\\[INVALID_ARGUMENT\\] ${field.replace(/[.[\]]/g, '\\$&')}: `), `names ${field}`)
    t.same(await mesh.connectionIds(), [`${id}-net1`], `${field}: the connection is still there`)
    t.ok((await mesh.endpointNames()).includes(mine), `${field}: the endpoint is still registered`)
    t.ok(linkNames(pod.name).includes('net1'), `${field}: the interface is still there`)
  }
  await nthDetachLine(before + cases.length)
  t.ok(detachLines().slice(before).every((l) => l.msg === 'detach failed'), 'one log line per refused Detach')

  const ok = await detach({ attachment, connectionIds: [`${id}-net1`] })
  t.same(ok, { closedConnectionIds: [`${id}-net1`], unregisteredEndpoints: [mine] }, 'the response lists what was closed and unregistered')
  t.same(await mesh.connectionIds(), [])
  t.notOk((await mesh.endpointNames()).includes(mine))
  t.same(linkNames(pod.name), ['lo'])
})

t.test('an agent without Detach: DEL falls back to Check, Close, ListEndpoints, UnregisterEndpoint and cleans up the same', async (t) => {
  const binDir = await stageNsm(t)
  const old = await startInProcessAgent(t, { detach: false, services: [WEB, OFFER] })
  const oldTap = await tapGrpc(t, old.socket)
  const oldEp = makeNetns(t, 'ep')
  await old.endpoint({ name: 'old-web-ep', service: WEB, netns: oldEp.path, labels: {}, pools: ['172.30.12.0/24'] })
  const cni = (call: CniCall) => execPlugin(`${binDir}/nsm`, { path: binDir, ...call })
  const oldConf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'old-net', type: 'nsm', socket: oldTap.socket, ...extra })

  // A client in attachment mode.
  const pod = makeNetns(t, 'p')
  const call = { containerId: `old-${pod.name}`, netns: pod.path, ifname: 'net1', stdin: oldConf({ networkService: WEB }) }
  resultOf(await cni({ ...call, command: 'ADD' }))
  t.teardown(() => cni({ ...call, command: 'DEL' }).then(() => undefined))
  t.ok(linkNames(pod.name).includes('net1'))
  oldTap.reset()
  const d = await cni({ ...call, command: 'DEL' })
  t.equal(d.exitCode, 0, d.stdout)
  t.same(oldTap.paths, [DETACH, '/nsmcni.Agent/Check', '/networkservice.NetworkService/Close', '/nsmcni.Agent/ListEndpoints'], 'Detach is UNIMPLEMENTED: the call-by-call sequence')
  t.same(old.connectionIds(), [])
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(oldEp.name), ['lo'])

  // An endpoint pod, also a client (chained mode).
  const epPod = makeNetns(t, 'e')
  const id = `old-ep-${epPod.name}`
  old.pod('db', 'old-ep', { annotations: { 'endpoint.networkservicemesh.io': `${OFFER}?cidr=172.31.12.0/24`, 'networkservicemesh.io': `kernel://${WEB}` } })
  const epCall = { containerId: id, netns: epPod.path, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=old-ep' }
  const res = resultOf(await cni({ ...epCall, command: 'ADD', stdin: oldConf({ prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } }) }))
  t.teardown(() => cni({ ...epCall, command: 'DEL', stdin: oldConf({ prevResult: res }) }).then(() => undefined))
  t.same(old.endpointNames(), [endpointName(OFFER, id), 'old-web-ep'])
  t.same(old.connectionIds(), [`${id}-nsm-1`])
  oldTap.reset()
  const e = await cni({ ...epCall, command: 'DEL', stdin: oldConf({ prevResult: res }) })
  t.equal(e.exitCode, 0, e.stdout)
  t.same(oldTap.paths, [DETACH, '/nsmcni.Agent/Check', '/networkservice.NetworkService/Close', '/nsmcni.Agent/ListEndpoints', '/nsmcni.Agent/UnregisterEndpoint'])
  t.same(old.endpointNames(), ['old-web-ep'], 'its registration is gone')
  t.same(old.connectionIds(), [])
  t.same(linkNames(epPod.name), ['lo'])
  const again = await cni({ ...epCall, command: 'DEL', stdin: oldConf({ prevResult: res }) })
  t.equal(again.exitCode, 0, 'a repeated DEL succeeds on the fallback path too')
})

t.test('a Close that fails: DEL is 11, Detach stops there and keeps it; the retried DEL finishes', async (t) => {
  const binDir = await stageNsm(t)
  const agent = await startInProcessAgent(t, { detach: true, services: [WEB, OFFER] })
  const agentTap = await tapGrpc(t, agent.socket)
  const agentEp = makeNetns(t, 'ep')
  await agent.endpoint({ name: 'fail-web-ep', service: WEB, netns: agentEp.path, labels: {}, pools: ['172.30.13.0/24'] })
  const cni = (call: CniCall) => execPlugin(`${binDir}/nsm`, { path: binDir, ...call })
  const pod = makeNetns(t, 'p')
  const id = `fail-${pod.name}`
  agent.pod('db', 'fail', { annotations: { 'endpoint.networkservicemesh.io': `${OFFER}?cidr=172.31.13.0/24`, 'networkservicemesh.io': `kernel://${WEB}, kernel://${WEB}/eth2` } })
  const call = { containerId: id, netns: pod.path, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=fail' }
  const stdin = (prevResult: unknown) => ({ cniVersion: '1.1.0', name: 'fail-net', type: 'nsm', socket: agentTap.socket, prevResult })
  const res = resultOf(await cni({ ...call, command: 'ADD', stdin: stdin({ cniVersion: '1.1.0', interfaces: [], ips: [] }) }))
  t.teardown(() => {
    agent.failClose.clear()
    return cni({ ...call, command: 'DEL', stdin: stdin(res) }).then(() => undefined)
  })
  const first = agent.table.list()[0]?.connection.id ?? ''
  t.same(agent.connectionIds(), [`${id}-eth2`, `${id}-nsm-1`])
  agent.failClose.add(first)

  agentTap.reset()
  const d = await cni({ ...call, command: 'DEL', stdin: stdin(res) })
  t.equal(d.json?.code, 11, `an agent that answers but fails: try again (${d.stdout})`)
  t.equal(d.json?.msg, `Detach: close ${first}: injected close failure`)
  t.same(agentTap.paths, [DETACH], 'no fallback: the agent has Detach, it failed')
  t.same(agent.connectionIds(), [`${id}-eth2`, `${id}-nsm-1`], 'stopped at the first failure: nothing after it was closed')
  t.same(agent.endpointNames(), [endpointName(OFFER, id), 'fail-web-ep'], 'nor its endpoint unregistered')
  t.same(linkNames(pod.name).sort(), ['eth2', 'lo', 'nsm-1'])

  agent.failClose.clear()
  const retried = await cni({ ...call, command: 'DEL', stdin: stdin(res) })
  t.equal(retried.exitCode, 0, retried.stdout)
  t.same(agent.connectionIds(), [])
  t.same(agent.endpointNames(), ['fail-web-ep'])
  t.same(linkNames(pod.name), ['lo'])
})
