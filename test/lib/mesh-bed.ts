// A mesh across "nodes" on one machine (issue 12): the node bed of ./nodes.ts, a real etcd inside its
// underlay namespace (on an address of the bridge, so only the bed's nodes reach it), a throwaway PKI with
// one certificate per node (its name as the one DNS SAN), and one real dist/nsm-agent per node started
// inside its node netns with the shared store, its underlay address and a mutual-TLS peer listener.
// Everything goes at teardown (agents first), also on failure.
import { join } from 'node:path'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { startAgentInNode, makeNodes, type TestBed, type TestNode } from './nodes'
import { startEtcd, type TestEtcd } from './etcd'
import { Pki } from './pki'
import { ip } from './netns'
import { connectionsOf, tempDir, type AgentOptions, type RunningAgent } from './agent'
import { until } from './cluster'
import { endpointRegistration, kernelRequest, type EndpointSpec } from './mesh'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import type { Connection } from '../../proto/gen/networkservice/connection'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface MeshNode extends TestNode {
  /** n1, n2, ... */
  nodeName: string
  agent: RunningAgent
  /** The agent's directory (reused on restart). */
  dir: string
  args: string[]
}

export interface MeshBed {
  bed: TestBed
  etcd: TestEtcd
  pki: Pki
  nodes: MeshNode[]
  /** Starts a node's agent again (same state dir and flags, plus `extra`). */
  restart(node: MeshNode, extra?: string[]): Promise<RunningAgent>
}

export interface MeshBedOptions {
  /** Extra agent flags for every node. */
  args?: string[]
  agent?: AgentOptions
}

export async function makeMeshBed(t: Teardown, count: number, o: MeshBedOptions = {}): Promise<MeshBed> {
  const bed = makeNodes(t, count)
  // etcd on the bridge: .250 of the underlay /24.
  const etcdHost = bed.nodes[0]?.underlay.replace(/\.\d+$/, '.250') ?? ''
  ip(bed.underlay.name, 'addr', 'add', `${etcdHost}/24`, 'dev', 'br0')
  const etcd = await startEtcd(t, { netns: { name: bed.underlay.name, host: etcdHost } })
  const pki = new Pki(t)
  const nodes: MeshNode[] = []
  for (const n of bed.nodes) {
    const nodeName = `n${n.index}`
    pki.leaf(nodeName, { san: `DNS:${nodeName}` })
    const files = pki.files(nodeName)
    const dir = tempDir(t, `nsm-mesh-${nodeName}-`)
    const args = [
      '--node-name', nodeName,
      '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', `/nsm-mesh-${process.pid}`,
      '--underlay-address', n.underlay,
      '--listen', `${n.underlay}:7443`,
      '--tls-cert', files.cert, '--tls-key', files.key, '--tls-ca', files.ca,
      '--pod-info-dir', join(dir, 'pods'),
      ...(o.args ?? []),
    ]
    const agent = await startAgentInNode(t, n, { ...o.agent, dir, args: [...args, ...(o.agent?.args ?? [])] })
    nodes.push({ ...n, nodeName, agent, dir, args: [...args, ...(o.agent?.args ?? [])] })
  }
  // Every agent sees every node record with its peer URL.
  for (const n of nodes) {
    const seen = await until(async () => {
      const r = await n.agent.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})
      return r.nodes.filter((x) => x.peerUrl !== '').length === count
    }, 15_000)
    if (seen < 0) throw new Error(`node ${n.nodeName} does not see ${count} nodes with peer URLs`)
  }
  return {
    bed,
    etcd,
    pki,
    nodes,
    async restart(node, extra = []) {
      node.agent = await startAgentInNode(t, node, { ...o.agent, dir: node.dir, args: [...node.args, ...extra] })
      return node.agent
    },
  }
}

/** Registers a service (no matches: any endpoint serves any client) on `node`. */
export async function registerService(node: MeshNode, name: string): Promise<void> {
  await node.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name, payload: 'IP', matches: [], pathIds: [] })
}

/** Registers an endpoint through `node`'s agent (stamped with that node). */
export async function registerEndpointOn(node: MeshNode, e: EndpointSpec): Promise<void> {
  await node.agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration(e))
}

/** Waits until every node lists `names`. */
export async function seenEverywhere(bed: MeshBed, names: readonly string[]): Promise<boolean> {
  const ok = await until(async () => {
    for (const n of bed.nodes) {
      const r = await n.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
      const have = new Set(r.endpoints.map((e) => e.endpoint?.name ?? ''))
      if (!names.every((x) => have.has(x))) return false
    }
    return true
  }, 15_000)
  return ok >= 0
}

/** An NSM Request on `node`'s socket for a client pod netns. */
export function requestOn(node: MeshNode, id: string, netns: string, ifname: string, service: string, labels: Record<string, string> = {}): Promise<Connection> {
  return node.agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, netns, ifname, labels, service))
}

export function closeOn(node: MeshNode, conn: Connection): Promise<unknown> {
  return node.agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
}

/** The connections `node`'s agent holds now (its MonitorConnections snapshot). */
export function connectionsOn(node: MeshNode): Promise<Connection[]> {
  return connectionsOf(node.agent)
}
