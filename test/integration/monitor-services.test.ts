// MonitorConnections scoped by MonitorScopeSelector.network_services (field 2, as upstream NSM has it),
// through a real agent with real connections: the initial state transfer and the UPDATE / DELETE events
// carry only connections of the listed services; with path_segments as well, a connection must match both;
// an empty list does not narrow.
import t, { type Test } from 'tap'
import { ConnectionEventType, MonitorConnectionDefinition, type Connection, type ConnectionEvent, type MonitorScopeSelector } from '../../proto/gen/networkservice/connection.js'
import { NetworkServiceDefinition, NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { NetworkService, NetworkServiceRegistryDefinition as NS_REG, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { AgentDefinition, EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import { makeNetns } from '../lib/netns.js'
import { collect, startAgent, type Collected, type RunningAgent } from '../lib/agent.js'

const SERVICES = ['svc-a', 'svc-b', 'svc-c'] as const
type Service = (typeof SERVICES)[number]

/** An agent with one endpoint per service (each its own netns and pool) and one client netns. */
async function setup(t: Test): Promise<{ agent: RunningAgent; client: string }> {
  const agent = await startAgent(t)
  const client = makeNetns(t, 'mc')
  for (const [i, service] of SERVICES.entries()) {
    const endpoint = makeNetns(t, 'me')
    await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: service, payload: 'IP' }))
    await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
      endpoint: NetworkServiceEndpoint.fromPartial({ name: `nse-${service}`, networkServiceNames: [service], url: `file://${endpoint.path}` }),
      extension: EndpointExtension.fromPartial({ netnsPath: endpoint.path, cidrPools: [`172.31.${10 + i}.0/24`] }),
    })
  }
  return { agent, client: client.path }
}

let ifindex = 0
/** A Request from the client netns for `service`, with the client's own path segment named `segment`. */
function connect(agent: RunningAgent, client: string, id: string, service: Service, segment: string): Promise<Connection> {
  ifindex += 1
  const req = NetworkServiceRequest.fromPartial({
    connection: { id, networkService: service, path: { index: 0, pathSegments: [{ name: segment, id: `${segment}-${id}`, token: 'tok' }] } },
    mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `nsm-${ifindex}`, inodeURL: `file://${client}` } }],
  })
  return agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, req)
}

function monitor(t: Test, agent: RunningAgent, selector: MonitorScopeSelector): Collected<ConnectionEvent> {
  const events = collect<ConnectionEvent>((on, signal) => agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, selector, on, { signal }))
  t.teardown(() => events.cancel())
  return events
}

const initialIds = async (events: Collected<ConnectionEvent>): Promise<string[]> =>
  Object.keys((await events.until((e) => e.type === ConnectionEventType.INITIAL_STATE_TRANSFER)).connections).sort()

/** Every connection id any event so far named (after the initial transfer). */
const seen = (events: Collected<ConnectionEvent>): string[] => events.items.filter((e) => e.type !== ConnectionEventType.INITIAL_STATE_TRANSFER).flatMap((e) => Object.keys(e.connections))

