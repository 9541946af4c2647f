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
import { forward, type Peers, type VniAllocator } from './forward.js'
import { pathElement } from './path.js'
import { RemoteCrossConnects } from './remote.js'
import { nseElement, NseClients } from './nse.js'
import { vxlanMechanism } from '../mechanisms/vxlan/index.js'
import { sriovMechanism, type TakeStep } from '../mechanisms/sriov/index.js'
import { memifMechanism, type ForwarderControl } from '../mechanisms/memif/index.js'
import { parsePrefix, formatPrefix } from '../../ipam/p2p/index.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { PipelineObserver } from './observe.js'

/** The API URL of a registered endpoint that serves the NSM API itself. */
function apiOf(registry: Registry, name: string): string | undefined {
  const s = registry.endpoint(name)
  return s === undefined ? undefined : endpointInfo(s, '')?.api
}

/** The pools a remote composed client sent as its request's dst_routes (valid prefixes only). */
function requestedPools(c: Connection): string[] {
  return (c.context?.ipContext?.dstRoutes ?? []).flatMap((r) => {
    try {
      return [formatPrefix(parsePrefix(r.prefix))]
    } catch {
      return []
    }
  })
}

export interface DataplaneOptions {
  registry: Registry
  table: ConnectionTable
  nodeName: string
  /** The netns policy (or the agent config's patterns to build it from: pkg/netns-policy.ts). */
  netnsAllow: NetnsPolicy | readonly string[]
  /** Link deletions from a pool thread (pkg/netlink/aside.ts; default true). */
  netlinkAside?: boolean
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
  /** The mesh across nodes (ARCHITECTURE §12): endpoints of other nodes are reached over VXLAN through their agents. */
  mesh?: MeshOptions
  /** Metrics and traces of Requests, Closes, heals and each element (./observe.ts); none: nothing wrapped. */
  observe?: PipelineObserver
  /** Test hook: extra elements inserted after the named element (fault injection). */
  insertAfter?: { after: string; element: Element }
  /** The SR-IOV mechanism (agent/mechanisms/sriov/); without it a request for a VF is refused (104). */
  sriov?: SriovOptions
  /** The MEMIF mechanism (agent/mechanisms/memif/); without it a request for a memif is refused (104). */
  memif?: MemifOptions
}

export interface MemifOptions {
  /** `--memif-root`. */
  root: string
  /** This agent's key in its memif veth ends' tags (agent/mechanisms/memif/endpoint.ts agentKey). */
  agent: string
  /** The forwarder supervisor (agent/mechanisms/memif/forwarder.ts). */
  forwarder: ForwarderControl
}

export interface SriovOptions {
  /** `--sysfs-root`. */
  sysfsRoot: string
  /** `--devinfo-dir`. */
  devinfoDir: string
  /** Where VF claims are kept (`<state dir>/sriov`). */
  claimDir: string
  /** Test seam (agent/mechanisms/sriov/vf.ts TakeStep). */
  afterStep?: (step: TakeStep) => void | Promise<void>
}

export interface MeshOptions {
  /** This node's underlay addresses (VXLAN `local`). */
  underlay: readonly string[]
  peers: Peers & { forget(node: string): void }
  /** Names of the nodes with a live record. */
  liveNodes(): ReadonlySet<string>
  vnis: VniAllocator
  /** A path segment's lifetime; remote halves are refreshed every third of it (default 60 s). */
  lifetimeMs?: number
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
  /** Remote cross-connects' refresh, monitoring and expiry (with `mesh`). */
  remote: RemoteCrossConnects | undefined
  check(entry: ConnectionEntry): Promise<CheckProblem[]>
  stop(): Promise<void>
}

