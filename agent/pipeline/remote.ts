// The life of remote cross-connects after they are built (ARCHITECTURE §12), on both nodes:
//
// Client's node (records whose datapath is the client's VXLAN half toward a peer):
// - refresh: every third of the token lifetime each one is requested again through the pipeline (the
//   peer renews its half's path segment; nothing is rebuilt while both halves are intact);
// - monitoring: one MonitorConnections stream per peer node that holds halves of ours, scoped to our path
//   segment. The peer closing a half (its endpoint died) or reporting it DOWN heals that connection away
//   from that endpoint; the stream breaking (the peer's agent died) or the peer's node record going away
//   (its lease expired) heals every connection through that node away from all of its endpoints. The
//   first snapshot after (re)connecting names the halves the peer still has: a missing one is re-requested.
// Endpoint's node (records of endpoint halves, client netns ''):
// - expiry: a half whose path segment expired (its client's agent stopped refreshing it) is closed;
// - at start: each client node's agent is asked which of its connections still go through us, and halves
//   it no longer has are closed (unreachable: they expire instead).
import { State, type Connection, type ConnectionEvent, type MonitorScopeSelector } from '../../proto/gen/networkservice/connection.js'
import { ConnectionEventType } from '../../proto/gen/networkservice/connection.js'
import type { ConnectionEntry, ConnectionTable } from '../connections/table.js'
import { decodeDatapathRecord } from '../mechanisms/record.js'
import { VXLAN } from '../mechanisms/vxlan/params.js'
import type { PeerClient } from '../peer/client.js'
import type { Registry } from '../registry/registry.js'
import type { Logger } from '../server/log.js'
import { remotePeerOf, type Peers } from './forward.js'
import type { PipelineHandler } from './handler.js'
import type { Healer } from './heal.js'
import { ownExpiry } from './path.js'
import type { TableRecords } from './records.js'
import type { CheckProblem, DatapathRecord } from './types.js'

export interface RemoteOptions {
  self: string
  table: ConnectionTable
  records: TableRecords
  registry: Registry
  handler: PipelineHandler
  healer: Healer
  peers: Peers & { forget(node: string): void }
  /** Names of the nodes with a live record. */
  liveNodes(): ReadonlySet<string>
  lifetimeMs: number
  log: Logger
  now?: () => number
  /** How often expiry and node records are looked at (default 500 ms). */
  tickMs?: number
}

const neverAborted = new AbortController().signal
const RECONNECT_MS = 1000

interface Watch {
  /** The channel it streams on: a restarted peer gets a new one (agent/peer/directory.ts), and a new watch. */
  client: PeerClient
  abort: AbortController
  /** Resolves when the stream ended (either way). */
  done: Promise<void>
}

export class RemoteCrossConnects {
  private readonly watches = new Map<string, Watch>()
  private timer: NodeJS.Timeout | undefined
  private refreshTimer: NodeJS.Timeout | undefined
  private stopped = false
  private started = false
  private readonly now: () => number
  /** Nodes being healed away from right now (one heal per loss). */
  private readonly losing = new Set<string>()
  /** A node lost is not dialed (nor healed away from) again before this time. */
  private readonly quietUntil = new Map<string, number>()
  /**
   * The halves this node holds, kept from the table's events (a tick never walks the table): client
   * halves by peer node, endpoint halves by connection id with their segment's expiry.
   */
  private readonly byPeer = new Map<string, Set<string>>()
  private readonly peerOfId = new Map<string, string>()
  private readonly expiries = new Map<string, number>()
  private readonly unsubscribe: () => void

