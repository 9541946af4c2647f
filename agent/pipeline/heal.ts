// Healing and restart reconciliation (ARCHITECTURE §10).
//
// - An endpoint unregistered or expired (registry event), or whose netns disappeared (polled), makes
//   every connection it served go DOWN and be re-requested through the same pipeline with that endpoint
//   excluded: the client keeps its interface name and, where the new endpoint's pools allow, its
//   addresses; the mechanism element replaces the old datapath. MonitorConnections sees DOWN, then UP.
// - A DOWN connection (its heal found no replacement) is retried: at once when an endpoint of its service
//   is registered (registry event), and from the poll with exponential backoff (RETRY_BASE_MS doubling up
//   to RETRY_MAX_MS) while it keeps failing; a refresh of an endpoint retries those that are due.
// - Every connection's own datapath namespaces (from its record, not the registry) are watched: when its
//   endpoint side's namespace vanished or was replaced under the same path (its identity, remembered when
//   the connection went UP, changed), or its endpoint was re-registered under the same name in another
//   netns, the connection goes DOWN and is rebuilt where its endpoint now is (or another is selected).
// - A connection whose client netns disappeared (a pod removed without DEL) is closed, so nothing leaks.
// - After a restart: each stored datapath is judged by its own mechanism (agent/mechanisms/: the same
//   intactness test as CHECK): intact ones are left alone (the datapath keeps flowing), broken ones are
//   rebuilt through the pipeline, those whose client vanished are cleaned up.
// - Links tagged by us that no connection owns (a crash between build and journal) are swept (./sweep.ts):
//   at restart, before the records are judged, and periodically from the poll, rate-limited.
// Healing takes the same per-id lock as Request and Close.
//
// Cost: no poll and no registry event walks the connection table (./heal-index.ts keeps what healing
// watches, indexed as the table changes). A poll stats each endpoint-side namespace once and at most
// CLIENT_CHECKS_PER_POLL client namespaces (round robin: with many pods a vanished one is found within
// namespaces / CLIENT_CHECKS_PER_POLL polls), looks each endpoint up once, and visits connections only when
// they need work; the netlink sockets of vanished namespaces are swept at most every SESSION_SWEEP_MS
// (besides those of the namespaces the poll itself finds gone). So the poll's share of the event loop,
// and with it the Requests' latency, does not grow with the number of connections (issue 10).
import { State, type Connection } from '../../proto/gen/networkservice/connection.js'
import type { NetlinkSessions } from '../../pkg/netlink/index.js'
import { netnsKey } from '../../pkg/netns.js'
import type { MechanismRegistry } from '../mechanisms/registry.js'
import type { Registry } from '../registry/registry.js'
import type { ConnectionEntry, ConnectionTable } from '../connections/table.js'
import type { CallContext } from '../server/handler.js'
import type { Logger } from '../server/log.js'
import type { PipelineHandler } from './handler.js'
import type { TableRecords } from './records.js'
import { endpointInfo } from './endpoints.js'
import type { DatapathRecord } from './types.js'
import type { OrphanSweeper } from './sweep.js'
import type { SweptLink } from '../mechanisms/types.js'
import type { ReconcileVerdict, RequestedMechanism } from '../mechanisms/types.js'
import { HealIndex } from './heal-index.js'
import { podOf, watchCall, watchesCalls, type PipelineObserver } from './observe.js'
import { withLogFields } from '../server/log.js'

export interface HealerOptions {
  registry: Registry
  table: ConnectionTable
  records: TableRecords
  handler: PipelineHandler
  sessions: NetlinkSessions
  mechanisms: MechanismRegistry
  log: Logger
  /** How often endpoint and client namespaces are checked for disappearance. */
  pollMs: number
  now?: () => number
  /** The orphan sweep (restart, and rate-limited from the poll). */
  sweeper?: OrphanSweeper
  /** This node: only its own endpoints' namespaces are judged here (a shared store lists every node's). */
  nodeName?: string
  /** Metrics and traces of each heal (./observe.ts). */
  observe?: PipelineObserver
}

/** Why a connection is healed (the `reason` of heal metrics and spans). */
export type HealReason = 'endpoint-gone' | 'node-lost' | 'datapath-lost' | 'retry'

const neverAborted = new AbortController().signal
const RETRY_BASE_MS = 500
const RETRY_MAX_MS = 30_000
/** Client namespaces checked for disappearance per poll (round robin). */
export const CLIENT_CHECKS_PER_POLL = 64
/** The netlink sessions' own sweep (one stat per cached namespace) runs at most this often. */
const SESSION_SWEEP_MS = 5_000

