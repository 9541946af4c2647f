// Domain records the pipeline passes between elements and persists with each connection.
import type { P2PRecord } from '../../ipam/p2p/index.js'

/** A registered endpoint as the pipeline sees it: selection data plus where its datapath lives. */
export interface EndpointInfo {
  name: string
  networkServiceNames: readonly string[]
  networkServiceLabels: Readonly<Record<string, Readonly<Record<string, string>>>>
  expiresAt?: number
  /** On this node (a veth reaches it). */
  local: boolean
  /** Allowlisted netns path of the endpoint (the `url` file:///var/run/netns/x). */
  netns: string
  /** CIDR pools the endpoint hands out point-to-point pairs from. */
  pools: readonly string[]
  /** Prefixes reachable behind the endpoint (installed on the client, via the endpoint's address). */
  routes: readonly string[]
}

/** One point-to-point allocation: the endpoint's (dst) and the client's (src) addresses, as CIDRs. */
export interface P2PAddresses {
  /** The client's addresses, /32 or /128, one per pool family. */
  src: string[]
  /** The endpoint's addresses, same order as src. */
  dst: string[]
  /** The allocator's record (pools, parties), persisted with the connection. */
  record: P2PRecord
}

/** What a request built, persisted with the connection: enough to close, verify and heal it. */
export interface DatapathRecord {
  version: 1
  connectionId: string
  service: string
  endpointName: string
  clientNetns: string
  clientIfname: string
  endpointNetns: string
  endpointIfname: string
  src: string[]
  dst: string[]
  /** Routes installed on the client side (prefix, next hop). */
  srcRoutes: Array<{ prefix: string; nextHop: string }>
  /** Routes installed on the endpoint side. */
  dstRoutes: Array<{ prefix: string; nextHop: string }>
  mtu: number
  /** The point-to-point allocation, as the allocator keeps it (rebuilt from these at start). */
  p2p: P2PRecord
  /** Labels the client was selected with (kept so healing reselects with the same labels). */
  clientLabels: Record<string, string>
}
