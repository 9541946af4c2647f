// CNI DEL: dist/nsm forwards it to the agent, which closes the attachment's connections and unregisters
// the container's endpoints in one step (one log line per DEL), after an attachment-mode ADD, a chained ADD
// with two interfaces and an endpoint pod's ADD, and leaves no connection, link or registration;
// repeated, without CNI_NETNS, after the netns is gone, for an unknown container, and when the table lost
// the attachment, it still succeeds. Against an agent whose Close fails, DEL is 11, stops at that
// connection, and the retried DEL finishes the job.
import t from 'tap'
import { endpointKey, endpointName } from '../../conf/endpoint-names'
import { Connection } from '../../proto/gen/networkservice/connection'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { execPlugin, type CniCall } from '../conformance/exec'
import { kernelRequest } from '../lib/mesh'
import { linkNames, makeNetns, removeNetns } from '../lib/netns'
import { startInProcessAgent } from './nsm-inprocess-agent'
import { resultOf, stageNsm, startMesh, WEB } from './nsm-fixture'

const OFFER = 'del-offer'

const mesh = await startMesh(t)
await mesh.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: OFFER, payload: 'IP', matches: [], pathIds: [] })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'del-web-ep', netns: ep.path, pools: ['172.30.9.0/24'] })
const conf = (extra: Record<string, unknown> = {}) => mesh.conf(extra)
const delLines = () => mesh.agent.logs.filter((l) => l.msg === 'DEL' || l.msg === 'DEL failed')

/** Waits (bounded) for the agent's log line of the `n`-th DEL: stdout may arrive after the reply. */
async function nthDelLine(n: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 500 && delLines().length < n; i++) await new Promise((r) => setTimeout(r, 10))
  const line = delLines()[n - 1]
  if (line === undefined) throw new Error(`no log line for DEL #${n}: ${JSON.stringify(delLines())}`)
  return line
}

/** A DEL: its outcome and the agent's log line for it. */
async function del(call: Omit<CniCall, 'command'>): Promise<{ exitCode: number; stdout: string; line: Record<string, unknown> | undefined }> {
  const before = delLines().length
  const out = await mesh.cni({ ...call, command: 'DEL' })
  const line = await nthDelLine(before + 1)
  return { exitCode: out.exitCode, stdout: out.stdout, line }
}

t.test('attachment mode: one DEL; no connection or link left; repeated, without CNI_NETNS, netns gone, unknown container', async (t) => {
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
  t.match(d.line, { msg: 'DEL', network: 'nsm-net', containerId: id, ifname: 'net1', netns: pod.path, closed: [`${id}-net1`], unregistered: [] }, 'the agent logs one line per DEL')
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone too')
  t.same(await mesh.connectionIds(), [])

  const again = await del(call)
  t.equal(again.exitCode, 0, 'a repeated DEL succeeds')
  t.match(again.line, { msg: 'DEL', closed: [], unregistered: [] })

  // Without CNI_NETNS (the runtime no longer knows it): the agent still tears the datapath down.
  const pod2 = makeNetns(t, 'p')
  const id2 = `nons-${pod2.name}`
  resultOf(await mesh.cni({ ...call, containerId: id2, netns: pod2.path, command: 'ADD' }))
  t.teardown(() => mesh.cni({ ...call, containerId: id2, netns: pod2.path, command: 'DEL' }).then(() => undefined))
  const nons = await del({ ...call, containerId: id2, netns: '' })
  t.equal(nons.exitCode, 0, nons.stdout)
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
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(ep.name), ['lo'])

  const unknown = await del({ ...call, containerId: 'never-added', netns: '/var/run/netns/never' })
  t.equal(unknown.exitCode, 0, 'DEL of an unknown container succeeds')
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
  t.match(d.line, { closed: [`${id}-net1`] })
  t.same(linkNames(pod.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
})

t.test('chained mode, two interfaces: one DEL closes both', async (t) => {
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
  t.same((d.line?.closed as string[] | undefined)?.sort(), [`${id}-eth2`, `${id}-nsm-1`])
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
  const again = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(again.exitCode, 0)
})

t.test('an endpoint pod that is also a client: one DEL closes its connection and ends its registration, and no other', async (t) => {
  const pod = makeNetns(t, 'e')
  const id = `EpDel_${pod.name}`
  await mesh.admit(OFFER, { namespace: 'db' })
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
  t.match(d.line, { closed: [`${id}-nsm-1`], unregistered: [mine] })
  t.same(await mesh.endpointNames(), [...decoys, 'del-web-ep'].sort(), 'its registration is gone, the others are not')
  t.same(await mesh.connectionIds(), [])
  t.same(linkNames(pod.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'])
  const again = await del({ ...call, stdin: conf({ prevResult: res }) })
  t.equal(again.exitCode, 0)
  t.match(again.line, { closed: [], unregistered: [] })
})

t.test('a Close that fails: DEL is 11, stops there and keeps it; the retried DEL finishes', async (t) => {
  const binDir = await stageNsm(t)
  const agent = await startInProcessAgent(t, { services: [WEB, OFFER], endpointPolicy: [{ source: 'test', services: [OFFER], namespaces: ['db'], selector: {}, routes: [], pools: [] }] })
  const agentEp = makeNetns(t, 'ep')
  await agent.endpoint({ name: 'fail-web-ep', service: WEB, netns: agentEp.path, labels: {}, pools: ['172.30.13.0/24'] })
  const cni = (call: CniCall) => execPlugin(`${binDir}/nsm`, { path: binDir, ...call })
  const pod = makeNetns(t, 'p')
  const id = `fail-${pod.name}`
  agent.pod('db', 'fail', { annotations: { 'endpoint.networkservicemesh.io': `${OFFER}?cidr=172.31.13.0/24`, 'networkservicemesh.io': `kernel://${WEB}, kernel://${WEB}/eth2` } })
  const call = { containerId: id, netns: pod.path, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=fail' }
  const stdin = (prevResult: unknown) => ({ cniVersion: '1.1.0', name: 'fail-net', type: 'nsm', socket: agent.socket, prevResult })
  const res = resultOf(await cni({ ...call, command: 'ADD', stdin: stdin({ cniVersion: '1.1.0', interfaces: [], ips: [] }) }))
  t.teardown(() => {
    agent.failClose.clear()
    return cni({ ...call, command: 'DEL', stdin: stdin(res) }).then(() => undefined)
  })
  const first = agent.table.list()[0]?.connection.id ?? ''
  t.same(agent.connectionIds(), [`${id}-eth2`, `${id}-nsm-1`])
  agent.failClose.add(first)

  const d = await cni({ ...call, command: 'DEL', stdin: stdin(res) })
  t.equal(d.json?.code, 11, `an agent that answers but fails: try again (${d.stdout})`)
  t.equal(d.json?.msg, `close ${first}: injected close failure`)
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
