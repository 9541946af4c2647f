// What an NSM client's connection says to the agent's selection, through a real agent process and real
// datapaths (agent/pipeline/select.ts): a Request naming `network_service_endpoint_name` lands on that
// endpoint or fails with NO_ENDPOINT naming it; re-sending the agent's own answer keeps the connection
// where it is; `state: RESELECT_REQUESTED` moves it to another endpoint (the old veth gone, the new one
// carrying traffic) and stays put when the previous endpoint is the only one; healing away from a named
// endpoint that went away is not held to the name.
import t from 'tap'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { State, type Connection } from '../../proto/gen/networkservice/connection'
import { GrpcStatus } from '../../pkg/codes'
import { startAgent, type RunningAgent } from '../lib/agent'
import { linkNames, makeNetns, sh } from '../lib/netns'
import { endpointRegistration, kernelRequest, seedAgent } from '../lib/mesh'

const request = (agent: RunningAgent, connection: Connection) =>
  agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, { connection, mechanismPreferences: [] })

/** The endpoint-side links of a netns (all but lo). */
const endpointLinks = (ns: string): string[] => linkNames(ns).filter((n) => n !== 'lo')

/** One ping from a netns to an address; true when it was answered. */
function pings(ns: string, address: string): boolean {
  try {
    sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '2', address])
    return true
  } catch {
    return false
  }
}

const addressOf = (cidr: string | undefined): string => (cidr ?? '').split('/')[0] ?? ''

t.test('network_service_endpoint_name pins; the answer re-sent stays; RESELECT_REQUESTED moves; heal is not pinned', async (t) => {
  const client = makeNetns(t, 'cl')
  const a = makeNetns(t, 'ea')
  const b = makeNetns(t, 'eb')
  const agent = await startAgent(t)
  await seedAgent(agent.client, a.path, ['172.16.1.0/24'], 'fw-a')
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: 'fw-b', netns: b.path, labels: { app: 'firewall' }, pools: ['172.16.2.0/24'] }))

  // Pinned to fw-b, twice in a row (round-robin alone would alternate).
  const base = kernelRequest('rs-nsm0', client.path, 'nsm0')
  const pinned = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, { ...base, connection: { ...(base.connection as Connection), networkServiceEndpointName: 'fw-b' } })
  t.equal(pinned.networkServiceEndpointName, 'fw-b')
  t.match(pinned.context?.ipContext?.srcIpAddrs, ['172.16.2.1/32'], "an address from fw-b's pool")
  t.equal(endpointLinks(b.name).length, 1, "the endpoint side is in fw-b's netns")
  t.same(endpointLinks(a.name), [], "nothing in fw-a's")
  const other = kernelRequest('rs-nsm1', client.path, 'nsm1')
  const second = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, { ...other, connection: { ...(other.connection as Connection), networkServiceEndpointName: 'fw-b' } })
  t.equal(second.networkServiceEndpointName, 'fw-b', 'a second pinned connection: fw-b again')
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, second)

  // A name nobody registered: NO_ENDPOINT (gRPC NOT_FOUND) naming it and the service; nothing made.
  const missing = kernelRequest('rs-nsm2', client.path, 'nsm2')
  await t.rejects(
    agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, { ...missing, connection: { ...(missing.connection as Connection), networkServiceEndpointName: 'fw-gone' } }),
    { code: GrpcStatus.NOT_FOUND, agentCode: 'NO_ENDPOINT', message: /network_service_endpoint_name: endpoint fw-gone is not registered \(network service secure-intranet-connectivity\)/ },
  )
  t.notOk(linkNames(client.name).includes('nsm2'), 'no interface for the refused request')

  // The client re-sends the agent's answer (it names fw-b): a refresh, nothing moves.
  const refreshed = await request(agent, pinned)
  t.equal(refreshed.networkServiceEndpointName, 'fw-b')
  t.same(refreshed.context?.ipContext?.srcIpAddrs, pinned.context?.ipContext?.srcIpAddrs)
  t.ok(pings(client.name, addressOf(refreshed.context?.ipContext?.dstIpAddrs[0])), 'traffic to fw-b')

  // RESELECT_REQUESTED (the old answer echoed back, naming fw-b): moved to fw-a, fw-b's side removed.
  const moved = await request(agent, { ...refreshed, state: State.RESELECT_REQUESTED })
  t.equal(moved.networkServiceEndpointName, 'fw-a', 'reselected onto the other endpoint')
  t.equal(moved.state, State.UP)
  t.match(moved.context?.ipContext?.srcIpAddrs, ['172.16.1.1/32'], "an address from fw-a's pool")
  t.same(endpointLinks(b.name), [], "fw-b's side of the old datapath is gone")
  t.equal(endpointLinks(a.name).length, 1)
  t.equal(linkNames(client.name).filter((n) => n === 'nsm0').length, 1, 'the client keeps one nsm0')
  t.ok(pings(client.name, addressOf(moved.context?.ipContext?.dstIpAddrs[0])), 'traffic to fw-a')

  // Pinned to fw-a now; fw-a goes away: healing moves it to fw-b, the name notwithstanding.
  const onA = await request(agent, moved)
  t.equal(onA.networkServiceEndpointName, 'fw-a')
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'fw-a' })
  const deadline = Date.now() + 10_000
  while (endpointLinks(b.name).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  t.equal(endpointLinks(b.name).length, 1, 'healed onto fw-b')
  t.same(endpointLinks(a.name), [], "fw-a's side gone")

  // fw-b is now the only endpoint: RESELECT_REQUESTED chooses it again, and the datapath still works.
  const healed = await request(agent, { ...onA, networkServiceEndpointName: '' })
  t.equal(healed.networkServiceEndpointName, 'fw-b')
  const again = await request(agent, { ...healed, state: State.RESELECT_REQUESTED })
  t.equal(again.networkServiceEndpointName, 'fw-b', 'the only candidate: chosen again')
  t.ok(pings(client.name, addressOf(again.context?.ipContext?.dstIpAddrs[0])), 'traffic to fw-b')

  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, again)
  t.same(linkNames(client.name), ['lo'])
  t.same(endpointLinks(b.name), [])
  t.same(endpointLinks(a.name), [])
})
