// The VXLAN mechanism (ARCHITECTURE §8, §12): one half of a remote cross-connect, the half this agent's
// node holds. A connection from a client on node A to an endpoint on node B is two VXLAN devices with one
// VNI: A's agent builds the client half (in the client's pod netns, local = A's underlay address, remote =
// B's), B's agent the endpoint half (in the endpoint's pod netns, local and remote swapped). Each device's
// UDP socket stays in its node's netns, so the tunnel runs over the underlay and the pods see one
// interface each (./half.ts says how it is built, checked, removed and swept).
//
// Owns, for its half: the REMOTE VXLAN request form (`src_ip`, `dst_ip`, `vni`, `name`: ./params.ts), its
// record part (./record.ts VxlanRecord), build (all or nothing), remove, close, CHECK (the pod side: link,
// tag, VXLAN settings, up, addresses, routes), the restart verdict, the orphan sweep (pods and the node
// netns), and the context it answers with (the MTU lowered by the VXLAN overhead). The VNI is chosen
// before `plan` (claimed free on both nodes: agent/store/vni-claims.ts, by the forward element): the
// negotiated mechanism in `connection.mechanism` carries it.
//
// Not its business: choosing to go remote, talking to the other agent, allocating the VNI (the forwarding
// element does, ARCHITECTURE §12). Depends on: nothing before it in the pipeline but the IP context.
import { createHash } from 'node:crypto'
import { formatIp, parseIp } from '../../../ipam/address.js'
import { netnsKey } from '../../../pkg/netns.js'
import { netnsFileUrl } from '../../../pkg/netns-url.js'
import type { LinkReaper, NetlinkSessions } from '../../../pkg/netlink/index.js'
import type { ConnectionContext } from '../../../proto/gen/networkservice/connectioncontext.js'
import { AgentError } from '../../errors.js'
import type { Logger } from '../../server/log.js'
import { clientMac, endpointIfname, linkTag } from '../kernel/names.js'
import type { ClientSide, DatapathRecord, Mechanism, PlanInput, RequestedMechanism, Route } from '../types.js'
import { buildHalf, checkHalf, removeHalf, sweepHalves, type BuildStep, type HalfContext, type VxlanHalf } from './half.js'
import { completeVxlanParameters, parseVxlanParameters, underlayFamily, VXLAN, vxlanMtu, vxlanRequestedMechanism } from './params.js'
import type { VxlanRecord } from './record.js'
import { connectionContextOf, ipContextOfRecord } from '../record.js'
import { forwardingSwitch } from '../forwarding.js'

export { VniInUseError, buildHalf, checkHalf, removeHalf, sweepHalves, type BuildStep, type HalfContext, type RemoveResult, type VxlanHalf } from './half.js'
export { completeVxlanParameters, isVni, parseVni, parseVxlanParameters, underlayFamily, VNI_MAX, VNI_MIN, VXLAN, VXLAN_OVERHEAD, VXLAN_PARAM, VXLAN_PORT, vxlanMtu, vxlanRequestedMechanism, type VxlanParameters } from './params.js'
export { isVxlanRecord, type VxlanRecord } from './record.js'

export interface VxlanMechanismOptions {
  sessions: NetlinkSessions
  /** This node's underlay addresses: a plan whose local address is not one of them is refused. */
  underlay: readonly string[]
  /** The node netns (where the devices are created and their sockets stay); undefined = the agent's own. */
  nodeNetns?: string
  /** MTU of a pod's traffic when the request does not set one (the pipeline's default). */
  defaultMtu?: number
  /** Batches the deletions of Close; without it each Close deletes its own link. */
  reaper?: LinkReaper
  log?: Logger
  /** A test seam (./half.ts HalfContext.afterStep). */
  afterStep?: (step: BuildStep) => void | Promise<void>
}