  constructor(private readonly o: RemoteOptions) {
    this.now = o.now ?? Date.now
    const index = (e: ConnectionEntry): void => {
      const id = e.connection.id
      this.unindex(id)
      const rec = decodeDatapathRecord(e.datapath)
      const node = remotePeerOf(rec)
      if (node !== undefined) {
        let ids = this.byPeer.get(node)
        if (ids === undefined) this.byPeer.set(node, (ids = new Set()))
        ids.add(id)
        this.peerOfId.set(id, node)
        // A half UP toward a node proves its agent answers: the quiet period after a loss ends, and the
        // node is watched at once (not at the next tick), so a peer dying right after the Request is seen
        // by its stream breaking.
        if (e.connection.state === State.UP) this.quietUntil.delete(node)
        if (this.started) queueMicrotask(() => this.ensureWatch(node, this.now()))
      } else if (rec?.mechanism.type === VXLAN && rec.mechanism.side === 'endpoint') {
        this.expiries.set(id, ownExpiry(e.connection.path, o.self) ?? Infinity)
      }
    }
    this.unsubscribe = o.table.subscribe((ev) => (ev.type === 'delete' ? this.unindex(ev.entry.connection.id) : index(ev.entry)))
    for (const e of o.table.list()) index(e)
  }

  private unindex(id: string): void {
    this.expiries.delete(id)
    const node = this.peerOfId.get(id)
    if (node === undefined) return
    this.peerOfId.delete(id)
    const ids = this.byPeer.get(node)
    ids?.delete(id)
    if (ids?.size === 0) this.byPeer.delete(node)
  }

