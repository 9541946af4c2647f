// The peers this agent can call (ARCHITECTURE §12): one PeerClient per node, dialed at the peer URL of the
// node's live record and made again when that URL changes; a node without a live record, or without a
// peer URL, is UNAVAILABLE naming it. The clients present this node's certificate (the same PeerTls the
// listener serves, so a rotation reaches new connections) or, with --insecure, plain TCP.
import { AgentError } from '../errors.js'
import type { NodeRecord } from '../store/nodes.js'
import { PeerClient, type PeerClientSecurity } from './client.js'

export interface PeerNode {
  readonly node: string
  /** Its underlay address (the remote end of a VXLAN half). */
  readonly underlay: string
  readonly client: PeerClient
  /** Aborted when the node is forgotten (lost): calls in flight to it end at once. */
  readonly signal: AbortSignal
}

export type PeerDirectoryOptions = PeerClientSecurity & {
  /** This node's name (sent with every call; never dialed). */
  readonly self: string
  /** The live node records (agent/store/nodes.ts). */
  readonly nodes: () => readonly NodeRecord[]
  /** Deadline of a Request or Close to a peer. Default 15 s. */
  readonly timeoutMs?: number
  /** Metadata added to every peer call, read at the call (the trace context: agent/tracing/). */
  readonly metadata?: () => Record<string, string>
}

export class PeerDirectory {
  private readonly clients = new Map<string, { client: PeerClient; startedAt: string | undefined }>()
  private readonly aborts = new Map<string, AbortController>()

  constructor(private readonly opts: PeerDirectoryOptions) {}

  /** The node's client; UNAVAILABLE when it has no live record or no peer URL. */
  get(node: string): PeerNode {
    if (node === this.opts.self) throw new AgentError('INTERNAL', `peer directory: node ${node} is this node`)
    const rec = this.opts.nodes().find((n) => n.name === node)
    if (rec === undefined) throw new AgentError('UNAVAILABLE', `node ${node} has no live node record (its agent is gone or has not started)`)
    if (rec.peerUrl === '') throw new AgentError('UNAVAILABLE', `node ${node} has no peer URL in its node record (its agent runs without --listen)`)
    if (rec.underlayAddress === '') throw new AgentError('UNAVAILABLE', `node ${node} has no underlay address in its node record (--underlay-address)`)
    let cached = this.clients.get(node)
    // Another URL, or a restarted agent (a fresh channel connects at once, no reconnect backoff left over).
    if (cached !== undefined && (cached.client.url !== rec.peerUrl || cached.startedAt !== rec.startedAt)) {
      cached.client.disconnect()
      cached = undefined
    }
    if (cached === undefined) {
      const security: PeerClientSecurity = this.opts.insecure === true ? { insecure: true } : { tls: this.opts.tls }
      cached = { client: new PeerClient({ ...security, url: rec.peerUrl, node, self: this.opts.self, ...(this.opts.timeoutMs === undefined ? {} : { timeoutMs: this.opts.timeoutMs }), ...(this.opts.metadata === undefined ? {} : { metadata: this.opts.metadata }) }), startedAt: rec.startedAt }
      this.clients.set(node, cached)
    }
    const client = cached.client
    let abort = this.aborts.get(node)
    if (abort === undefined) this.aborts.set(node, (abort = new AbortController()))
    return { node, underlay: rec.underlayAddress, client, signal: abort.signal }
  }

  /** Drops a node's client (its agent died: the next call dials anew). */
  forget(node: string): void {
    this.aborts.get(node)?.abort(new Error(`node ${node} was lost`))
    this.aborts.delete(node)
    this.clients.get(node)?.client.disconnect()
    this.clients.delete(node)
  }

  close(): void {
    for (const a of this.aborts.values()) a.abort(new Error('the agent is stopping'))
    this.aborts.clear()
    for (const c of this.clients.values()) c.client.disconnect()
    this.clients.clear()
  }
}
