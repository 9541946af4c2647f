// forward — a Request whose endpoint is on another node goes to that node's agent (ARCHITECTURE §12), as
// NSM's managers forward to each other: over the peer API (mutual TLS) with a REMOTE VXLAN preference
// (`src_ip` = this node's underlay address, `dst_ip` = the peer's, `vni` free on both nodes, `name` = the
// client's interface) and `network_service_endpoint_name` = the endpoint selection chose, so the peer
// builds toward that one or fails. The peer allocates the addresses from its endpoint's pool and builds
// the endpoint's half; its answer (the negotiated mechanism and IP context) is what this agent's half is
// built with: the VXLAN mechanism replaces the requested KERNEL one, and the IPAM element is skipped.
//
// On the endpoint's node the same element sees the peer's call (the peer listener stamps the caller's
// node): only REMOTE VXLAN is accepted from a peer and only toward an endpoint of this node; REMOTE VXLAN
// is accepted from peers only.
//
// Undo: a later failure closes the peer's half and gives the VNI back. Close (after the local half is
// removed) closes the peer's half, best effort within CLOSE_TIMEOUT_MS: a peer that cannot be reached
// lets it expire (its path segment is no longer refreshed, ./remote.ts). A re-request that moves a
// connection away from a peer (healing) closes the half left there in the background.
// Needs: mechanism, endpoint, clientIfname. Provides: mechanism, addresses, peerNode (for remote endpoints).
import { State, type Connection, type Mechanism as RequestedMechanism, type Path } from '../../proto/gen/networkservice/connection.js'
import type { ConnectionContext, IPContext } from '../../proto/gen/networkservice/connectioncontext.js'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { isIP } from 'node:net'
import { GrpcCallError } from '../client/client.js'
import { AgentError } from '../errors.js'
import { completeVxlanParameters, VXLAN, vxlanRequestedMechanism } from '../mechanisms/vxlan/params.js'
import type { Mechanism } from '../mechanisms/types.js'
import { peerOf } from '../peer/identity.js'
import type { PeerNode } from '../peer/directory.js'
import type { Logger } from '../server/log.js'
import { withUndo, type Element } from './chain.js'
import type { DatapathRecord, P2PAddresses } from './types.js'

/** A Close to a peer gets this long; then its half is left to expire. */
export const CLOSE_TIMEOUT_MS = 3000

export interface VniAllocator {
  /** A VNI free on this node and on `peer` for the connection (the same one while it holds one). */
  take(connectionId: string, peer: string): Promise<number>
  /** Gives the connection's VNI back. Idempotent. */
  release(connectionId: string): Promise<void>
}

export interface Peers {
  /** The node's agent; UNAVAILABLE when it cannot be called. */
  get(node: string): PeerNode
}

export interface ForwardOptions {
  /** This node's underlay addresses (one per family at most). */
  underlay: readonly string[]
  peers: Peers
  vnis: VniAllocator
  /** The VXLAN mechanism (builds this node's half). */
  vxlan: Mechanism
  /** The pools of the endpoint whose netns is `clientNetns` (a composed client), sent to the peer. */
  composedPools(clientNetns: string): readonly string[]
  /** Deadline of a forwarded Request. */
  requestTimeoutMs?: number
  log: Logger
  onUndoError(err: unknown): void
}

/** The peer node a record's datapath is a half toward, when it is the client's half of a cross-connect. */
export function remotePeerOf(rec: DatapathRecord | undefined): string | undefined {
  const m = rec?.mechanism
  return m?.type === VXLAN && m.side === 'client' ? m.peer : undefined
}

