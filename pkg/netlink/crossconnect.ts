// A point-to-point cross-connect between two namespaces: one veth pair, each end placed directly in
// its namespace, addresses (IPv6 without DAD), the link up, then routes through it. Either it is
// built completely or, when any step fails, the pair is deleted again (which takes the addresses and
// routes with it) and the original error is rethrown: nothing is left behind.
//
// Cost: two kernel round trips one after the other, whatever the number of addresses and routes: the
// veth (its echo gives both ends' ifindexes, so no end is looked up by name), then one batch per end
// (Rtnl.batch: addresses, up, routes in one sendmsg), the two ends' batches in flight together on their
// own sockets.
import { KernelError } from '../errors'
import { addAddressMessage } from './addresses'
import { createVeth, deleteLink, setLinkMessage, type LinkRef } from './links'
import { addRouteMessage, type RouteSpec } from './routes'
import type { NetlinkSessions, Rtnl, RtnlMessage } from './rtnl'

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
  const settings = (e: CrossConnectEnd) => ({
    name: e.ifname,
    ...(spec.mtu === undefined ? {} : { mtu: spec.mtu }),
    ...(e.mac === undefined ? {} : { mac: e.mac }),
  })
  // Resolve both sockets before creating anything, so a bad namespace fails with nothing made.
  const hc = sessions.forNetns(client.netns)
  const he = sessions.forNetns(endpoint.netns)
  // Through the client's socket, the client end created in that socket's own namespace: so the kernel
  // echoes the new link to us (createVeth). The endpoint end goes directly into its namespace.
  // One queue per end: what veth uses anyway, without the kernel shrinking a per-CPU set (VethSpec.queues).
  const { index, peerIndex } = await createVeth(sessions, { ...settings(client), queues: 1, peer: { ...settings(endpoint), netns: endpoint.netns } }, client.netns)
  // Both batches run to the end before any rollback, so no message of one lands after the deletion.
  // (async: a message that cannot even be encoded, a malformed address, is a rejection too, rolled back.)
  const configure = async (h: Rtnl, end: CrossConnectEnd, link: LinkRef): Promise<unknown> => h.batch(configureMessages(end, link))
  const results = await Promise.allSettled([configure(hc, client, { index, name: client.ifname }), configure(he, endpoint, { index: peerIndex, name: endpoint.ifname })])
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) {
    await deleteLink(hc, client.ifname, { missingOk: true }).catch(() => undefined)
    await deleteLink(he, endpoint.ifname, { missingOk: true }).catch(() => undefined)
    throw failed.reason
  }
}

/** One end's configuration, in the order the kernel needs it: addresses, up, then routes via them. */
function configureMessages(end: CrossConnectEnd, link: LinkRef): RtnlMessage[] {
  return [
    ...end.addresses.map((cidr) => addAddressMessage(link, cidr, { noDad: true })),
    setLinkMessage(link, { up: true }),
    ...end.routes.map((r) => ({
      ...addRouteMessage(r, link),
      // A prefix already routed through another connection of the same namespace keeps that route:
      // the host routes of this pair are unique, only shared offered prefixes can collide.
      ...(r.gateway !== undefined ? { tolerate: ['EXISTS'] as const } : {}),
    })),
  ]
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
