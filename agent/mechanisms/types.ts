// What a mechanism is (ARCHITECTURE §8): the one module that owns a kind of datapath — how a request asks for
// it, where it lives, how it is built, verified (CHECK, restart, refresh), torn down, and the context it
// applies — and the record the agent persists for every datapath it built.
//
// The pipeline never looks inside a datapath: its mechanism element (agent/pipeline/mechanism.ts) hands
// the record to the implementation registered for the requested type (./registry.ts); CHECK, healing
// and restart reconciliation ask the same implementation. KERNEL (a local veth, ./kernel/) is the first;
// VXLAN, MEMIF and SR-IOV are further implementations of this interface with their own record part.
import type { Connection, Mechanism as RequestedMechanism } from '../../proto/gen/networkservice/connection.js'
import type { ConnectionContext, IPContext, Route } from '../../proto/gen/networkservice/connectioncontext.js'
import type { CheckProblem } from '../../proto/gen/nsmcni/nsmcni.js'
import type { P2PRecord } from '../../ipam/p2p/index.js'
import type { KernelRecord } from './kernel/record.js'
import type { VxlanRecord } from './vxlan/record.js'
import type { SriovRecord } from './sriov/record.js'
import type { MemifRecord } from './memif/record.js'

export type { CheckProblem, RequestedMechanism, Route }

/**
 * The addresses and routes of a connection, both sides, as the IPAM element computed them (once): the
 * mechanism installs exactly these. `nextHop` '' = a host route on the link (to the other end).
 */
export interface AppliedIpContext {
  /** The client's addresses (CIDR, /32 or /128). */
  src: string[]
  /** The endpoint's addresses, same order. */
  dst: string[]
  /** Routes on the client's side. */
  srcRoutes: Route[]
  /** Routes on the endpoint's side. */
  dstRoutes: Route[]
}

/** The mechanism's own part of a record, one shape per mechanism type. */
export type MechanismRecord = KernelRecord | VxlanRecord | SriovRecord | MemifRecord

/** What a request built, persisted with the connection: enough to answer, verify, heal and close it. */
export interface DatapathRecord {
  /** 2 since mechanisms own their part; version 1 records (KERNEL only) are migrated on load (./record.ts). */
  version: 2
  connectionId: string
  service: string
  endpointName: string
  /** The client's namespace and interface name, as requested (every mechanism serves a client netns). */
  clientNetns: string
  clientIfname: string
  mtu: number
  ipContext: AppliedIpContext
  mechanism: MechanismRecord
  /** The point-to-point allocation, as the allocator keeps it (rebuilt from these at start). */
  p2p: P2PRecord
  /** Labels the client was selected with (kept so healing reselects with the same labels). */
  clientLabels: Record<string, string>
}

/** The client side a request names through its mechanism parameters. */
export interface ClientSide {
  netns: string
  ifname: string
}

/** What a mechanism needs to plan a datapath (the endpoint as selection chose it). */
export interface PlanInput {
  connection: Connection
  client: ClientSide
  endpoint: { name: string; netns: string; local: boolean }
  /** The other node of a remote cross-connect (a VXLAN half records it), when there is one. */
  peer?: string
  /** The requested mechanism `parseRequest` accepted (its parameters: SR-IOV's pciAddress). */
  requested?: RequestedMechanism
}

/** What an orphan sweep is given: where to look, and which connections are live (read after the look). */
export interface SweepInput {
  namespaces: Iterable<string>
  /** Ids of the connections journaled or being built right now (their links are never swept). */
  live(): ReadonlySet<string>
}

/** A link an orphan sweep deleted. */
export interface SweptLink {
  netns: string
  ifname: string
  tag: string
}

/** After a restart: keep it, rebuild it (through the pipeline), or close it (its client is gone). */
export type ReconcileVerdict = { state: 'intact' } | { state: 'broken'; problems: CheckProblem[] } | { state: 'client-gone' }

export interface Mechanism {
  /** The NSM mechanism type it serves (`KERNEL`): the key in the mechanism registry. */
  readonly type: string
  /**
   * Requested types it also serves when `accepts` says so, before the mechanism registered under that
   * type (SR-IOV: a KERNEL request carrying `pciAddress` is a VF, not a veth; VFIO). Its records keep `type`.
   */
  readonly serves?: readonly string[]
  accepts?(requested: RequestedMechanism): boolean
  /**
   * Validates the requested mechanism's parameters; `field` names it in errors (`mechanism_preferences[1]`).
   * Returns the client side, its netns accepted by the netns policy. Throws AgentError INVALID_ARGUMENT /
   * BAD_NETNS naming the parameter.
   */
  parseRequest(requested: RequestedMechanism, field: string): ClientSide
  /** This mechanism's part of the record for a request (pure: where the datapath will live). */
  plan(input: PlanInput): MechanismRecord
  /** Builds the datapath of `rec`, all or nothing. */
  build(rec: DatapathRecord): Promise<void>
  /** Removes what `build` made, at once (a later step failed, or it is replaced). Idempotent. */
  remove(rec: DatapathRecord): Promise<void>
  /**
   * Turns `previous` (a record of this mechanism) into `next` (a heal or a re-request that changed it), all or
   * nothing: what `next` needs is built, or what it failed with is removed. Without it: remove, then build.
   * MEMIF keeps the pod's socket connected when only the endpoint side changes.
   */
  replace?(previous: DatapathRecord, next: DatapathRecord): Promise<void>
  /** Tears the datapath down on Close (may batch with other closes). Idempotent. */
  close(rec: DatapathRecord): Promise<void>
  /** Verifies the kernel still matches `rec` on both sides: links, up, addresses, routes. [] = intact. */
  check(rec: DatapathRecord): Promise<CheckProblem[]>
  /** After a restart: the verdict on a stored datapath (its own intactness test, the one `check` runs). */
  reconcile(rec: DatapathRecord): Promise<ReconcileVerdict>
  /** The namespaces `rec`'s datapath has parts in (client first). */
  namespaces(rec: DatapathRecord): string[]
  /**
   * Deletes the links this mechanism tagged in `input.namespaces` whose connection is not live (left by a
   * crash between building and journaling, or by a failed undo). Namespaces that are gone or refused are
   * skipped. Resolves with what it deleted.
   */
  sweep(input: SweepInput): Promise<SweptLink[]>
  /** The IP context it applies (addresses and routes of both sides). */
  ipContext(rec: DatapathRecord): IPContext
  /** The mechanism to answer with, and to request again to rebuild `rec` (healing). */
  connectionMechanism(rec: DatapathRecord): RequestedMechanism
  /** The connection context it applied, for the answer: `requested` carries what the client asked. */
  context(rec: DatapathRecord, requested: ConnectionContext | undefined): ConnectionContext
}
