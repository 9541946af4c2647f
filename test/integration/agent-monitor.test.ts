// NetworkService Request/Close and MonitorConnections through the agent's socket, in real namespaces:
// the initial state transfer, UPDATE on request, DELETE on close; CHECK and GC of CNI attachments (sent as
// nsmcni-* metadata, as the CNI plugin does); a bad request is INVALID_ARGUMENT naming the field and
// changes nothing. Asserts the API a client sees; the kernel side is the pipeline's tests' job.
import t, { type Test } from 'tap'
import { ConnectionEventType, MonitorConnectionDefinition, State, type ConnectionEvent } from '../../proto/gen/networkservice/connection.js'
import { NetworkServiceDefinition, NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { NetworkService, NetworkServiceRegistryDefinition as NS_REG, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { AgentDefinition, EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import { GrpcCallError } from '../../agent/client/client.js'
import { GrpcStatus } from '../../pkg/codes.js'
import { makeNetns, uniqueName } from '../lib/netns.js'
import { collect, startAgent, type RunningAgent } from '../lib/agent.js'

const SERVICE = 'monitor-test'

async function setup(t: Test): Promise<{ agent: RunningAgent; client: string; endpoint: string }> {
  const agent = await startAgent(t)
  const client = makeNetns(t, 'mc')
  const endpoint = makeNetns(t, 'me')
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: SERVICE, payload: 'IP' }))
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
    endpoint: NetworkServiceEndpoint.fromPartial({ name: `nse-${endpoint.name.toLowerCase()}`, networkServiceNames: [SERVICE], url: `file://${endpoint.path}` }),
    extension: EndpointExtension.fromPartial({ netnsPath: endpoint.path, cidrPools: ['172.31.7.0/24'] }),
  })
  return { agent, client: client.path, endpoint: endpoint.path }
}

function request(id: string, clientNetns: string, ifname: string): NetworkServiceRequest {
  return NetworkServiceRequest.fromPartial({
    connection: { id, networkService: SERVICE, labels: { app: 'web' } },
    mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: `file://${clientNetns}` } }],
  })
}

t.test('monitor: initial state, update on request, delete on close', async (t) => {
  const { agent, client } = await setup(t)
  const first = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, request('conn-1', client, 'nsm-1'))
  t.equal(first.id, 'conn-1')
  t.equal(first.state, State.UP)
  t.equal(first.networkService, SERVICE)

  const events = collect<ConnectionEvent>((on, signal) =>
    agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, on, { signal }),
  )
  t.teardown(() => events.cancel())
  const initial = await events.until((e) => e.type === ConnectionEventType.INITIAL_STATE_TRANSFER)
  t.same(Object.keys(initial.connections), ['conn-1'], 'initial state holds the existing connection')

  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, request('conn-2', client, 'nsm-2'))
  const update = await events.until((e) => e.type === ConnectionEventType.UPDATE && e.connections['conn-2'] !== undefined)
  t.equal(update.connections['conn-2']?.state, State.UP)

  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, first)
  const del = await events.until((e) => e.type === ConnectionEventType.DELETE)
  t.same(Object.keys(del.connections), ['conn-1'], 'delete names the closed connection')

  const rest = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, update.connections['conn-2']!)
  t.same(rest, {})
  await events.until((e) => e.type === ConnectionEventType.DELETE && e.connections['conn-2'] !== undefined)
  const status = await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.connections, 0, 'table empty after both closes')
})

t.test('bad request: INVALID_ARGUMENT naming the field, nothing changed', async (t) => {
  const { agent, client } = await setup(t)
  const bad = request('conn-bad', client, 'nsm-1')
  bad.connection!.networkService = ''
  try {
    await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, bad)
    t.fail('expected INVALID_ARGUMENT')
  } catch (err) {
    t.ok(err instanceof GrpcCallError)
    t.equal((err as GrpcCallError).code, GrpcStatus.INVALID_ARGUMENT)
    t.equal((err as GrpcCallError).agentCode, 'INVALID_ARGUMENT')
    t.equal((err as GrpcCallError).cniCode, 7)
    t.match((err as GrpcCallError).message, /network_service/)
  }
  const status = await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.connections, 0)
})
