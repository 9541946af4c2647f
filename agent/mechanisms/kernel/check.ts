// The KERNEL datapath's intactness test, one end at a time: the namespace is there, the interface exists,
// carries the connection's tag (else it is someone else's: 'link-foreign') and is a veth, it is up, it holds its addresses, and the routes through it are in the main table. The
// one definition CHECK, the request path (refresh: rebuild only what is broken) and restart
// reconciliation all use.
import { formatAddr, formatPrefix, parseAddr, parsePrefix } from '../../../ipam/p2p/index.js'
import { getLink, listAddresses, listRoutes, type NetlinkSessions, type RouteInfo, type Rtnl } from '../../../pkg/netlink/index.js'
import type { CheckProblem, Route } from '../types.js'

export interface EndSpec {
  /** For messages: which side of the connection. */
  side: 'client' | 'endpoint'
  netns: string
  ifname: string
  /** The connection's tag (./names.ts linkTag): the link's alias must be exactly this. */
  tag: string
  /** Accept a link without any tag (a datapath built before links were tagged: restart adoption). */
  untaggedOk?: boolean
  addresses: readonly string[]
  routes: readonly Route[]
}

export async function checkEnd(sessions: NetlinkSessions, connectionId: string, end: EndSpec): Promise<CheckProblem[]> {
  const problems: CheckProblem[] = []
  const add = (code: string, message: string): void => {
    problems.push({ code, message, connectionId })
  }
  const where = `${end.side} interface ${end.ifname} in ${end.netns}`
  let h: Rtnl
  try {
    h = sessions.forNetns(end.netns)
  } catch (err) {
    add('netns-missing', `${end.side} netns ${end.netns}: ${message(err)}`)
    return problems
  }
  try {
    const link = await getLink(h, end.ifname)
    if (link === undefined) {
      add('link-missing', `${where} is missing`)
      return problems
    }
    if (link.alias !== end.tag && !(end.untaggedOk === true && link.alias === undefined)) {
      add('link-foreign', `${where} is not this connection's (its tag is ${link.alias === undefined ? 'missing' : JSON.stringify(link.alias)})`)
      return problems
    }
    if (link.kind !== 'veth') add('link-mismatch', `${where} is a ${link.kind ?? 'plain device'}, not the connection's veth`)
    if (!link.up) add('link-down', `${where} is down`)
    // One dump at a time: a socket carries one dump, and another end may share this namespace's socket.
    const addresses = await listAddresses(h)
    const routes = await listRoutes(h)
    const have = new Set(addresses.filter((a) => a.index === link.index).map((a) => canonPrefix(a.cidr)))
    for (const a of end.addresses) if (!have.has(canonPrefix(a))) add('address-missing', `${where} lacks address ${a}`)
    for (const r of end.routes) {
      if (!routed(routes, r, end.ifname)) add('route-missing', `${where}: route ${r.prefix}${r.nextHop === '' ? '' : ` via ${r.nextHop}`} is missing`)
    }
  } catch (err) {
    add('check-failed', `${where}: ${message(err)}`)
  }
  return problems
}

/** Whether the main table routes `want` through `ifname`. */
function routed(table: readonly RouteInfo[], want: Route, ifname: string): boolean {
  const prefix = canonPrefix(want.prefix)
  const same = table.filter((r) => r.dst !== 'default' && canonPrefix(r.dst) === prefix)
  if (want.nextHop === '') return same.some((r) => r.dev === ifname && r.gateway === undefined)
  // An offered prefix two connections of one namespace share is routed through the first of them only
  // (pkg/netlink/crossconnect.ts keeps that route): a route for it through another link counts.
  const gateway = canonAddr(want.nextHop)
  return same.some((r) => r.dev !== ifname || (r.gateway !== undefined && canonAddr(r.gateway) === gateway))
}

/** One spelling per prefix (the kernel masks host bits and prints its own form). */
function canonPrefix(text: string): string {
  try {
    return formatPrefix(parsePrefix(text))
  } catch {
    return text
  }
}

function canonAddr(text: string): string {
  try {
    return formatAddr(parseAddr(text))
  } catch {
    return text
  }
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err))
