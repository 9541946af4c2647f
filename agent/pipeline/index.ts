// agent/pipeline: the request pipeline, declared as one list (CONVENTIONS 1), and the dataplane the
// agent's main plugs into its server: handler, CHECK, healing and restart reconciliation.
//
//   attach-once → validate → select → ipam (point-to-point) → mechanism (KERNEL, local veth) → persist
//
// attach-once refuses a CNI ADD's Request (`nsmcni-add` metadata) for an attachment or connection id that
// exists already (106); it is first so such a create costs nothing and is never answered as a refresh.
// Monitor events come from the connection table, which persist writes.
import { RoundRobin } from '../select/index.js'
import type { Registry } from '../registry/registry.js'
import type { ConnectionTable, ConnectionEntry } from '../connections/table.js'
import type { Logger } from '../server/log.js'
import type { CheckProblem } from '../../proto/gen/nsmcni/nsmcni.js'
import { LinkReaper, NetlinkSessions, getLink, listAddresses } from '../../pkg/netlink/index.js'
import { NetnsAllowlist } from '../../pkg/netns.js'
import { attachOnce } from './attach-once.js'
import { buildChain, type Element } from './chain.js'
import { endpointInfo } from './endpoints.js'
import { pipelineHandler, type PipelineHandler } from './handler.js'
import { Healer } from './heal.js'
import { P2PPool, pointToPointIpam } from './ipam.js'
import { kernelMechanism } from './kernel-mechanism.js'
import { persist } from './persist.js'
import { TableRecords } from './records.js'
import { select } from './select.js'
import { validate } from './validate.js'
import type { DatapathRecord, EndpointInfo } from './types.js'

export interface DataplaneOptions {
  registry: Registry
  table: ConnectionTable
  nodeName: string
  // The agent config netns allowlist: "/dir/<star>" entries, and "/proc/<star>/ns/net" for pid paths.
  netnsAllow: readonly string[]
  log: Logger
  defaultMtu?: number
  healPollMs?: number
  now?: () => number
  /** Test hook: extra elements inserted after the named element (fault injection). */
  insertAfter?: { after: string; element: Element }
}

export interface Dataplane {
  handler: PipelineHandler
  healer: Healer
  roundRobin: RoundRobin
  sessions: NetlinkSessions
  pool: P2PPool
  records: TableRecords
  elements: Element[]
  check(entry: ConnectionEntry): Promise<CheckProblem[]>
  stop(): Promise<void>
}

export function createDataplane(o: DataplaneOptions): Dataplane {
  const allowlist = new NetnsAllowlist({
    prefixes: o.netnsAllow.filter((p) => p.endsWith('/*') && !p.startsWith('/proc/')).map((p) => p.slice(0, -1)),
    allowProcPid: o.netnsAllow.includes('/proc/*/ns/net'),
  })
  const sessions = new NetlinkSessions(allowlist)
  const records = new TableRecords(o.table)
  const pool = P2PPool.fromRecords(records.all().map((r) => r.p2p))
  const roundRobin = new RoundRobin()
  const now = o.now ?? Date.now
  const onUndoError = (err: unknown): void => o.log.error('undo failed', { err })
  const endpoints = (): EndpointInfo[] => o.registry.findEndpoints().flatMap((s) => endpointInfo(s, o.nodeName) ?? [])
  let healer: Healer | undefined

  const elements: Element[] = [
    attachOnce({
      connection: (id) => o.table.get(id),
      connectionsOf: (a) => o.table.byAttachment(a.network, a.containerId, a.ifname),
    }),
    validate({ allowlist, recordOf: (id) => records.record(id) }),
    select({
      service: (name) => o.registry.service(name),
      endpoints,
      roundRobin,
      now,
      exclude: (id) => healer?.avoid.get(id) ?? [],
    }),
    pointToPointIpam({
      pool,
      endpointExcluded: (name) => o.registry.endpoint(name)?.extension.excludedPrefixes ?? [],
      onUndoError,
    }),
    kernelMechanism({
      sessions,
      defaultMtu: o.defaultMtu ?? 1500,
      endpointAt: (netns) => endpoints().find((e) => e.netns === netns),
      onUndoError,
      reaper: new LinkReaper(sessions),
    }),
    persist(records),
  ]
  if (o.insertAfter !== undefined) {
    const i = elements.findIndex((e) => e.name === o.insertAfter?.after)
    if (i < 0) throw new Error(`insertAfter: no element ${o.insertAfter.after}`)
    elements.splice(i + 1, 0, o.insertAfter.element)
  }
  const handler = pipelineHandler(buildChain(elements), records)
  healer = new Healer({ registry: o.registry, table: o.table, records, handler, sessions, log: o.log, pollMs: o.healPollMs ?? 200 })

  return {
    handler,
    healer,
    roundRobin,
    sessions,
    pool,
    records,
    elements,
    async check(entry) {
      const rec = records.record(entry.connection.id)
      if (rec === undefined) return [{ code: 'connection-missing', message: `connection ${entry.connection.id} has no datapath record`, connectionId: entry.connection.id }]
      return checkDatapath(sessions, rec)
    },
    async stop() {
      await healer?.stop()
      sessions.closeAll()
    },
  }
}

/** CHECK: the client's interface exists, is up, and holds its addresses. */
async function checkDatapath(sessions: NetlinkSessions, rec: DatapathRecord): Promise<CheckProblem[]> {
  const problems: CheckProblem[] = []
  const add = (code: string, message: string): void => {
    problems.push({ code, message, connectionId: rec.connectionId })
  }
  try {
    const h = sessions.forNetns(rec.clientNetns)
    const link = await getLink(h, rec.clientIfname)
    if (link === undefined) add('link-missing', `interface ${rec.clientIfname} is missing in ${rec.clientNetns}`)
    else {
      if (!link.up) add('link-down', `interface ${rec.clientIfname} is down`)
      const have = new Set((await listAddresses(h, rec.clientIfname)).map((a) => a.cidr))
      for (const a of rec.src) if (!have.has(a)) add('address-missing', `address ${a} is missing on ${rec.clientIfname}`)
    }
  } catch (err) {
    add('netns-missing', `client netns ${rec.clientNetns}: ${(err as Error).message}`)
  }
  return problems
}
