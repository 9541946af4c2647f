// Domain records the pipeline passes between elements. The datapath record persisted with each
// connection belongs to the mechanisms (agent/mechanisms/types.ts) and is re-exported here.
import type { P2PRecord } from '../../ipam/p2p/index.js'
import type { AppliedIpContext } from '../mechanisms/types.js'

export type { AppliedIpContext, CheckProblem, DatapathRecord } from '../mechanisms/types.js'

/** A registered endpoint as the pipeline sees it: selection data plus where its datapath lives. */
export interface EndpointInfo {
  name: string
  networkServiceNames: readonly string[]
  networkServiceLabels: Readonly<Record<string, Readonly<Record<string, string>>>>
  expiresAt?: number
  /** On this node (a veth reaches it). */
  local: boolean
  /** The node it lives on ('' = this one, registered before nodes were recorded). */
  node: string
  /**
   * An endpoint serving the NSM API itself (`unix://` or `tcp://` URL, no netns): the Request goes to it
   * (agent/pipeline/nse.ts) and `netns` is '' until its answer names one.
   */
  api?: string
  /** Policy-checked netns path of the endpoint (the `url` file:///var/run/netns/x). */
  netns: string
  /** CIDR pools the endpoint hands out point-to-point pairs from. */
  pools: readonly string[]
  /** Prefixes reachable behind the endpoint (installed on the client, via the endpoint's address). */
  routes: readonly string[]
}

/**
 * One point-to-point allocation and the routes that go with it: the IP context of the connection, both
 * sides, computed once by the IPAM element (./ip-context.ts); the mechanism installs exactly this.
 */
export interface P2PAddresses extends AppliedIpContext {
  /** The allocator's record (pools, parties), persisted with the connection. */
  record: P2PRecord
}
