// The VXLAN mechanism (agent/mechanisms/vxlan/) on a two-node test bed (./nodes.ts), for the VXLAN tests:
// each node is a netns on a bridge underlay, each pod an ordinary test netns (./netns.ts makeNetns).
//
// Netns handling: both halves are built in the test's process. Each node gets its own mechanism instance over
// its own NetlinkSessions, given the node's netns path as its node netns (`nodeNetns`): the VXLAN device is
// created there (its UDP socket stays there: the underlay) and moved into the pod. That is exactly what
// an agent running inside the node netns does with `nodeNetns` unset, without a process per node.
//
// `pair` plans the two records of one remote connection (client half on node a, endpoint half on node b);
// nothing is built until the test builds them. Everything made is removed in t.teardown.
import { LinkReaper, NetlinkSessions } from '../../pkg/netlink/index'
import { NetnsPolicy } from '../../pkg/netns-policy'
import type { DatapathRecord, Mechanism } from '../../agent/mechanisms/types'
import { vxlanMechanism, vxlanRequestedMechanism, type BuildStep, type VxlanRecord } from '../../agent/mechanisms/vxlan/index'
import type { Connection } from '../../proto/gen/networkservice/connection'
import { makeNetns, type TestNetns } from './netns'
import { makeNodes, type TestBed, type TestNode } from './nodes'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const ALLOW = ['/var/run/netns/*']

export interface Side {
  node: TestNode
  mechanism: Mechanism
  sessions: NetlinkSessions
}

export interface Bed {
  bed: TestBed
  a: Side
  b: Side
}

/** A node's VXLAN mechanism over sessions of its own (closed at teardown); optionally with a build-step hook or a batching reaper. */
export function side(t: Teardown, node: TestNode, extra: { afterStep?: (s: BuildStep) => void | Promise<void>; reaper?: boolean } = {}): Side {
  const sessions = new NetlinkSessions(new NetnsPolicy(ALLOW))
  t.teardown(() => sessions.closeAll())
  const { reaper, ...rest } = extra
  const mechanism = vxlanMechanism({ sessions, nodeNetns: node.path, underlay: [node.underlay, node.underlay6], ...rest, ...(reaper === true ? { reaper: new LinkReaper(sessions) } : {}) })
  return { node, mechanism, sessions }
}

/** A fresh two-node bed, a side on each node. */
export function twoNodes(t: Teardown): Bed {
  const bed = makeNodes(t, 2)
  const [na, nb] = bed.nodes as [TestNode, TestNode]
  return { bed, a: side(t, na), b: side(t, nb) }
}

/** The addresses of pair `n` (172.16.n.0/31-ish host addresses, fd00:n::/127-ish), as the IPAM element makes them. */
function ipContext(n: number): DatapathRecord['ipContext'] {
  return {
    src: [`172.16.${n}.1/32`, `fd00:${n.toString(16)}::1/128`],
    dst: [`172.16.${n}.0/32`, `fd00:${n.toString(16)}::/128`],
    srcRoutes: [
      { prefix: `172.16.${n}.0/32`, nextHop: '' },
      { prefix: `fd00:${n.toString(16)}::/128`, nextHop: '' },
    ],
    dstRoutes: [
      { prefix: `172.16.${n}.1/32`, nextHop: '' },
      { prefix: `fd00:${n.toString(16)}::1/128`, nextHop: '' },
    ],
  }
}

/** A connection to service `svc` through `fw-1` whose mechanism is the negotiated VXLAN; `mtu` > 0 sets its context's MTU. */
export function connection(id: string, params: { srcIp: string; dstIp: string; vni: number; name: string }, mtu = 0): Connection {
  return {
    id,
    networkService: 'svc',
    mechanism: vxlanRequestedMechanism(params),
    context: mtu === 0 ? undefined : { ipContext: undefined, dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: mtu },
    labels: {},
    path: undefined,
    networkServiceEndpointName: 'fw-1',
    payload: 'IP',
    state: 0,
  }
}

export interface Pair {
  id: string
  /** The pair's addresses are 172.16.<n>.0/1 and fd00:<n hex>::/::1. */
  n: number
  client: DatapathRecord
  endpoint: DatapathRecord
  clientPod: TestNetns
  endpointPod: TestNetns
}

export interface PairOptions {
  id?: string
  n?: number
  vni?: number
  ifname?: string
  v6underlay?: boolean
  mtu?: number
  clientPod?: TestNetns
  endpointPod?: TestNetns
}

let pairs = 0
/** The two records of one remote connection, planned by each node's mechanism (nothing built yet). */
export function pair(t: Teardown, f: Bed, o: PairOptions = {}): Pair {
  pairs += 1
  const id = o.id ?? `vx-${pairs}`
  const n = o.n ?? pairs
  const clientPod = o.clientPod ?? makeNetns(t, 'c')
  const endpointPod = o.endpointPod ?? makeNetns(t, 'e')
  const ifname = o.ifname ?? 'nsm0'
  const [srcIp, dstIp] = o.v6underlay === true ? [f.a.node.underlay6, f.b.node.underlay6] : [f.a.node.underlay, f.b.node.underlay]
  const c = connection(id, { srcIp, dstIp, vni: o.vni ?? 1000 + n, name: ifname }, o.mtu ?? 0)
  const base = {
    version: 2 as const,
    connectionId: id,
    service: 'svc',
    endpointName: 'fw-1',
    clientIfname: ifname,
    mtu: o.mtu ?? 1500,
    ipContext: ipContext(n),
    p2p: { connectionId: id, clientId: clientPod.path, endpointId: endpointPod.path, pairs: [] },
    clientLabels: {},
  }
  const client: DatapathRecord = {
    ...base,
    clientNetns: clientPod.path,
    mechanism: f.a.mechanism.plan({ connection: c, client: { netns: clientPod.path, ifname }, endpoint: { name: 'fw-1', netns: '', local: false } }),
  }
  const endpoint: DatapathRecord = {
    ...base,
    clientNetns: '',
    mechanism: f.b.mechanism.plan({ connection: c, client: { netns: '', ifname }, endpoint: { name: 'fw-1', netns: endpointPod.path, local: true } }),
  }
  return { id, n, client, endpoint, clientPod, endpointPod }
}

/** A record's VXLAN part (throws on any other mechanism). */
export const vx = (rec: DatapathRecord): VxlanRecord => {
  if (rec.mechanism.type !== 'VXLAN') throw new Error('not a VXLAN record')
  return rec.mechanism
}
