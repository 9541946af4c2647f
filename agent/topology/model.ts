// agent/topology/: the mesh as one graph — nodes, pods, endpoints, services and connections — built by a
// pure function from what an agent answers (ListNodes, the service registry, ListEndpoints, ListConnections:
// the connection table with each CNI attachment). `nsmctl topology` draws it in the terminal (text.ts) or as
// Graphviz (dot.ts); the agent's topology page (web.ts) sends it to the browser, which lays it out (layout.ts).
//
// A pod is a network namespace on a node: a connection's client side is the netns its CNI attachment names
// (else its KERNEL mechanism's inodeURL), an endpoint's is its registration's netns. Its name is the
// `namespace/podName` client labels the CNI path adds, when a connection in that netns carries them; else the
// netns's last path component. A connection whose first path segment is another node's is the endpoint half
// this node holds for a client there (ARCHITECTURE §12): its client pod is known by its labels only.
//
// Nothing secret leaves here: path segment tokens are dropped; the rest is what `nsmctl get` prints.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import type { NetworkService } from '../../proto/gen/registry/registry.js'
import type { ConnectionRecord, EndpointRegistration, NodeRecord } from '../../proto/gen/nsmcni/nsmcni.js'

/** What the model is built from: one agent's answers. */
export interface MeshSnapshot {
  /** The node of the agent that answered. */
  self: string
  /** The store the node records come from (ListNodes' `store`). */
  store: string
  nodes: readonly NodeRecord[]
  services: readonly NetworkService[]
  endpoints: readonly EndpointRegistration[]
  connections: readonly ConnectionRecord[]
}

export interface TopologyNode {
  name: string
  self: boolean
  underlayAddress: string
  peerUrl: string
  /** ISO time of the node record's last write; '' when unknown. */
  lastSeen: string
}

export interface TopologyPod {
  /** `<node>|<netns path or URL>`, or `<node>|pod:<namespace>/<name>` for a client known by its labels only. */
  id: string
  /** `namespace/name` when known, else the netns's last path component. */
  name: string
  node: string
  /** Netns path (or URL) on its node; '' when only the labels are known. */
  netns: string
  /** Endpoint names registered in this pod. */
  endpoints: string[]
  /** Connection ids whose client is this pod. */
  connections: string[]
}

export interface TopologyEndpoint {
  name: string
  node: string
  /** The pod the endpoint lives in; '' for an endpoint serving the NSM API at a URL, with no netns. */
  pod: string
  url: string
  services: string[]
  /** Per service: its labels (k=v). */
  labels: Record<string, Record<string, string>>
  pools: string[]
  routes: string[]
  /** ISO time; '' when it does not expire. */
  expires: string
}

export interface TopologyService {
  name: string
  payload: string
  /** Each match as `source selector -> destination selector|...` ('*' for an empty selector). */
  matches: string[]
  endpoints: string[]
  connections: string[]
}

export interface TopologyRoute {
  prefix: string
  nextHop: string
}

export interface TopologyConnection {
  id: string
  service: string
  state: string
  /** `local` (both sides on this node), `client` (this node's half, the endpoint on another node), `far` (the endpoint's half for a client on another node). */
  half: 'local' | 'client' | 'far'
  clientPod: string
  clientNode: string
  endpoint: string
  /** The endpoint's pod; '' when the endpoint is not registered (any more) or serves at a URL. */
  endpointPod: string
  endpointNode: string
  mechanism: { type: string; cls: string; summary: string; parameters: Record<string, string> }
  /** The client's interface name. */
  ifname: string
  srcAddresses: string[]
  dstAddresses: string[]
  srcRoutes: TopologyRoute[]
  dstRoutes: TopologyRoute[]
  mtu: number
  labels: Record<string, string>
  /** Path segments without their tokens. */
  path: Array<{ name: string; id: string; expires: string }>
  attachment: { network: string; containerId: string; ifname: string; netns: string } | null
}

export interface Topology {
  self: string
  store: string
  nodes: TopologyNode[]
  pods: TopologyPod[]
  endpoints: TopologyEndpoint[]
  services: TopologyService[]
  connections: TopologyConnection[]
  /** Pod ids from a pod no connection reaches to the last endpoint pod, e.g. client → firewall → vpn-gateway. */
  chains: string[][]
}

const FILE_URL = 'file://'

/** The netns path of a `file://` URL (percent-decoded, as pkg/netns-url.ts writes it); other URLs as they are. */
export function netnsOfUrl(url: string): string {
  if (!url.startsWith(FILE_URL)) return url
  try {
    return decodeURIComponent(url.slice(FILE_URL.length))
  } catch {
    return url
  }
}

function lastComponent(path: string): string {
  const parts = path.split('/').filter((p) => p !== '')
  return parts[parts.length - 1] ?? path
}

function selector(s: Readonly<Record<string, string>>): string {
  const pairs = Object.entries(s).map(([k, v]) => `${k}=${v}`)
  return pairs.length === 0 ? '*' : pairs.join(',')
}

