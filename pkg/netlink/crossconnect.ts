// A point-to-point cross-connect between two namespaces: one veth pair, each end placed directly in
// its namespace, addresses (IPv6 without DAD), the link up, then routes through it. Either it is
// built completely or, when any step fails, the pair is deleted again (which takes the addresses and
// routes with it) and the original error is rethrown: nothing is left behind.
import { KernelError } from '../errors'
import { addAddress } from './addresses'
import { createVeth, deleteLink, setLink } from './links'
import { addRoute, type RouteSpec } from './routes'
import type { NetlinkSessions, Rtnl } from './rtnl'

export interface CrossConnectEnd {
  /** Allowlisted namespace path. */
  netns: string
  ifname: string
  /** CIDRs, e.g. "172.16.1.2/32", "fd00::2/128". */
  addresses: string[]
  /** Routes through this end; `dev` is always this end's interface. */
  routes: Array<Omit<RouteSpec, 'dev'>>
  mac?: string
}

export interface CrossConnectSpec {
  client: CrossConnectEnd
  endpoint: CrossConnectEnd
  mtu?: number
}

export async function buildCrossConnect(sessions: NetlinkSessions, spec: CrossConnectSpec): Promise<void> {
  const { client, endpoint } = spec
  const own = (e: CrossConnectEnd) => ({
    name: e.ifname,
    netns: e.netns,
    ...(spec.mtu === undefined ? {} : { mtu: spec.mtu }),
    ...(e.mac === undefined ? {} : { mac: e.mac }),
  })
  // Resolve both sockets before creating anything, so a bad namespace fails with nothing made.
  const hc = sessions.forNetns(client.netns)
  const he = sessions.forNetns(endpoint.netns)
  await createVeth(sessions, { ...own(client), peer: own(endpoint) })
  try {
    await Promise.all([configure(hc, client), configure(he, endpoint)])
  } catch (err) {
    await deleteLink(hc, client.ifname, { missingOk: true }).catch(() => undefined)
    await deleteLink(he, endpoint.ifname, { missingOk: true }).catch(() => undefined)
    throw err
  }
}

async function configure(h: Rtnl, end: CrossConnectEnd): Promise<void> {
  for (const cidr of end.addresses) await addAddress(h, end.ifname, cidr, { noDad: true })
  await setLink(h, end.ifname, { up: true })
  for (const r of end.routes) {
    try {
      await addRoute(h, { ...r, dev: end.ifname })
    } catch (err) {
      // A prefix already routed through another connection of the same namespace keeps that route:
      // the host routes of this pair are unique, only shared offered prefixes can collide.
      if (!(r.gateway !== undefined && KernelError.is(err, 'EXISTS'))) throw err
    }
  }
}

/**
 * Removes a cross-connect: deleting either end of a veth removes both. Idempotent: a missing link or
 * a namespace that is already gone is not an error. Returns whether anything was deleted.
 */
export type EndRef = Pick<CrossConnectEnd, 'netns' | 'ifname'>

export async function removeCrossConnect(sessions: NetlinkSessions, spec: { client: EndRef; endpoint: EndRef }): Promise<boolean> {
  for (const end of [spec.client, spec.endpoint]) {
    try {
      if (await deleteLink(sessions.forNetns(end.netns), end.ifname, { missingOk: true })) return true
    } catch (err) {
      if (!KernelError.is(err, 'BAD_NETNS')) throw err
    }
  }
  return false
}
