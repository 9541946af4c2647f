// The IP context of a point-to-point connection, computed once (by the IPAM element) from the allocator's
// answer; the mechanism installs exactly these addresses and routes and answers with them.
//
// - Client side (src_routes): the allocator's routes — the endpoint's address as a host route on the link,
//   then the prefixes the endpoint offers, via the endpoint's address of the same family (a prefix of a
//   family the pair does not have is left out: nothing could carry it).
// - Endpoint side (dst_routes): the client's address as a host route on the link, and, for a client that is
//   itself an endpoint (service composition: a firewall that asks for the vpn-gateway), that client's pools
//   via its address, so replies to the firewall's own clients find their way back.
import { parseCidr } from '../../ipam/address.js'
import { formatPrefix, parsePrefix, type P2PAllocation } from '../../ipam/p2p/index.js'
import type { Route } from '../mechanisms/types.js'
import type { AppliedIpContext } from './types.js'

const familyOf = (cidr: string): 4 | 6 | undefined => parseCidr(cidr)?.ip.family

/** `composedPools`: the pools of the endpoint whose netns is the client's (composition), else none. */
export function ipContextOf(allocation: Pick<P2PAllocation, 'srcIpAddrs' | 'dstIpAddrs' | 'srcRoutes' | 'dstRoutes'>, composedPools: readonly string[]): AppliedIpContext {
  const src = allocation.srcIpAddrs
  const dst = allocation.dstIpAddrs
  const composed = composedPools.map((p) => formatPrefix(parsePrefix(p)))
  return {
    src,
    dst,
    srcRoutes: routesVia(allocation.srcRoutes, dst),
    dstRoutes: routesVia([...new Set([...allocation.dstRoutes, ...composed])], src),
  }
}

/** Each prefix as a route: a peer's own address on the link, anything else via the peer's address of its family. */
function routesVia(prefixes: readonly string[], peer: readonly string[]): Route[] {
  return prefixes.flatMap((prefix) => {
    if (peer.includes(prefix)) return [{ prefix, nextHop: '' }]
    const gateway = peer.find((a) => familyOf(a) === familyOf(prefix))
    return gateway === undefined ? [] : [{ prefix, nextHop: gateway.slice(0, gateway.indexOf('/')) }]
  })
}