/** The endpoint half's MAC, derived like the client's (kernel/names.ts clientMac) from the connection id. */
export function endpointMac(connectionId: string): string {
  const h = createHash('sha256').update(`mac:endpoint:${connectionId}`).digest()
  const b = [((h[0] ?? 0) & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
  return b.map((x) => (x ?? 0).toString(16).padStart(2, '0')).join(':')
}

/** The half a record describes, with that side's addresses and routes. */
export function halfOf(rec: DatapathRecord): VxlanHalf {
  const m = rec.mechanism
  if (m.type !== VXLAN) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${m.type} record reached the VXLAN mechanism`)
  const client = m.side === 'client'
  return {
    connectionId: rec.connectionId,
    side: m.side,
    netns: m.netns,
    ifname: m.ifname,
    local: m.local,
    remote: m.remote,
    vni: m.vni,
    mtu: m.mtu,
    mac: client ? clientMac(rec.connectionId) : endpointMac(rec.connectionId),
    addresses: client ? rec.ipContext.src : rec.ipContext.dst,
    routes: client ? rec.ipContext.srcRoutes : rec.ipContext.dstRoutes,
  }
}

export function vxlanMechanism(opts: VxlanMechanismOptions): Mechanism {
  const { sessions } = opts
  // Compared in canonical form (parseVxlanParameters canonicalizes the request's): fd00:0::1 is fd00::1.
  const underlay = opts.underlay.map((a) => {
    const ip = parseIp(a)
    if (ip === undefined) throw new AgentError('INTERNAL', `VXLAN mechanism: underlay address ${JSON.stringify(a)} is not an IP address`)
    return formatIp(ip)
  })
  const ctx: HalfContext = { sessions, nodeNetns: opts.nodeNetns, ...(opts.afterStep === undefined ? {} : { afterStep: opts.afterStep }) }
  const vxlan = (rec: DatapathRecord): VxlanRecord => {
    if (rec.mechanism.type !== VXLAN) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${rec.mechanism.type} record reached the VXLAN mechanism`)
    return rec.mechanism
  }
  const enableForwarding = forwardingSwitch(sessions)
  const foreign = (rec: DatapathRecord, alias: string | undefined): void => {
    const m = vxlan(rec)
    opts.log?.warn("link is not ours (not this connection's tag): left alone", { connection: rec.connectionId, netns: m.netns, ifname: m.ifname, alias: alias ?? null })
  }
  const remove = async (rec: DatapathRecord): Promise<void> => {
    await removeHalf(ctx, halfOf(rec), (alias) => foreign(rec, alias))
  }
  const ipContext = ipContextOfRecord

  return {
    type: VXLAN,

    /**
     * A REMOTE VXLAN request reaches the endpoint's agent from the client's agent: the client's netns is
     * on the other node, so the client side it names is its interface name with no netns here ('').
     */
    parseRequest(requested: RequestedMechanism, field: string): ClientSide {
      const p = parseVxlanParameters(requested.parameters, field)
      if (p.srcIp === undefined) throw AgentError.invalid(`${field}.parameters.src_ip`, "is required (the client node's underlay address)")
      return { netns: '', ifname: p.name }
    },

    /**
     * This agent's half, from the negotiated mechanism in `connection.mechanism` (src_ip, dst_ip, vni):
     * the endpoint's half when the endpoint is on this node, else the client's.
     */
    plan(input: PlanInput): VxlanRecord {
      const field = 'connection.mechanism'
      const negotiated = input.connection.mechanism
      if (negotiated?.type !== VXLAN) throw AgentError.invalid(field, `a ${VXLAN} mechanism with src_ip, dst_ip and vni is needed to plan a VXLAN half`)
      const p = completeVxlanParameters(negotiated.parameters, field)
      const side = input.endpoint.local ? 'endpoint' : 'client'
      const [local, remote, key] = side === 'client' ? [p.srcIp, p.dstIp, 'src_ip'] : [p.dstIp, p.srcIp, 'dst_ip']
      if (!underlay.includes(local)) throw AgentError.invalid(`${field}.parameters.${key}`, `${local} is not this node's underlay address (${underlay.join(', ')})`)
      const ctxMtu = input.connection.context?.MTU ?? 0
      const podMtu = ctxMtu > 0 ? ctxMtu : (opts.defaultMtu ?? 1500)
      return {
        type: VXLAN,
        side,
        netns: side === 'client' ? input.client.netns : input.endpoint.netns,
        ifname: side === 'client' ? input.client.ifname : endpointIfname(input.connection.id),
        local,
        remote,
        vni: p.vni,
        mtu: vxlanMtu(podMtu, underlayFamily(local)),
        ...(input.peer === undefined ? {} : { peer: input.peer }),
      }
    },

    async build(rec) {
      const half = halfOf(rec)
      await buildHalf(ctx, half)
      try {
        // This side forwards when the other side routes prefixes through it (an endpoint offering them, a
        // composed client routing its pools back).
        const through = half.side === 'client' ? rec.ipContext.dstRoutes : rec.ipContext.srcRoutes
        if (through.some((r: Route) => r.nextHop !== '')) enableForwarding(half.netns)
      } catch (err) {
        await remove(rec)
        throw err
      }
    },

    remove,

    async close(rec) {
      const half = halfOf(rec)
      if (opts.reaper === undefined) return remove(rec)
      const r = await opts.reaper.reap(half.netns, half.ifname, linkTag(rec.connectionId))
      if (r === 'foreign') foreign(rec, undefined)
    },

    check: (rec) => checkHalf(ctx, halfOf(rec)),

    async reconcile(rec) {
      const half = halfOf(rec)
      // The client's half dies with its pod; the endpoint's half is judged like any datapath (its client
      // is on the other node: that node's agent says whether it is gone).
      if (half.side === 'client' && netnsKey(half.netns) === undefined) return { state: 'client-gone' }
      const problems = await checkHalf(ctx, half)
      return problems.length === 0 ? { state: 'intact' } : { state: 'broken', problems }
    },

    // Client first: the endpoint's half has no client netns on this node ('': its client is on the peer
    // node, whose agent judges it), and its pod netns is watched as an endpoint side.
    namespaces: (rec) => {
      const m = vxlan(rec)
      return m.side === 'client' ? [m.netns] : ['', m.netns]
    },

    sweep: (input) => sweepHalves(ctx, input),

    ipContext,

    /**
     * The endpoint's half answers the client's agent with the negotiated REMOTE VXLAN mechanism. The
     * client's half answers its client with the KERNEL mechanism it asked for (its interface in its
     * netns), which is also what healing requests again.
     */
    connectionMechanism(rec) {
      const m = vxlan(rec)
      if (m.side === 'client') return { cls: 'LOCAL', type: 'KERNEL', parameters: { name: rec.clientIfname, inodeURL: netnsFileUrl(rec.clientNetns) } }
      return vxlanRequestedMechanism({ srcIp: m.remote, dstIp: m.local, vni: m.vni, name: rec.clientIfname })
    },

    context(rec, requested): ConnectionContext {
      return connectionContextOf(rec, requested, { srcMac: clientMac(rec.connectionId), dstMac: endpointMac(rec.connectionId) }, vxlan(rec).mtu)
    },
  }
}