t.test('network_services scopes the initial state and the events; with path_segments both must match', async (t) => {
  const { agent, client } = await setup(t)
  const a1 = await connect(agent, client, 'a1', 'svc-a', 'nsc-1')
  await connect(agent, client, 'b1', 'svc-b', 'nsc-1')
  await connect(agent, client, 'b2', 'svc-b', 'nsc-2')
  await connect(agent, client, 'c1', 'svc-c', 'nsc-1')

  const onlyA = monitor(t, agent, { pathSegments: [], networkServices: ['svc-a'] })
  const aAndB = monitor(t, agent, { pathSegments: [], networkServices: ['svc-a', 'svc-b'] })
  const bOfNsc1 = monitor(t, agent, { pathSegments: [{ name: 'nsc-1', id: '', token: '', expires: undefined, metrics: {} }], networkServices: ['svc-b'] })
  const nsc1 = monitor(t, agent, { pathSegments: [{ name: 'nsc-1', id: '', token: '', expires: undefined, metrics: {} }], networkServices: [] })
  const everything = monitor(t, agent, { pathSegments: [], networkServices: [] })
  const nobody = monitor(t, agent, { pathSegments: [], networkServices: ['svc-none'] })

  t.same(await initialIds(onlyA), ['a1'], 'svc-a only')
  t.same(await initialIds(aAndB), ['a1', 'b1', 'b2'], 'svc-a and svc-b')
  t.same(await initialIds(bOfNsc1), ['b1'], 'svc-b AND a segment named nsc-1')
  t.same(await initialIds(nsc1), ['a1', 'b1', 'c1'], 'path segment alone: every service')
  t.same(await initialIds(everything), ['a1', 'b1', 'b2', 'c1'], 'empty selector: everything')
  t.same(await initialIds(nobody), [], 'a service with no connection: nothing')

  // Updates: b3 (svc-b, nsc-1), c2 (svc-c), then a2 as the last event everyone in scope of svc-a waits for.
  await connect(agent, client, 'b3', 'svc-b', 'nsc-1')
  await connect(agent, client, 'c2', 'svc-c', 'nsc-1')
  await connect(agent, client, 'a2', 'svc-a', 'nsc-2')
  await onlyA.until((e) => e.type === ConnectionEventType.UPDATE && e.connections.a2 !== undefined)
  await aAndB.until((e) => e.type === ConnectionEventType.UPDATE && e.connections.a2 !== undefined)
  await bOfNsc1.until((e) => e.type === ConnectionEventType.UPDATE && e.connections.b3 !== undefined)
  await everything.until((e) => e.type === ConnectionEventType.UPDATE && e.connections.a2 !== undefined)
  // Events come in table order: once everything saw a2, each stream has what it will get of b3 and c2.
  // Close a1: its DELETE goes to the svc-a streams only; then b3's close, as the last event for svc-b.
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, a1)
  await onlyA.until((e) => e.type === ConnectionEventType.DELETE && e.connections.a1 !== undefined)
  await aAndB.until((e) => e.type === ConnectionEventType.DELETE && e.connections.a1 !== undefined)
  const b3 = (await everything.until((e) => e.connections.b3 !== undefined)).connections.b3 as Connection
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, b3)
  await bOfNsc1.until((e) => e.type === ConnectionEventType.DELETE && e.connections.b3 !== undefined)
  await aAndB.until((e) => e.type === ConnectionEventType.DELETE && e.connections.b3 !== undefined)
  await everything.until((e) => e.type === ConnectionEventType.DELETE && e.connections.b3 !== undefined)

  t.same([...new Set(seen(onlyA))].sort(), ['a1', 'a2'], 'svc-a stream: only svc-a events')
  t.same([...new Set(seen(aAndB))].sort(), ['a1', 'a2', 'b3'], 'svc-a and svc-b stream: no svc-c event')
  t.same([...new Set(seen(bOfNsc1))].sort(), ['b3'], 'svc-b + nsc-1 stream: b3 only (a2 has nsc-2, c2 is svc-c)')
  t.same([...new Set(seen(everything))].sort(), ['a1', 'a2', 'b3', 'c2'])
  t.same(seen(nobody), [], 'nothing for a service nobody uses')
  await nsc1.until((e) => e.type === ConnectionEventType.DELETE && e.connections.b3 !== undefined)
  t.same([...new Set(seen(nsc1))].sort(), ['a1', 'b3', 'c2'], 'nsc-1 stream: every service, only nsc-1 connections')

  for (const c of await Promise.all(['a2', 'b1', 'b2', 'c1', 'c2'].map((id) => everything.until((e) => e.connections[id] !== undefined).then((e) => e.connections[id] as Connection)))) {
    await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)
  }
  const status = await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.connections, 0, 'all closed')
})
