// ipam/p2p: point-to-point IPAM (ARCHITECTURE §7) as a pure allocator over a JSON-persistable state; see
// allocator.ts for the contract, ip.ts for the address arithmetic.
export {
  PointToPointPool,
  allocationOf,
  emptyP2PState,
  type P2PAllocation,
  type P2PPair,
  type P2PRecord,
  type P2PRequest,
  type P2PResult,
  type P2PState,
} from './allocator.js'
export { P2PError, type P2PErrorCode } from './errors.js'
export { formatAddr, formatPrefix, hostPrefix, parseAddr, parsePrefix, prefixContains, type Addr, type Family, type Prefix } from './ip.js'