interface Backoff {
  failures: number
  dueAt: number
}

export class Healer {
  /** Endpoints to avoid per connection id while it is being healed away from them. */
  readonly avoid = new Map<string, Set<string>>()
  private timer: NodeJS.Timeout | undefined
  private unsubscribe: (() => void) | undefined
  private readonly unsubscribeTable: () => void
  /** What healing watches (records, states, endpoint-side identities), following the table from here on. */
  private readonly index: HealIndex
  private running: Promise<void> = Promise.resolve()
  /** DOWN connections whose last heal failed: when to try again. */
  private readonly backoff = new Map<string, Backoff>()
  private readonly now: () => number
  private lastSessionSweep = -Infinity

  constructor(private readonly opts: HealerOptions) {
    this.now = opts.now ?? Date.now
    this.index = new HealIndex({ namespacesOf: (rec) => opts.mechanisms.get(rec.mechanism.type)?.namespaces(rec), netnsKey })
    this.unsubscribeTable = opts.table.subscribe((ev) => {
      this.index.apply(ev)
      if (ev.type === 'delete') this.backoff.delete(ev.entry.connection.id)
    })
    for (const entry of opts.table.list()) this.index.set(entry)
  }

  start(): void {
    this.unsubscribe = this.opts.registry.subscribe((ev) => {
      if (ev.kind !== 'endpoint') return
      if (ev.type === 'delete') this.schedule(() => this.healEndpoint(ev.endpoint.name, ev.reason))
      // A new endpoint is a new chance for every DOWN connection of its services; a refresh, for those due.
      // A re-registration may have moved it: its connections follow it.
      else
        this.schedule(async () => {
          await this.checkDatapaths()
          await this.retryDown(new Set(ev.endpoint.networkServiceNames), ev.reason === 'registered')
        })
    })
    this.timer = setInterval(() => this.schedule(() => this.poll()), this.opts.pollMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.unsubscribe?.()
    this.unsubscribeTable()
    if (this.timer !== undefined) clearInterval(this.timer)
    await this.running
  }

  /** Work runs one batch at a time; a failure is logged, never left floating. */
  private schedule(work: () => Promise<void>): void {
    this.running = this.running.then(work).catch((err: unknown) => this.opts.log.error('heal failed', { err }))
  }

  /** Waits for scheduled healing to finish (tests, shutdown). */
  idle(): Promise<void> {
    return this.running
  }

  /** Sweeps orphan links now (restart reconciliation; tests). */
  async sweepOrphans(): Promise<SweptLink[]> {
    return (await this.opts.sweeper?.sweep()) ?? []
  }

  private async poll(): Promise<void> {
    if (this.now() - this.lastSessionSweep >= SESSION_SWEEP_MS) {
      this.lastSessionSweep = this.now()
      this.opts.sessions.sweep()
    }
    await this.opts.sweeper?.maybeSweep()
    for (const s of this.opts.registry.findEndpoints()) {
      // The same netns the pipeline uses: the extension's path, else the `file://` url. Another node's
      // endpoint names a netns of that node: not ours to judge.
      const info = endpointInfo(s, this.opts.nodeName ?? '')
      // An endpoint serving the NSM API has no netns of its own here (its answers name one per connection).
      if (info === undefined || !info.local || info.netns === '') continue
      const netns = info.netns
      // Judged again by the policy: a path accepted at registration may open the host's netns now.
      const why = this.endpointNetnsProblem(netns)
      if (why !== undefined) {
        this.opts.log.warn(`endpoint netns ${why}: unregistering it`, { endpoint: s.endpoint.name, netns })
        // The registry's delete event schedules healEndpoint.
        await this.opts.registry.unregisterEndpoint(s.endpoint.name)
      }
    }
    for (const [netns, ids] of this.index.nextClientNamespaces(CLIENT_CHECKS_PER_POLL)) {
      if (netnsKey(netns) !== undefined) continue
      this.opts.sessions.drop(netns) // its socket no longer pins the namespace
      for (const id of ids) {
        const rec = this.index.record(id)
        if (rec !== undefined) await this.closeVanishedClient(rec)
      }
    }
    await this.checkDatapaths()
    await this.retryDown(undefined, false)
  }

  /** Why an endpoint's netns path cannot serve any more (gone, or refused by the netns policy), if so. */
  private endpointNetnsProblem(netns: string): string | undefined {
    try {
      return this.opts.sessions.policy.identify(netns).key === undefined ? 'is gone' : undefined
    } catch (err) {
      return `is refused (${err instanceof Error ? err.message : String(err)})`
    }
  }

  /**
   * UP connections whose endpoint side lost its namespace (gone, or another one now at that path) or whose
   * endpoint now lives in another netns (re-registered): rebuilt through the pipeline, DOWN meanwhile. One
   * stat per endpoint-side namespace, one registry lookup per endpoint; a connection whose client is gone
   * too is closed instead.
   */
  private async checkDatapaths(): Promise<void> {
    const stale: Array<{ rec: DatapathRecord; why: string }> = []
    for (const [epNetns, group] of this.index.endpointSides()) {
      const now = netnsKey(epNetns)
      for (const [endpointName, byKey] of group) {
        const stored = this.opts.registry.endpoint(endpointName)
        const registered = stored === undefined ? undefined : endpointInfo(stored, '')?.netns
        for (const [was, ids] of byKey) {
          let why: string | undefined
          if (registered !== undefined && registered !== '' && registered !== epNetns) why = `endpoint ${endpointName} moved to ${registered}`
          else if (now === undefined) why = `endpoint netns ${epNetns} is gone`
          else if (was !== '' && was !== now) why = `endpoint netns ${epNetns} is another namespace now`
          if (why === undefined) continue
          for (const id of ids) {
            const rec = this.index.record(id)
            if (rec !== undefined) stale.push({ rec, why })
          }
        }
      }
    }
    if (stale.length === 0) return
    const gone = new Map<string, boolean>()
    const clientGone = (netns: string): boolean => {
      // '' = the endpoint's half of a cross-connect whose client is on another node: this half is closed,
      // and that node's agent heals its client (it sees the close on its monitor stream).
      if (netns === '') return true
      let g = gone.get(netns)
      if (g === undefined) gone.set(netns, (g = netnsKey(netns) === undefined))
      return g
    }
    const rebuild = stale.filter(({ rec }) => !clientGone(rec.clientNetns))
    for (const { rec } of stale) if (clientGone(rec.clientNetns)) await this.closeVanishedClient(rec)
    for (const { rec, why } of rebuild) this.opts.log.info('connection lost its datapath: rebuilding', { connection: rec.connectionId, why })
    await Promise.all(rebuild.map(({ rec }) => this.reselect(rec, undefined, 'datapath-lost')))
  }

  /**
   * Re-requests the DOWN connections (of `services`, when given) whose backoff is due, or all of them with
   * `now`: each one's failure doubles its wait, a success forgets it.
   */
  private async retryDown(services: ReadonlySet<string> | undefined, now: boolean): Promise<void> {
    const t = this.now()
    const due = this.index.down().filter((rec) => {
      if (services !== undefined && !services.has(rec.service)) return false
      return now || (this.backoff.get(rec.connectionId)?.dueAt ?? 0) <= t
    })
    if (due.length === 0) return
    this.opts.log.info('retrying DOWN connections', { connections: due.length })
    await Promise.all(due.map((rec) => this.reselect(rec, undefined, 'retry')))
  }

  async healEndpoint(name: string, reason: string): Promise<void> {
    const affected = this.index.ofEndpoint(name)
    if (affected.length === 0) return
    this.opts.log.info('healing connections of endpoint', { endpoint: name, reason, connections: affected.length })
    await Promise.all(affected.map((rec) => this.reselect(rec, name, 'endpoint-gone')))
  }

  /**
   * Re-requests these connections with every endpoint in `avoid` excluded (a peer node lost: all of its
   * endpoints), as a heal does; resolves when each has healed or stays DOWN for the retries.
   */
  async healAway(records: readonly DatapathRecord[], avoid: ReadonlySet<string>, reason: string): Promise<void> {
    if (records.length === 0) return
    this.opts.log.info('healing connections away from their endpoints', { reason, connections: records.length })
    await Promise.all(records.map((rec) => this.reselect(rec, avoid, 'node-lost')))
  }

  /**
   * An UP connection requested again as it is (a remote cross-connect's refresh: the peer renews its half;
   * nothing is rebuilt while the datapath is intact). Rejects with the pipeline's error.
   */
  async refresh(rec: DatapathRecord): Promise<void> {
    const id = rec.connectionId
    await this.opts.handler.locks.run(id, async () => {
      const entry = this.opts.table.get(id)
      if (entry === undefined || entry.connection.state !== State.UP || this.opts.records.record(id) === undefined) return
      const connection = { ...requestOf(entry.connection, rec, this.opts.mechanisms.of(rec).connectionMechanism(rec)), state: State.UP }
      await this.opts.handler.requestLocked({ connection, mechanismPreferences: [] }, this.context(entry.attachment))
    })
  }

  private async reselect(rec: DatapathRecord, avoid: string | ReadonlySet<string> | undefined, reason: HealReason): Promise<void> {
    const id = rec.connectionId
    // The endpoint's half of a cross-connect is not healed here: its client's agent reselects (and closes
    // this half, or lets it expire); this agent only closes it when its endpoint is gone.
    if (rec.clientNetns === '') return this.closeVanishedClient(rec)
    const pod = podOf(rec.clientLabels)
    const subject = { connection: id, service: rec.service, ...(pod === undefined ? {} : { pod }) }
    await withLogFields(subject, () => this.opts.handler.locks.run(id, async () => {
      const entry = this.opts.table.get(id)
      if (entry === undefined || this.opts.records.record(id) === undefined) {
        this.backoff.delete(id)
        return // closed meanwhile
      }
      const heal = (): Promise<boolean> => this.healLocked(id, entry, rec, avoid)
      const observe = this.opts.observe
      await (watchesCalls(observe) ? watchCall(observe, { op: 'heal', subject, reason }, heal) : heal())
    }))
  }

  /** One heal, holding the connection's lock: true when it healed, false when it stays DOWN (retried). */
  private async healLocked(id: string, entry: ConnectionEntry, rec: DatapathRecord, avoid: string | ReadonlySet<string> | undefined): Promise<boolean> {
    await this.opts.table.setState(id, State.DOWN)
    if (avoid !== undefined) this.avoid.set(id, new Set(typeof avoid === 'string' ? [avoid] : avoid))
    try {
      const connection = requestOf(entry.connection, rec, this.opts.mechanisms.of(rec).connectionMechanism(rec))
      await this.opts.handler.requestLocked({ connection, mechanismPreferences: [] }, this.context(entry.attachment))
      this.backoff.delete(id)
      this.opts.log.info('healed', { connection: id })
      return true
    } catch (err) {
      const failures = (this.backoff.get(id)?.failures ?? 0) + 1
      const waitMs = Math.min(RETRY_BASE_MS * 2 ** (failures - 1), RETRY_MAX_MS)
      this.backoff.set(id, { failures, dueAt: this.now() + waitMs })
      this.opts.log.warn('heal: no replacement yet; the connection stays DOWN', { connection: id, retryInMs: waitMs, err })
      return false
    } finally {
      this.avoid.delete(id)
    }
  }

  private async closeVanishedClient(rec: DatapathRecord): Promise<void> {
    const entry = this.opts.table.get(rec.connectionId)
    if (entry === undefined) return
    if (rec.clientNetns === '') this.opts.log.info("closing the endpoint's half of a remote cross-connect (its endpoint is gone; the client's agent heals)", { connection: rec.connectionId, endpoint: rec.endpointName })
    else this.opts.log.info('client netns is gone: closing its connection', { connection: rec.connectionId, netns: rec.clientNetns })
    await this.opts.handler.close(entry.connection, this.context(entry.attachment))
  }

  /** After a restart: keep intact datapaths, rebuild broken ones, clean up vanished clients. */
  async reconcile(): Promise<{ kept: number; rebuilt: number; closed: number; swept: number }> {
    const out = { kept: 0, rebuilt: 0, closed: 0, swept: (await this.sweepOrphans()).length }
    for (const rec of this.opts.records.all()) {
      let verdict: ReconcileVerdict
      try {
        verdict = await this.opts.mechanisms.of(rec).reconcile(rec)
      } catch (err) {
        this.opts.log.error('reconcile: cannot judge the datapath; leaving it as it is', { connection: rec.connectionId, err })
        continue
      }
      if (verdict.state === 'client-gone') {
        await this.closeVanishedClient(rec)
        out.closed++
      } else if (verdict.state === 'intact') {
        out.kept++
      } else {
        this.opts.log.info('reconcile: rebuilding a broken datapath', { connection: rec.connectionId, problems: verdict.problems.map((p) => p.message) })
        await this.reselect(rec, undefined, 'datapath-lost')
        out.rebuilt++
      }
    }
    return out
  }

  private context(attachment: CallContext['attachment']): CallContext {
    return { signal: neverAborted, metadata: new Map(), attachment }
  }
}

/** The request that re-creates a connection: same id, service, labels, and the mechanism that built it. */
function requestOf(conn: Connection, rec: DatapathRecord, mechanism: RequestedMechanism): Connection {
  // Not pinned to the endpoint it had (a pin means "that one or fail"): selection still tries it first
  // (the stored record's endpoint) unless healing excludes it.
  return { ...conn, labels: rec.clientLabels, mechanism, state: State.DOWN, networkServiceEndpointName: '' }
}