/** A peer's failure as the agent's error: its own error name when it gave one, the node named. */
export function peerError(node: string, err: unknown): AgentError {
  if (err instanceof AgentError) return err
  if (err instanceof GrpcCallError) {
    // Not reaching it is UNAVAILABLE here (selection then tries another endpoint), whoever said it.
    const code = err.code === 14 || err.code === 4 || err.agentCode === 'AGENT_UNREACHABLE' ? 'UNAVAILABLE' : (err.agentCode ?? 'INTERNAL')
    return new AgentError(code, `${/^(node|endpoint) /.test(node) ? node : `node ${node}`}: ${err.details}`, { cause: err })
  }
  return new AgentError('UNAVAILABLE', `${/^(node|endpoint) /.test(node) ? node : `node ${node}`}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
}

/** The Close a peer's half is closed with: its id and service are what the peer keys it by. */
function closeOf(c: Connection, mechanism?: RequestedMechanism): Connection {
  return { ...c, mechanism, state: State.DOWN }
}

export function forward(o: ForwardOptions): Element {
  const localAddress = (peerUnderlay: string): string => {
    const family = isIP(peerUnderlay)
    const mine = o.underlay.find((a) => isIP(a) === family)
    if (mine === undefined) throw new AgentError('UNAVAILABLE', `no underlay address of this node is of the family of the peer's (${peerUnderlay}): set --underlay-address`)
    return mine
  }

  /** Closes a peer's half, best effort (logged), and gives its VNI back. */
  const closeRemote = async (node: string, conn: Connection, why: string): Promise<void> => {
    try {
      await o.peers.get(node).client.closeConnection(closeOf(conn), { timeoutMs: CLOSE_TIMEOUT_MS })
    } catch (err) {
      o.log.warn("the peer's half of a cross-connect could not be closed: it expires when no longer refreshed", { connection: conn.id, node, why, err: peerError(node, err).message })
    }
  }

  return {
    name: 'forward',
    needs: ['mechanism', 'endpoint', 'clientNetns', 'clientIfname'],
    provides: ['mechanism', 'addresses', 'peerNode'],
    wrap: (next) => ({
      async request(r) {
        const { mechanism, endpoint, clientIfname, clientNetns, previous } = r.state
        if (mechanism === undefined || endpoint === undefined || clientIfname === undefined || clientNetns === undefined) throw new AgentError('INTERNAL', 'forward: a required earlier element did not run')
        const caller = peerOf(r.ctx.metadata)
        if (caller !== undefined) {
          // The endpoint's node: a peer asks for the endpoint's half.
          if (mechanism.type !== VXLAN) throw AgentError.invalid('mechanism_preferences', `a peer agent (node ${caller.node}) may request the REMOTE ${VXLAN} mechanism only, not ${mechanism.type}`)
          if (!endpoint.local) throw new AgentError('NO_ENDPOINT', `endpoint ${endpoint.name} is not on this node: a peer's Request is not forwarded again`)
          r.state.peerNode = caller.node
          // The caller's preference is the negotiated mechanism: its src_ip, dst_ip and vni are final.
          const negotiated = r.connection.mechanism ?? r.mechanismPreferences.find((m) => m.type === VXLAN)
          return next.request({ ...r, connection: { ...r.connection, mechanism: negotiated } })
        }
        if (mechanism.type === VXLAN) throw AgentError.invalid('mechanism_preferences', `the REMOTE ${VXLAN} mechanism is requested by peer agents (on the peer listener) only`)
        const before = remotePeerOf(previous)
        if (endpoint.local) {
          const connection = await next.request(r)
          // Moved from a remote endpoint to one of this node: the far half is closed, its VNI given back.
          if (before !== undefined) {
            await o.vnis.release(r.connection.id).catch(o.onUndoError)
            void moveAway(before, r.connection)
          }
          return connection
        }
        const node = endpoint.node
        // Only a KERNEL interface has a VXLAN half: a memif, a VF or a VFIO device reaches endpoints of this node only.
        if (mechanism.type !== 'KERNEL') throw AgentError.invalid('mechanism_preferences', `a ${mechanism.type} connection reaches endpoints on this node only; endpoint ${endpoint.name} is on node ${node}`)
        // A connection moving to another peer gives its VNI on the old pair back first.
        if (before !== undefined && before !== node) await o.vnis.release(r.connection.id).catch(o.onUndoError)
        const peer = o.peers.get(node)
        const local = localAddress(peer.underlay)
        const vni = await o.vnis.take(r.connection.id, node)
        const c = r.connection
        // A composed client (itself an endpoint here) has its pools routed back through it on the far side:
        // sent as the request's dst_routes (the peer's IPAM adds them via this client's address).
        const composed = o.composedPools(clientNetns).map((prefix) => ({ prefix, nextHop: '' }))
        // The pod's MTU, which both halves lower by the VXLAN overhead: a refresh or heal carries the
        // lowered one it was answered with, so the stored record's is used then (else it would shrink).
        const MTU = previous?.mtu ?? c.context?.MTU ?? 0
        const context = { ...emptyContext(), ...c.context, MTU, ipContext: { ...emptyIpContext(), ...c.context?.ipContext, dstRoutes: composed } }
        const req: NetworkServiceRequest = {
          connection: { ...c, context, mechanism: undefined, networkServiceEndpointName: endpoint.name, state: State.UP },
          mechanismPreferences: [vxlanRequestedMechanism({ srcIp: local, dstIp: peer.underlay, vni, name: clientIfname })],
        }
        let answer: Connection
        try {
          // Ends at once when the node is declared lost (a heal must not wait for a frozen peer).
          answer = await peer.client.request(req, { timeoutMs: o.requestTimeoutMs ?? 15_000, signal: AbortSignal.any([r.ctx.signal, peer.signal]) })
        } catch (err) {
          if (before !== node) await o.vnis.release(c.id).catch(o.onUndoError)
          throw peerError(node, err)
        }
        let addresses: P2PAddresses
        try {
          addresses = answered(node, answer, { vni, local })
        } catch (err) {
          await closeRemote(node, answer, 'its answer was refused')
          if (before !== node) await o.vnis.release(c.id).catch(o.onUndoError)
          throw err
        }
        r.state.mechanism = o.vxlan
        r.state.addresses = addresses
        r.state.peerNode = node
        const forwarded: Connection = { ...c, context: { ...context, ipContext: c.context?.ipContext }, mechanism: answer.mechanism, path: pathBack(c.path, answer.path) }
        const connection = await withUndo(
          () => next.request({ ...r, connection: forwarded }),
          async () => {
            await closeRemote(node, answer, 'a later step failed')
            if (before !== node) await o.vnis.release(c.id)
          },
          o.onUndoError,
        )
        if (before !== undefined && before !== node) void moveAway(before, c)
        else if (previous !== undefined && before === node && previous.endpointName !== endpoint.name) void moveAway(before, c)
        return connection
      },
      async close(cl) {
        await next.close(cl)
        const node = remotePeerOf(cl.record)
        if (node === undefined) return
        await closeRemote(node, cl.connection, 'closed')
        await o.vnis.release(cl.connection.id).catch(o.onUndoError)
      },
    }),
  }

  /** The half left on a peer a connection moved away from: closed in the background (never delays the heal). */
  async function moveAway(node: string, c: Connection): Promise<void> {
    await closeRemote(node, c, 'the connection moved to another endpoint')
  }
}