function iso(t: { seconds: number; nanos: number } | undefined): string {
  if (t === undefined) return ''
  return new Date(t.seconds * 1000 + Math.floor(t.nanos / 1e6)).toISOString()
}

/**
 * One line for a mechanism: `KERNEL veth nsm-1`, `KERNEL VF nsm-1 0000:03:02.1`, `VFIO 0000:03:02.2 group 42`,
 * `MEMIF nsm-1 /run/nsm/memif/<pod>/nsm-1.sock`, `VXLAN vni 5001 10.0.0.1->10.0.0.2`.
 */
export function mechanismSummary(m: Mechanism | undefined): string {
  if (m === undefined) return '-'
  const p = m.parameters
  const name = p.name === undefined ? '' : ` ${p.name}`
  if (m.type === 'KERNEL') return (p.pciAddress ?? '') !== '' ? `KERNEL VF${name} ${p.pciAddress ?? ''}` : `KERNEL veth${name}`
  if (m.type === 'VFIO') return `VFIO ${p.pciAddress ?? '?'}${p.iommuGroup === undefined ? '' : ` group ${p.iommuGroup}`}`
  if (m.type === 'MEMIF') return `MEMIF${name} ${p.socketfile ?? '?'}`
  if (m.type === 'VXLAN') return `VXLAN vni ${p.vni ?? '?'} ${p.src_ip ?? '?'}->${p.dst_ip ?? '?'}`
  return m.type
}

function routes(rs: ReadonlyArray<{ prefix: string; nextHop: string }> | undefined): TopologyRoute[] {
  return (rs ?? []).map((r) => ({ prefix: r.prefix, nextHop: r.nextHop }))
}

const byString = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/** The graph of `snap`: every list sorted, so equal snapshots give equal output. */
export function buildTopology(snap: MeshSnapshot): Topology {
  const pods = new Map<string, TopologyPod>()
  /** Names learnt from connection labels, by pod id. */
  const names = new Map<string, string>()
  const pod = (node: string, netns: string, id = `${node}|${netns}`): TopologyPod => {
    let p = pods.get(id)
    if (p === undefined) {
      p = { id, name: lastComponent(netns), node, netns, endpoints: [], connections: [] }
      pods.set(id, p)
    }
    return p
  }

  const nodes: TopologyNode[] = snap.nodes.map((n) => ({
    name: n.name,
    self: n.name === snap.self,
    underlayAddress: n.underlayAddress,
    peerUrl: n.peerUrl,
    lastSeen: iso(n.lastSeen),
  }))
  if (!nodes.some((n) => n.self)) nodes.push({ name: snap.self, self: true, underlayAddress: '', peerUrl: '', lastSeen: '' })

  const endpoints: TopologyEndpoint[] = []
  const endpointByName = new Map<string, TopologyEndpoint>()
  for (const { endpoint: e, extension: x } of snap.endpoints) {
    if (e === undefined) continue
    const node = x?.nodeName || snap.self
    const netns = x?.netnsPath || (e.url.startsWith(FILE_URL) ? netnsOfUrl(e.url) : '')
    const home = netns === '' ? undefined : pod(node, netns)
    home?.endpoints.push(e.name)
    const ep: TopologyEndpoint = {
      name: e.name,
      node,
      pod: home?.id ?? '',
      url: e.url,
      services: [...e.networkServiceNames],
      labels: Object.fromEntries(Object.entries(e.networkServiceLabels).map(([s, l]) => [s, { ...l.labels }])),
      pools: [...(x?.cidrPools ?? [])],
      routes: (x?.routes ?? []).map((r) => (r.nextHop === '' ? r.prefix : `${r.prefix}@${r.nextHop}`)),
      expires: iso(e.expirationTime),
    }
    endpoints.push(ep)
    endpointByName.set(ep.name, ep)
  }

  const connections: TopologyConnection[] = []
  for (const { connection: c, attachment: a } of snap.connections) {
    if (c === undefined) continue
    connections.push(connectionOf(snap.self, c, a, endpointByName, pod, names))
  }
  for (const [id, name] of names) {
    const p = pods.get(id)
    if (p !== undefined) p.name = name
  }

  const services: TopologyService[] = snap.services.map((s) => ({
    name: s.name,
    payload: s.payload,
    matches: s.matches.map((m) => `${selector(m.sourceSelector)} -> ${m.routes.map((r) => selector(r.destinationSelector)).join('|') || '-'}${m.fallthrough ? ' (fallthrough)' : ''}`),
    endpoints: endpoints.filter((e) => e.services.includes(s.name)).map((e) => e.name).sort(byString),
    connections: connections.filter((c) => c.service === s.name).map((c) => c.id).sort(byString),
  }))

  // A pod or endpoint on a node without a record (expired, or a file store's single node) still gets its node.
  for (const name of new Set([...pods.values()].map((p) => p.node).concat(endpoints.map((e) => e.node)))) {
    if (!nodes.some((n) => n.name === name)) nodes.push({ name, self: false, underlayAddress: '', peerUrl: '', lastSeen: '' })
  }
  const podList = [...pods.values()].sort((a, b) => byString(a.node, b.node) || byString(a.name, b.name) || byString(a.id, b.id))
  for (const p of podList) {
    p.endpoints.sort(byString)
    p.connections.sort(byString)
  }
  connections.sort((a, b) => byString(a.id, b.id))
  endpoints.sort((a, b) => byString(a.name, b.name))
  return {
    self: snap.self,
    store: snap.store,
    nodes: nodes.sort((a, b) => byString(a.name, b.name)),
    pods: podList,
    endpoints,
    services: services.sort((a, b) => byString(a.name, b.name)),
    connections,
    chains: chainsOf(podList, connections),
  }
}

