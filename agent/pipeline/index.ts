// agent/pipeline: the request pipeline, declared as one list (ARCHITECTURE, rule 3), and the dataplane the
// agent's main plugs into its server: handler, CHECK, healing and restart reconciliation.
//
//   validate → select → ipam (point-to-point) → mechanism → persist
//
// The mechanisms (agent/mechanisms/: KERNEL, a local veth, today) are one registry built here: validate
// picks the requested type from it, the mechanism element builds through it, and CHECK and healing ask
// the implementation that built a record. One netns policy (pkg/netns-policy.ts) judges every netns
// path: the registry's, a request's, and every namespace the netlink sessions open.
//
// Monitor events come from the connection table, which persist writes.
import { RoundRobin } from '../select/index.js'
import type { Registry } from '../registry/registry.js'
import type { ConnectionTable, ConnectionEntry } from '../connections/table.js'
import type { Logger } from '../server/log.js'
import type { CheckProblem } from '../../proto/gen/nsmcni/nsmcni.js'
import { LinkReaper, NetlinkSessions } from '../../pkg/netlink/index.js'
import { NetnsPolicy } from '../../pkg/netns-policy.js'
import { kernelMechanism } from '../mechanisms/kernel/index.js'
import { MechanismRegistry } from '../mechanisms/registry.js'
import { buildChain, type Element } from './chain.js'
import { endpointInfo } from './endpoints.js'
import { pipelineHandler, type PipelineHandler } from './handler.js'
import { Healer } from './heal.js'
import { P2PPool, pointToPointIpam, type IpamClaims } from './ipam.js'
import { mechanismElement } from './mechanism.js'
import { persist } from './persist.js'
import { TableRecords } from './records.js'
import { select } from './select.js'
import { validate } from './validate.js'
import { OrphanSweeper } from './sweep.js'
import type { EndpointInfo } from './types.js'

export interface DataplaneOptions {
  registry: Registry
  table: ConnectionTable
  nodeName: string
  /** The netns policy (or the agent config's patterns to build it from: pkg/netns-policy.ts). */
  netnsAllow: NetnsPolicy | readonly string[]
  log: Logger
  /** A shared store's address claims (agent/store/claims.ts): pairs are claimed cluster-wide. */
  claims?: IpamClaims
  defaultMtu?: number
  healPollMs?: number
  /** The periodic orphan sweep runs at most this often (default 30 s; restart reconciliation always sweeps). */
  sweepMs?: number
  /**
   * Also sweep every namespace under the netns policy's directories (agent/pipeline/sweep.ts: only when
   * this agent is the only one on the host tagging links). Default false.
   */
  sweepAllowlistDirs?: boolean
  now?: () => number
  /** Test hook: extra elements inserted after the named element (fault injection). */
  insertAfter?: { after: string; element: Element }
}

export interface Dataplane {
  handler: PipelineHandler
  healer: Healer
  roundRobin: RoundRobin
  sessions: NetlinkSessions
  /** The one netns policy every path is judged by (also for the agent's CNI handlers). */
  netnsPolicy: NetnsPolicy
  mechanisms: MechanismRegistry
  pool: P2PPool
  records: TableRecords
  elements: Element[]
  check(entry: ConnectionEntry): Promise<CheckProblem[]>
  stop(): Promise<void>
}

export function createDataplane(o: DataplaneOptions): Dataplane {
  const netnsPolicy = NetnsPolicy.from(o.netnsAllow)
  const sessions = new NetlinkSessions(netnsPolicy)
  const mechanisms = new MechanismRegistry([kernelMechanism({ sessions, reaper: new LinkReaper(sessions), log: o.log })])
  const records = new TableRecords(o.table)
  const pool = P2PPool.fromRecords(records.all().map((r) => r.p2p))
  const roundRobin = new RoundRobin()
  const now = o.now ?? Date.now
  const onUndoError = (err: unknown): void => o.log.error('undo failed', { err })
  // Endpoints this node can reach: its own (a shared store lists every node's; reaching another node's
  // needs the mesh across nodes).
  const endpoints = (): EndpointInfo[] => o.registry.findEndpoints().flatMap((s) => endpointInfo(s, o.nodeName) ?? []).filter((e) => e.local)
  let healer: Healer | undefined

  const elements: Element[] = [
    validate({ mechanisms, recordOf: (id) => records.record(id) }),
    select({
      service: (name) => o.registry.service(name),
      endpoints,
      roundRobin,
      now,
      exclude: (id) => healer?.avoid.get(id) ?? [],
    }),
    pointToPointIpam({
      pool,
      ...(o.claims === undefined ? {} : { claims: o.claims }),
      endpointExcluded: (name) => o.registry.endpoint(name)?.extension.excludedPrefixes ?? [],
      composedPools: (netns) => endpoints().find((e) => e.netns === netns)?.pools ?? [],
      onUndoError,
      onAddressInUse: (connection, addresses) => o.log.warn('addresses in use in the kernel: blocked until the next orphan sweep, trying the next pair', { connection, addresses }),
    }),
    mechanismElement({ mechanisms, defaultMtu: o.defaultMtu ?? 1500, onUndoError }),
    persist(records),
  ]
  if (o.insertAfter !== undefined) {
    const i = elements.findIndex((e) => e.name === o.insertAfter?.after)
    if (i < 0) throw new Error(`insertAfter: no element ${o.insertAfter.after}`)
    elements.splice(i + 1, 0, o.insertAfter.element)
  }
  const handler = pipelineHandler(buildChain(elements), records)
  const sweeper = new OrphanSweeper({
    records,
    mechanisms,
    endpointNamespaces: () => endpoints().map((e) => e.netns),
    locks: handler.locks,
    pool,
    policy: netnsPolicy,
    log: o.log,
    scanDirs: o.sweepAllowlistDirs ?? false,
    minIntervalMs: o.sweepMs ?? 30_000,
  })
  healer = new Healer({ registry: o.registry, table: o.table, records, handler, sessions, mechanisms, log: o.log, pollMs: o.healPollMs ?? 200, sweeper, nodeName: o.nodeName })

  return {
    handler,
    healer,
    roundRobin,
    sessions,
    netnsPolicy,
    mechanisms,
    pool,
    records,
    elements,
    /** CNI CHECK: the mechanism that built the connection verifies both sides (links, up, addresses, routes). */
    async check(entry) {
      const id = entry.connection.id
      const rec = records.record(id)
      if (rec === undefined) return [{ code: 'connection-missing', message: `connection ${id} has no datapath record`, connectionId: id }]
      const mechanism = mechanisms.get(rec.mechanism.type)
      if (mechanism === undefined) return [{ code: 'mechanism-unknown', message: `connection ${id}: no mechanism ${rec.mechanism.type} to check it`, connectionId: id }]
      return mechanism.check(rec)
    },
    async stop() {
      await healer?.stop()
      sessions.closeAll()
    },
  }
}
