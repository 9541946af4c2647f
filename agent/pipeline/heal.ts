// Healing and restart reconciliation (ARCHITECTURE §10).
//
// - An endpoint unregistered or expired (registry event), or whose netns disappeared (polled), makes
//   every connection it served go DOWN and be re-requested through the same pipeline with that endpoint
//   excluded: the client keeps its interface name and, where the new endpoint's pools allow, its
//   addresses; the mechanism element replaces the old datapath. MonitorConnections sees DOWN, then UP.
// - A connection whose client netns disappeared (a pod removed without DEL) is closed, so nothing leaks.
// - After a restart: each stored datapath is judged by its own mechanism (agent/mechanisms/: the same
//   intactness test as CHECK): intact ones are left alone (the datapath keeps flowing), broken ones are
//   rebuilt through the pipeline, those whose client vanished are cleaned up.
// Healing takes the same per-id lock as Request and Close.
import { State, type Connection } from '../../proto/gen/networkservice/connection.js'
import type { NetlinkSessions } from '../../pkg/netlink/index.js'
import { netnsKey } from '../../pkg/netns.js'
import type { MechanismRegistry } from '../mechanisms/registry.js'
import type { Registry } from '../registry/registry.js'
import type { ConnectionTable } from '../connections/table.js'
import type { CallContext } from '../server/handler.js'
import type { Logger } from '../server/log.js'
import type { PipelineHandler } from './handler.js'
import type { TableRecords } from './records.js'
import { endpointInfo } from './endpoints.js'
import type { DatapathRecord } from './types.js'
import type { ReconcileVerdict, RequestedMechanism } from '../mechanisms/types.js'

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
}

const neverAborted = new AbortController().signal

export class Healer {
  /** Endpoints to avoid per connection id while it is being healed away from them. */
  readonly avoid = new Map<string, Set<string>>()
  private timer: NodeJS.Timeout | undefined
  private unsubscribe: (() => void) | undefined
  private running: Promise<void> = Promise.resolve()

  constructor(private readonly opts: HealerOptions) {}

  start(): void {
    this.unsubscribe = this.opts.registry.subscribe((ev) => {
      if (ev.kind === 'endpoint' && ev.type === 'delete') this.schedule(() => this.healEndpoint(ev.endpoint.name, ev.reason))
    })
    this.timer = setInterval(() => this.schedule(() => this.poll()), this.opts.pollMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.unsubscribe?.()
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

  private async poll(): Promise<void> {
    this.opts.sessions.sweep()
    for (const s of this.opts.registry.findEndpoints()) {
      // The same netns the pipeline uses: the extension's path, else the `file://` url.
      const netns = endpointInfo(s, '')?.netns
      if (netns !== undefined && netnsKey(netns) === undefined) {
        this.opts.log.warn('endpoint netns is gone: unregistering it', { endpoint: s.endpoint.name, netns })
        // The registry's delete event schedules healEndpoint.
        await this.opts.registry.unregisterEndpoint(s.endpoint.name)
      }
    }
    for (const rec of this.opts.records.all()) {
      if (netnsKey(rec.clientNetns) === undefined) await this.closeVanishedClient(rec)
    }
  }

  async healEndpoint(name: string, reason: string): Promise<void> {
    const affected = this.opts.records.all().filter((r) => r.endpointName === name)
    if (affected.length === 0) return
    this.opts.log.info('healing connections of endpoint', { endpoint: name, reason, connections: affected.length })
    await Promise.all(affected.map((rec) => this.reselect(rec, name)))
  }

  private async reselect(rec: DatapathRecord, avoid: string | undefined): Promise<void> {
    const id = rec.connectionId
    await this.opts.handler.locks.run(id, async () => {
      const entry = this.opts.table.get(id)
      if (entry === undefined || this.opts.records.record(id) === undefined) return // closed meanwhile
      await this.opts.table.setState(id, State.DOWN)
      if (avoid !== undefined) this.avoid.set(id, new Set([avoid]))
      try {
        const connection = requestOf(entry.connection, rec, this.opts.mechanisms.of(rec).connectionMechanism(rec))
        await this.opts.handler.requestLocked({ connection, mechanismPreferences: [] }, this.context(entry.attachment))
        this.opts.log.info('healed', { connection: id })
      } catch (err) {
        this.opts.log.warn('heal: no replacement yet; the connection stays DOWN', { connection: id, err })
      } finally {
        this.avoid.delete(id)
      }
    })
  }

  private async closeVanishedClient(rec: DatapathRecord): Promise<void> {
    const entry = this.opts.table.get(rec.connectionId)
    if (entry === undefined) return
    this.opts.log.info('client netns is gone: closing its connection', { connection: rec.connectionId, netns: rec.clientNetns })
    await this.opts.handler.close(entry.connection, this.context(entry.attachment))
  }

  /** After a restart: keep intact datapaths, rebuild broken ones, clean up vanished clients. */
  async reconcile(): Promise<{ kept: number; rebuilt: number; closed: number }> {
    const out = { kept: 0, rebuilt: 0, closed: 0 }
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
        await this.reselect(rec, undefined)
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
  return { ...conn, labels: rec.clientLabels, mechanism, state: State.DOWN }
}
