// A point-to-point cross-connect between two namespaces: one veth pair, each end placed directly in
// its namespace, addresses (IPv6 without DAD), the link up, then routes through it. Either it is
// built completely or, when any step fails, the pair is deleted again (by the ifindexes it was created
// with, never by name: which takes the addresses and routes with it) and the original error is
// rethrown: nothing is left behind.
//
// Ownership (`tag`): both ends carry the tag as their alias (IFLA_IFALIAS) and removal deletes only an end
// whose alias is the tag. The endpoint end is created through the endpoint's socket under a temporary
// name and tagged in that same batch (a SETLINK by the temporary name, which nobody else holds), then
// renamed in its configuration batch: a crash between the two leaves a tagged link in the endpoint's
// namespace, which the agent's orphan sweep finds. The client end is tagged first thing in its own batch.
//
// Cost: two kernel round trips one after the other, whatever the number of addresses and routes: the
// veth (its echo gives both ends' ifindexes, so no end is looked up by name), then one batch per end
// (Rtnl.batch: alias/rename, addresses, up, routes in one sendmsg), the two ends' batches in flight
// together on their own sockets.
import { randomBytes } from 'node:crypto'
import { KernelError } from '../errors'
import { addAddressMessage } from './addresses'
import { createVeth, deleteLinkIndex, getLink, setLinkMessage, type LinkChange, type LinkInfo, type LinkRef } from './links'
import { addRouteMessage, type RouteSpec } from './routes'
import type { Rtnl, RtnlMessage } from './rtnl'
import type { NetlinkSessions } from './sessions'

/**
 * The pair was created but an address or route of one end already exists in its namespace (EEXIST from
 * the configuration batch, not from the creation): the addresses are in use there (a leftover datapath),
 * the interface names are free. Nothing is left behind.
 */
export class AddressConflictError extends KernelError {
  constructor(
    readonly side: 'client' | 'endpoint',
    readonly netns: string,
    cause: KernelError,
  ) {
    super('EXISTS', cause.message, { cause, ...(cause.errno === undefined ? {} : { errno: cause.errno }) })
  }
}

export interface CrossConnectEnd {
  /** Allowlisted namespace path. */
  netns: string
  ifname: string
  /** CIDRs, e.g. "172.16.1.2/32", "fd00:1::2/128". */
  addresses: string[]
  /** Routes through this end; `dev` is always this end's interface. */
  routes: Array<Omit<RouteSpec, 'dev'>>
  mac?: string
}

export interface CrossConnectSpec {
  client: CrossConnectEnd
  endpoint: CrossConnectEnd
  mtu?: number
  /** The owner's tag, set as both ends' alias (at most 255 bytes). */
  tag?: string
}

export async function buildCrossConnect(sessions: NetlinkSessions, spec: CrossConnectSpec): Promise<void> {
  const { client, endpoint, tag } = spec
  const settings = (e: CrossConnectEnd) => ({
    ...(spec.mtu === undefined ? {} : { mtu: spec.mtu }),
    ...(e.mac === undefined ? {} : { mac: e.mac }),
  })
  // Resolve both sockets before creating anything, so a bad namespace fails with nothing made.
  const hc = sessions.forNetns(client.netns)
  const he = sessions.forNetns(endpoint.netns)
  // Through the endpoint's socket, the endpoint end created in that socket's own namespace: so the kernel
  // echoes the new link to us (createVeth). The client end goes directly into its namespace (a name
  // already taken there fails the creation: nothing is made).
  // One queue per end: what veth uses anyway, without the kernel shrinking a per-CPU set (VethSpec.queues).
  const localName = tag === undefined ? endpoint.ifname : `nsm.${randomBytes(5).toString('hex')}`
  const { index, peerIndex } = await createVeth(
    sessions,
    {
      name: localName,
      ...settings(endpoint),
      queues: 1,
      ...(tag === undefined ? {} : { alias: tag }),
      peer: { name: client.ifname, ...settings(client), netns: client.netns },
    },
    endpoint.netns,
  )
  // Both batches run to the end before any rollback, so no message of one lands after the deletion.
  // (async: a message that cannot even be encoded, a malformed address, is a rejection too, rolled back.)
  const configure = async (h: Rtnl, end: CrossConnectEnd, link: LinkRef, first: LinkChange | undefined): Promise<unknown> =>
    h.batch([...(first === undefined ? [] : [setLinkMessage(link, first)]), ...configureMessages(end, { index: link.index, name: end.ifname })])
  const results = await Promise.allSettled([
    configure(hc, client, { index: peerIndex, name: client.ifname }, tag === undefined ? undefined : { alias: tag }),
    configure(he, endpoint, { index, name: localName }, localName === endpoint.ifname ? undefined : { rename: endpoint.ifname }),
  ])
  const failed = results.findIndex((r) => r.status === 'rejected')
  if (failed >= 0) {
    await deleteLinkIndex(hc, { index: peerIndex, name: client.ifname }, { missingOk: true }).catch(() => undefined)
    await deleteLinkIndex(he, { index, name: endpoint.ifname }, { missingOk: true }).catch(() => undefined)
    const reason = (results[failed] as PromiseRejectedResult).reason as unknown
    // The endpoint's rename is in its batch too: a name taken there is EXISTS of the rename, not an address.
    const renameFailed = failed === 1 && reason instanceof KernelError && reason.message.startsWith('rename link')
    if (KernelError.is(reason, 'EXISTS') && !renameFailed) {
      throw new AddressConflictError(failed === 0 ? 'client' : 'endpoint', failed === 0 ? client.netns : endpoint.netns, reason)
    }
    throw reason
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

export type EndRef = Pick<CrossConnectEnd, 'netns' | 'ifname'>

export interface RemoveSpec {
  client: EndRef
  endpoint: EndRef
  /** Delete only an end whose alias is this tag; another link of that name is left alone (`onForeign`). */
  tag?: string
  onForeign?: (end: EndRef, link: LinkInfo) => void
}

/**
 * Removes a cross-connect: deleting either end of a veth removes both. Idempotent: a missing link or
 * a namespace that is already gone is not an error. Returns whether anything was deleted.
 */
export async function removeCrossConnect(sessions: NetlinkSessions, spec: RemoveSpec): Promise<boolean> {
  for (const end of [spec.client, spec.endpoint]) {
    try {
      const h = sessions.forNetns(end.netns)
      const link = await getLink(h, end.ifname)
      if (link === undefined) continue
      if (spec.tag !== undefined && link.alias !== spec.tag) {
        spec.onForeign?.(end, link)
        continue
      }
      if (await deleteLinkIndex(h, link, { missingOk: true })) return true
    } catch (err) {
      // Gone, or its path now opens a namespace the policy refuses (the host's): nothing to do there.
      if (!KernelError.is(err, 'BAD_NETNS') && !KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw err
    }
  }
  return false
}
