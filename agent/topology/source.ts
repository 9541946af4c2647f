// The topology page's data, read in-process: the same answers the agent's API gives nsmctl (ListNodes, the
// service registry, ListEndpoints, ListConnections), from the connection table, the registry and the node
// records, with their change notifications.
import type { ConnectionTable } from '../connections/table.js'
import type { Registry } from '../registry/registry.js'
import { connectionRecords, nodeList } from '../server/nsmcni-service.js'
import type { NodeRecord } from '../store/nodes.js'
import type { TopologySource } from './web.js'

export function agentTopologySource(opts: { nodeName: string; table: ConnectionTable; registry: Registry; nodes?: { store: string; list(): NodeRecord[] } | undefined }): TopologySource {
  return {
    snapshot: () => {
      const nodes = nodeList(opts.nodeName, opts.nodes)
      return {
        self: opts.nodeName,
        store: nodes.store,
        // A file store's one record is stamped now: left out, or the page would change at every look.
        nodes: opts.nodes === undefined ? nodes.nodes.map((n) => ({ ...n, lastSeen: undefined })) : nodes.nodes,
        services: opts.registry.findServices(),
        endpoints: opts.registry.findEndpoints().map((e) => ({ endpoint: e.endpoint, extension: e.extension })),
        connections: connectionRecords(opts.table).connections,
      }
    },
    subscribe: (onChange) => {
      const offTable = opts.table.subscribe(() => onChange())
      const offRegistry = opts.registry.subscribe(() => onChange())
      return () => {
        offTable()
        offRegistry()
      }
    },
  }
}