  start(): void {
    this.started = true
    const tick = (): void => {
      this.tick().catch((err: unknown) => this.o.log.error('remote cross-connects: tick failed', { err }))
    }
    this.timer = setInterval(tick, this.o.tickMs ?? 500)
    this.timer.unref()
    this.refreshTimer = setInterval(() => {
      this.refreshAll().catch((err: unknown) => this.o.log.error('remote cross-connects: refresh failed', { err }))
    }, Math.max(this.o.lifetimeMs / 3, 100))
    this.refreshTimer.unref()
    tick()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.unsubscribe()
    if (this.timer !== undefined) clearInterval(this.timer)
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer)
    for (const w of this.watches.values()) w.abort.abort()
    await Promise.all([...this.watches.values()].map((w) => w.done))
    this.watches.clear()
  }

  /** The client halves toward `node` (records read now). */
  private halvesTo(node: string): DatapathRecord[] {
    return [...(this.byPeer.get(node) ?? [])].flatMap((id) => this.o.records.record(id) ?? [])
  }

  private async tick(): Promise<void> {
    if (this.stopped) return
    const live = this.o.liveNodes()
    const t = this.now()
    for (const node of this.byPeer.keys()) this.ensureWatch(node, t, live)
    for (const [node, w] of this.watches) if (!this.byPeer.has(node)) w.abort.abort()
    await this.expire()
  }

  /** A node with halves of ours: watched, or lost when its record is gone (not within its quiet period). */
  private ensureWatch(node: string, t: number, live: ReadonlySet<string> = this.o.liveNodes()): void {
    if (this.stopped || (this.quietUntil.get(node) ?? 0) > t) return
    const ids = this.byPeer.get(node)
    if (ids === undefined) return
    if (!live.has(node)) {
      void this.lost(node, 'its node record is gone (lease expired)')
      return
    }
    // A watch on a channel the directory has replaced (the peer restarted) watches nothing: made anew.
    const w = this.watches.get(node)
    if (w !== undefined && w.client !== this.currentClient(node)) {
      w.abort.abort()
      this.watches.delete(node)
    }
    if (!this.watches.has(node) && !this.losing.has(node)) this.watch(node, ids.size)
  }

  /** Endpoint halves whose segment expired: closed. */
  private async expire(): Promise<void> {
    const t = this.now()
    for (const [id, expires] of [...this.expiries]) {
      if (expires > t) continue
      const e = this.o.table.get(id)
      const rec = this.o.records.record(id)
      if (e === undefined || rec?.mechanism.type !== VXLAN) continue
      this.o.log.info("closing the endpoint's half of a remote cross-connect: its client's agent stopped refreshing it", { connection: rec.connectionId, peer: rec.mechanism.peer ?? null, expiredAt: new Date(expires).toISOString() })
      await this.o.handler.close(e.connection, this.context()).catch((err: unknown) => this.o.log.warn('closing an expired half failed', { connection: rec.connectionId, err }))
    }
  }

  /** One monitor stream to `node`, scoped to connections with our path segment. */
  private watch(node: string, count: number): void {
    let client: PeerClient
    try {
      client = this.o.peers.get(node).client
    } catch (err) {
      void this.lost(node, (err as Error).message)
      return
    }
    const abort = new AbortController()
    let first = true
    const onEvent = (ev: ConnectionEvent): void => {
      if (first && ev.type === ConnectionEventType.INITIAL_STATE_TRANSFER) {
        first = false
        this.o.log.debug('monitoring a peer', { node, halves: count })
        void this.resync(node, ev.connections)
        return
      }
      first = false
      for (const conn of Object.values(ev.connections)) {
        if (ev.type === ConnectionEventType.DELETE) void this.halfLost(node, conn, 'the peer closed its half')
        else if (conn.state === State.DOWN) void this.halfLost(node, conn, 'the peer reports its half DOWN')
      }
    }
    const done = client
      .monitorConnections(this.scope(), onEvent, { signal: abort.signal })
      .then(
        () => 'the peer ended the monitor stream',
        (err: unknown) => (err instanceof Error ? err.message : String(err)),
      )
      .then(async (why) => {
        if (this.watches.get(node) === watch) this.watches.delete(node)
        if (abort.signal.aborted || this.stopped) return
        await this.lost(node, `monitor stream broke: ${why}`)
      })
    const watch: Watch = { client, abort, done }
    this.watches.set(node, watch)
  }

  private currentClient(node: string): PeerClient | undefined {
    try {
      return this.o.peers.get(node).client
    } catch {
      return undefined
    }
  }

  /** The peer's snapshot: halves of ours it does not have are requested again (rebuilt there). */
  private async resync(node: string, theirs: Record<string, Connection>): Promise<void> {
    const missing = this.halvesTo(node).filter((rec) => theirs[rec.connectionId] === undefined)
    if (missing.length === 0) return
    this.o.log.info('the peer lacks halves of our connections: requesting them again', { node, connections: missing.length })
    await Promise.all(missing.map((rec) => this.refresh(rec)))
  }

  private async halfLost(node: string, conn: Connection, why: string): Promise<void> {
    const rec = this.o.records.record(conn.id)
    if (rec === undefined || remotePeerOf(rec) !== node) return
    // Our own Close (or a heal that moved it) deletes it there too: only a connection still pointing there counts.
    await this.o.healer.healAway([rec], new Set([rec.endpointName]), `${why} (node ${node})`)
  }

  /** The peer node is lost: every connection through it heals away from all of its endpoints. */
  private async lost(node: string, why: string): Promise<void> {
    if (this.losing.has(node) || this.stopped) return
    this.losing.add(node)
    try {
      this.o.peers.forget(node)
      const recs = this.halvesTo(node)
      if (recs.length === 0) return
      const avoid = new Set(this.o.registry.findEndpoints().filter((s) => s.extension.nodeName === node).map((s) => s.endpoint.name))
      for (const r of recs) avoid.add(r.endpointName)
      this.o.log.warn('peer node lost: healing its connections away from it', { node, why, connections: recs.length })
      await this.o.healer.healAway(recs, avoid, `node ${node} lost: ${why}`)
    } finally {
      this.losing.delete(node)
      // Connections still through it (no replacement yet) are watched again after a pause.
      this.quietUntil.set(node, this.now() + RECONNECT_MS)
    }
  }

  /** Every client half requested again (renews the peer's path segment). */
  private async refreshAll(): Promise<void> {
    const all = [...this.byPeer.keys()].flatMap((node) => this.halvesTo(node))
    await Promise.all(all.map((rec) => this.refresh(rec)))
  }

  private async refresh(rec: DatapathRecord): Promise<void> {
    const entry = this.o.table.get(rec.connectionId)
    if (entry === undefined || entry.connection.state !== State.UP) return
    try {
      await this.o.healer.refresh(rec)
    } catch (err) {
      this.o.log.warn('refreshing a remote cross-connect failed', { connection: rec.connectionId, err })
    }
  }

  /**
   * At start (endpoint's node): each client node is asked which of its connections still go through this
   * node; halves it no longer has are closed. A node that cannot be asked is left to expiry.
   */
  async collectOrphans(): Promise<number> {
    const byNode = new Map<string, DatapathRecord[]>()
    for (const rec of this.o.records.all()) {
      const m = rec.mechanism
      if (m.type !== VXLAN || m.side !== 'endpoint' || m.peer === undefined) continue
      let l = byNode.get(m.peer)
      if (l === undefined) byNode.set(m.peer, (l = []))
      l.push(rec)
    }
    let closed = 0
    for (const [node, recs] of byNode) {
      let theirs: Record<string, Connection>
      try {
        theirs = await this.snapshot(node)
      } catch (err) {
        this.o.log.warn('cannot ask a client node about our halves: they expire unless refreshed', { node, halves: recs.length, err: (err as Error).message })
        continue
      }
      for (const rec of recs) {
        const c = theirs[rec.connectionId]
        if (c !== undefined && c.networkServiceEndpointName === rec.endpointName) continue
        const entry = this.o.table.get(rec.connectionId)
        if (entry === undefined) continue
        this.o.log.info("closing the endpoint's half of a remote cross-connect: its client's node no longer has it", { connection: rec.connectionId, node })
        await this.o.handler.close(entry.connection, this.context())
        closed++
      }
    }
    return closed
  }

  /**
   * CHECK of a client half's far side: the peer must hold the connection, UP (its own CHECK of the kernel
   * is its business: it rebuilds a broken half on the next refresh). [] when intact or not remote.
   */
  async checkPeer(rec: DatapathRecord): Promise<CheckProblem[]> {
    const node = remotePeerOf(rec)
    if (node === undefined) return []
    const connectionId = rec.connectionId
    let theirs: Record<string, Connection>
    try {
      theirs = await this.snapshot(node)
    } catch (err) {
      return [{ code: 'peer-unreachable', message: `connection ${connectionId}: node ${node}, which holds its endpoint's half, cannot be asked: ${(err as Error).message}`, connectionId }]
    }
    const c = theirs[connectionId]
    if (c === undefined) return [{ code: 'remote-half-missing', message: `connection ${connectionId}: node ${node} has no endpoint half of it`, connectionId }]
    if (c.state !== State.UP) return [{ code: 'remote-half-down', message: `connection ${connectionId}: its endpoint half on node ${node} is ${State[c.state] ?? c.state}`, connectionId }]
    return []
  }

  /** The first snapshot of a node's connections that carry our path segment. */
  private async snapshot(node: string): Promise<Record<string, Connection>> {
    const client = this.o.peers.get(node).client
    const abort = new AbortController()
    let got: Record<string, Connection> | undefined
    await client
      .monitorConnections(
        this.scope(),
        (ev) => {
          got ??= ev.connections
          abort.abort()
        },
        { signal: abort.signal, timeoutMs: 5000 },
      )
      .catch((err: unknown) => {
        if (got === undefined) throw err
      })
    if (got === undefined) throw new Error(`node ${node} sent no snapshot`)
    return got
  }

  /** A peer's connections that carry this node's path segment (the halves of our connections). */
  private scope(): MonitorScopeSelector {
    return { pathSegments: [{ name: this.o.self, id: '', token: '', expires: undefined, metrics: {} }], networkServices: [] }
  }

  private context(): { signal: AbortSignal; metadata: Map<string, string>; attachment: undefined } {
    return { signal: neverAborted, metadata: new Map(), attachment: undefined }
  }
}
