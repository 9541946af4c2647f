// `nsmctl topology`: the agent's answers (ListNodes, the service registry, ListEndpoints, ListConnections)
// made into the graph of agent/topology/model.ts, printed as text, JSON or Graphviz DOT.
import type { NetworkService } from '../../proto/gen/registry/registry.js'
import { NetworkServiceRegistryDefinition as NS_REG } from '../../proto/gen/registry/registry.js'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni.js'
import type { AgentClient } from '../client/client.js'
import { buildTopology, type MeshSnapshot } from '../topology/model.js'
import { topologyDot } from '../topology/dot.js'
import { topologyText } from '../topology/text.js'

/** One agent's view of the mesh, read through its socket. */
export async function readSnapshot(client: AgentClient): Promise<MeshSnapshot> {
  const services: NetworkService[] = []
  const [status, nodes, endpoints, connections] = await Promise.all([
    client.unary(AgentDefinition, AgentDefinition.methods.status, {}),
    client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {}),
    client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' }),
    client.unary(AgentDefinition, AgentDefinition.methods.listConnections, {}),
    client.stream(NS_REG, NS_REG.methods.find, { networkService: undefined, watch: false }, (r) => {
      if (r.networkService !== undefined) services.push(r.networkService)
    }),
  ])
  return { self: status.nodeName, store: nodes.store, nodes: nodes.nodes, services, endpoints: endpoints.endpoints, connections: connections.connections }
}

export async function topology(client: AgentClient, format: 'text' | 'json' | 'dot'): Promise<string> {
  const t = buildTopology(await readSnapshot(client))
  if (format === 'json') return `${JSON.stringify(t, null, 2)}\n`
  return format === 'dot' ? topologyDot(t) : topologyText(t)
}