function connectionOf(
  self: string,
  c: Connection,
  a: ConnectionRecord['attachment'],
  endpoints: ReadonlyMap<string, TopologyEndpoint>,
  pod: (node: string, netns: string, id?: string) => TopologyPod,
  names: Map<string, string>,
): TopologyConnection {
  const segments = c.path?.pathSegments ?? []
  const first = segments[0]?.name ?? ''
  const ep = endpoints.get(c.networkServiceEndpointName)
  const far = first !== '' && first !== self
  const last = segments.length > 1 ? (segments[segments.length - 1]?.name ?? '') : ''
  const endpointNode = ep?.node ?? (last !== '' ? last : self)
  const clientNode = far ? first : self
  const labelName = c.labels.podName !== undefined && c.labels.podName !== '' ? `${c.labels.namespace ?? ''}/${c.labels.podName}`.replace(/^\//, '') : undefined
  // The client's netns: KERNEL, MEMIF and VFIO carry it as inodeURL (VXLAN's is the node's business).
  const inode = c.mechanism !== undefined && c.mechanism.type !== 'VXLAN' ? c.mechanism.parameters.inodeURL : undefined
  const netns = a?.netns || (far || inode === undefined ? '' : netnsOfUrl(inode))
  const client = netns !== '' ? pod(clientNode, netns) : pod(clientNode, '', `${clientNode}|pod:${labelName ?? `connection ${c.id}`}`)
  if (labelName !== undefined) names.set(client.id, labelName)
  else if (netns === '') client.name = `client of ${c.id}`
  client.connections.push(c.id)
  const m = c.mechanism
  const ip = c.context?.ipContext
  return {
    id: c.id,
    service: c.networkService,
    state: State[c.state] ?? String(c.state),
    half: far ? 'far' : endpointNode !== self ? 'client' : 'local',
    clientPod: client.id,
    clientNode,
    endpoint: c.networkServiceEndpointName,
    endpointPod: ep?.pod ?? '',
    endpointNode,
    mechanism: { type: m?.type ?? '', cls: m?.cls ?? '', summary: mechanismSummary(m), parameters: { ...(m?.parameters ?? {}) } },
    ifname: m?.parameters.name ?? a?.ifname ?? '',
    srcAddresses: [...(ip?.srcIpAddrs ?? [])],
    dstAddresses: [...(ip?.dstIpAddrs ?? [])],
    srcRoutes: routes(ip?.srcRoutes),
    dstRoutes: routes(ip?.dstRoutes),
    mtu: c.context?.MTU ?? 0,
    labels: { ...c.labels },
    path: segments.map((s) => ({ name: s.name, id: s.id, expires: iso(s.expires) })),
    attachment: a === undefined ? null : { network: a.network, containerId: a.containerId, ifname: a.ifname, netns: a.netns },
  }
}

/**
 * The chains of pods, following each connection from its client pod to its endpoint's pod: one per path from
 * a pod that no connection reaches (a plain client) to a pod whose own connections lead nowhere further.
 * A cycle stops where it would repeat a pod.
 */
export function chainsOf(pods: readonly TopologyPod[], connections: readonly TopologyConnection[]): string[][] {
  const next = new Map<string, Set<string>>()
  const reached = new Set<string>()
  for (const c of connections) {
    if (c.endpointPod === '' || c.endpointPod === c.clientPod) continue
    let s = next.get(c.clientPod)
    if (s === undefined) next.set(c.clientPod, (s = new Set()))
    s.add(c.endpointPod)
    reached.add(c.endpointPod)
  }
  const out: string[][] = []
  const walk = (path: string[]): void => {
    const tail = path[path.length - 1] ?? ''
    const onward = [...(next.get(tail) ?? [])].filter((p) => !path.includes(p)).sort(byString)
    if (onward.length === 0) {
      if (path.length > 1) out.push(path)
      return
    }
    for (const p of onward) walk([...path, p])
  }
  for (const p of pods) if (!reached.has(p.id) && next.has(p.id)) walk([p.id])
  return out
}