/**
 * The path as answered (the next hops' segments after ours), at our index: the answer's index is the last
 * hop's, and kept as ours it would make our next request append a second segment of this node.
 */
export function pathBack(ours: Path | undefined, answered: Path | undefined): Path | undefined {
  if (answered === undefined || answered.pathSegments.length === 0) return ours
  return { ...answered, index: ours?.index ?? 0 }
}

const emptyIpContext = (): IPContext => ({ srcIpAddrs: [], dstIpAddrs: [], srcIpRequired: false, dstIpRequired: false, srcRoutes: [], dstRoutes: [], excludedPrefixes: [], ipNeighbors: [], extraPrefixRequest: [], extraPrefixes: [], policies: [] })
const emptyContext = (): ConnectionContext => ({ ipContext: undefined, dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: 0 })

/** The peer's answer checked against what was asked, as the IP context this node's half applies. */
function answered(node: string, answer: Connection, asked: { vni: number; local: string }): P2PAddresses {
  const field = `node ${node}'s answer: connection.mechanism`
  if (answer.mechanism?.type !== VXLAN) throw new AgentError('INTERNAL', `${field} is ${answer.mechanism?.type ?? 'missing'}, not ${VXLAN}`)
  const p = completeVxlanParameters(answer.mechanism.parameters, field)
  if (p.vni !== asked.vni || p.srcIp !== asked.local) throw new AgentError('INTERNAL', `${field}: vni ${p.vni} src_ip ${p.srcIp}, asked vni ${asked.vni} src_ip ${asked.local}`)
  const ip = answer.context?.ipContext
  if (ip === undefined || ip.srcIpAddrs.length === 0 || ip.dstIpAddrs.length === 0) throw new AgentError('INTERNAL', `node ${node}'s answer has no IP context`)
  return {
    src: [...ip.srcIpAddrs],
    dst: [...ip.dstIpAddrs],
    srcRoutes: [...ip.srcRoutes],
    dstRoutes: [...ip.dstRoutes],
    // Allocated by the peer from its endpoint's pool: nothing of this node's allocator.
    record: { connectionId: answer.id, clientId: '', endpointId: '', pairs: [] },
  }
}