export function createDataplane(o: DataplaneOptions): Dataplane {
  const netnsPolicy = NetnsPolicy.from(o.netnsAllow)
  const sessions = new NetlinkSessions(netnsPolicy, { aside: o.netlinkAside ?? true })
  const reaper = new LinkReaper(sessions)
  const vxlan = o.mesh === undefined ? undefined : vxlanMechanism({ sessions, underlay: o.mesh.underlay, defaultMtu: o.defaultMtu ?? 1500, reaper, log: o.log })
  const kernel = kernelMechanism({ sessions, reaper, log: o.log })
  const sriov = o.sriov === undefined ? undefined : sriovMechanism({ sessions, ...o.sriov, clientSide: (r, field) => kernel.parseRequest(r, field), log: o.log })
  const memif = o.memif === undefined ? undefined : memifMechanism({ sessions, ...o.memif, clientSide: (r, field) => kernel.parseRequest(r, field), log: o.log })
  const mechanisms = new MechanismRegistry([kernel, ...(vxlan === undefined ? [] : [vxlan]), ...(sriov === undefined ? [] : [sriov]), ...(memif === undefined ? [] : [memif])])
  const records = new TableRecords(o.table)
  const pool = P2PPool.fromRecords(records.all().map((r) => r.p2p))
  const roundRobin = new RoundRobin()
  const now = o.now ?? Date.now
  const onUndoError = (err: unknown): void => o.log.error('undo failed', { err })
  // This node's endpoints (their namespaces are its to watch, sweep and allocate for).
  const endpoints = (): EndpointInfo[] => o.registry.findEndpoints().flatMap((s) => endpointInfo(s, o.nodeName) ?? []).filter((e) => e.local)
  // Endpoints selection may choose: this node's, and with the mesh those of other nodes with a live record.
  const reachable = (): EndpointInfo[] => {
    const all = o.registry.findEndpoints().flatMap((s) => endpointInfo(s, o.nodeName) ?? [])
    if (o.mesh === undefined) return all.filter((e) => e.local)
    const live = o.mesh.liveNodes()
    return all.filter((e) => e.local || live.has(e.node))
  }
  // Calls to NSM endpoints carry the running span's trace context, as calls to peer agents do.
  const outgoing = o.observe?.outgoing?.bind(o.observe)
  const nseClients = new NseClients(outgoing)
  const composedPools = (netns: string): readonly string[] => endpoints().find((e) => e.netns === netns)?.pools ?? []
  let healer: Healer | undefined
  const lifetimeMs = o.mesh?.lifetimeMs ?? 60_000

  const elements: Element[] = [
    validate({ mechanisms, recordOf: (id) => records.record(id) }),
    pathElement({ name: o.nodeName, lifetimeMs, now }),
    select({
      service: (name) => o.registry.service(name),
      endpoints: reachable,
      roundRobin,
      now,
      exclude: (id) => healer?.avoid.get(id) ?? [],
    }),
    ...(o.mesh === undefined || vxlan === undefined ? [] : [forward({ underlay: o.mesh.underlay, peers: o.mesh.peers, vnis: o.mesh.vnis, vxlan, composedPools, log: o.log, onUndoError })]),
    nseElement({ policy: netnsPolicy, apiOf: (name) => (name === '' ? undefined : apiOf(o.registry, name)), log: o.log, onUndoError }, nseClients),
    pointToPointIpam({
      pool,
      ...(o.claims === undefined ? {} : { claims: o.claims }),
      endpointExcluded: (name) => o.registry.endpoint(name)?.extension.excludedPrefixes ?? [],
      // A remote client (netns '': the endpoint's half) sent its pools as the request's dst_routes.
      composedPools: (netns, connection) => (netns === '' ? requestedPools(connection) : composedPools(netns)),
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
  const handler = pipelineHandler(buildChain(elements, o.observe === undefined ? {} : { observe: o.observe }), records, o.observe, o.log)
  const sweeper = new OrphanSweeper({
    records,
    mechanisms,
    endpointNamespaces: () => endpoints().flatMap((e) => (e.netns === '' ? [] : [e.netns])),
    locks: handler.locks,
    pool,
    policy: netnsPolicy,
    log: o.log,
    scanDirs: o.sweepAllowlistDirs ?? false,
    minIntervalMs: o.sweepMs ?? 30_000,
  })
  const h = new Healer({ registry: o.registry, table: o.table, records, handler, sessions, mechanisms, log: o.log, pollMs: o.healPollMs ?? 200, sweeper, nodeName: o.nodeName, ...(o.observe === undefined ? {} : { observe: o.observe }) })
  healer = h
  const remote =
    o.mesh === undefined
      ? undefined
      : new RemoteCrossConnects({ self: o.nodeName, table: o.table, records, registry: o.registry, handler, healer: h, peers: o.mesh.peers, liveNodes: () => o.mesh?.liveNodes() ?? new Set(), lifetimeMs, log: o.log, now })

  return {
    handler,
    healer: h,
    remote,
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
      const problems = await mechanism.check(rec)
      // A remote cross-connect's other half: its node's agent is asked whether it holds it, UP.
      return remote === undefined ? problems : [...problems, ...(await remote.checkPeer(rec))]
    },
    async stop() {
      await remote?.stop()
      await h.stop()
      nseClients.close()
      sessions.closeAll()
    },
  }
}
