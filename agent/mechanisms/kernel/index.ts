// The KERNEL mechanism for a local endpoint (ARCHITECTURE §8): one veth pair, the client end in the client's
// netns under its requested name (MAC derived from the connection id), the endpoint end in the endpoint's
// netns as `nsm-<hash>`; on both ends the addresses and routes of the IP context the IPAM element
// computed (installed exactly as given), the MTU, links up. A side that is the next hop of a route on the
// other side (an endpoint offering prefixes; a composed client routing its pools back) forwards: IP
// forwarding is enabled in its netns once per namespace (per socket the sessions hold for it, so a
// namespace re-created under the same path is enabled again), not on every request.
//
// Owns, for this datapath: the request's parameters (`name`, `inodeURL` through the netns policy), build
// (all or nothing), remove, close (batched deletions), CHECK (./check.ts, both ends), the restart verdict,
// and the context it answers with.
//
// Ownership: both ends carry the connection's tag (IFLA_IFALIAS, ./names.ts linkTag) from the batch that
// creates them on. Remove and close delete only links with that tag; a link of the same name without it
// (an administrator's bridge named like the client interface, someone's veth) is left alone and logged,
// and CHECK reports it as 'link-foreign'.
import { netnsFileUrl, netnsPathOfUrl } from '../../../pkg/netns-url.js'
import { KernelError } from '../../../pkg/errors.js'
import { AddressConflictError, buildCrossConnect, getLink, removeCrossConnect, setLinkMessage, validateLinkName, type LinkReaper, type NetlinkSessions, type ReapResult } from '../../../pkg/netlink/index.js'
import { netnsKey } from '../../../pkg/netns.js'
import type { ConnectionContext } from '../../../proto/gen/networkservice/connectioncontext.js'
import { AgentError } from '../../errors.js'
import type { Logger } from '../../server/log.js'
import type { ClientSide, DatapathRecord, Mechanism, PlanInput, RequestedMechanism, Route } from '../types.js'
import { checkEnd } from './check.js'
import { clientMac, endpointIfname, linkTag } from './names.js'
import { sweepTaggedLinks } from './sweep.js'
import type { KernelRecord } from './record.js'
import { connectionContextOf, ipContextOfRecord } from '../record.js'
import { forwardingSwitch } from '../forwarding.js'

export { clientMac, endpointIfname, linkTag, LINK_TAG_PREFIX } from './names.js'
export type { KernelRecord } from './record.js'

export interface KernelMechanismOptions {
  sessions: NetlinkSessions
  /** Batches the deletions of Close (one kernel grace period for many veths). */
  reaper: LinkReaper
  /** Where a link left alone (not this connection's) is reported. */
  log?: Logger
}

const KERNEL = 'KERNEL'

export function kernelMechanism(opts: KernelMechanismOptions): Mechanism {
  const { sessions } = opts
  const enableForwarding = forwardingSwitch(sessions)
  const kernel = (rec: DatapathRecord): KernelRecord => {
    if (rec.mechanism.type !== KERNEL) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${rec.mechanism.type} record reached the KERNEL mechanism`)
    return rec.mechanism
  }
  const ends = (rec: DatapathRecord) => {
    const k = kernel(rec)
    return { client: { netns: rec.clientNetns, ifname: rec.clientIfname }, endpoint: { netns: k.endpointNetns, ifname: k.endpointIfname } }
  }
  const ipContext = ipContextOfRecord
  const check = async (rec: DatapathRecord, untaggedOk = false) => {
    const k = kernel(rec)
    const { src, dst, srcRoutes, dstRoutes } = rec.ipContext
    const tag = linkTag(rec.connectionId)
    const [client, endpoint] = await Promise.all([
      checkEnd(sessions, rec.connectionId, { side: 'client', netns: rec.clientNetns, ifname: rec.clientIfname, tag, untaggedOk, addresses: src, routes: srcRoutes }),
      checkEnd(sessions, rec.connectionId, { side: 'endpoint', netns: k.endpointNetns, ifname: k.endpointIfname, tag, untaggedOk, addresses: dst, routes: dstRoutes }),
    ])
    return [...client, ...endpoint]
  }
  /**
   * After a restart, a datapath built before links were tagged: untagged ends that pass the whole
   * intactness test otherwise (veth, up, every address and route of the record) are the record's own; they
   * get the tag. Anything less (a bridge, a veth without the addresses) stays someone else's.
   */
  const adoptUntagged = async (rec: DatapathRecord): Promise<boolean> => {
    if ((await check(rec, true)).length > 0) return false
    const tag = linkTag(rec.connectionId)
    for (const end of Object.values(ends(rec))) {
      const h = sessions.forNetns(end.netns)
      const link = await getLink(h, end.ifname)
      if (link === undefined || link.alias !== undefined) continue
      await h.batch([setLinkMessage(link, { alias: tag })])
      opts.log?.info('adopted an untagged link of a journaled datapath (built before links were tagged)', { connection: rec.connectionId, netns: end.netns, ifname: end.ifname })
    }
    return true
  }
  const foreign = (rec: DatapathRecord, end: { netns: string; ifname: string }, alias: string | undefined): void => {
    opts.log?.warn('link is not ours (not this connection\'s tag): left alone', { connection: rec.connectionId, netns: end.netns, ifname: end.ifname, alias: alias ?? null })
  }
  const remove = async (rec: DatapathRecord): Promise<void> => {
    await removeCrossConnect(sessions, { ...ends(rec), tag: linkTag(rec.connectionId), onForeign: (end, link) => foreign(rec, end, link.alias) })
  }

  return {
    type: KERNEL,

    parseRequest(requested: RequestedMechanism, field: string): ClientSide {
      // A VF asked for (NSM's pciAddress) reaches here only when no SR-IOV mechanism is registered: never a veth instead.
      if ((requested.parameters.pciAddress ?? '') !== '') throw new AgentError('MECHANISM_NOT_SUPPORTED', `${field}.parameters.pciAddress: an SR-IOV VF is asked for, and this agent has no SR-IOV mechanism`, { field: `${field}.parameters.pciAddress` })
      const ifname = requested.parameters.name ?? ''
      try {
        validateLinkName(ifname, `${field}.parameters.name`)
      } catch (err) {
        throw AgentError.invalid(`${field}.parameters.name`, (err as Error).message)
      }
      const urlField = `${field}.parameters.inodeURL`
      const url = requested.parameters.inodeURL ?? ''
      let path: string
      try {
        path = netnsPathOfUrl(url) // file:// decoded; inode://<dev>/<ino> resolved to /proc/<pid>/ns/net
      } catch (err) {
        if (KernelError.is(err, 'BAD_NETNS')) throw new AgentError('BAD_NETNS', `${urlField}: ${err.message}`, { field: urlField, cause: err })
        throw AgentError.invalid(urlField, err instanceof Error ? err.message : String(err))
      }
      try {
        return { netns: sessions.policy.check(path), ifname }
      } catch (err) {
        const msg = err instanceof KernelError ? err.message : String(err)
        const via = url.startsWith('file://') ? '' : `${url} is ${path}: `
        throw new AgentError('BAD_NETNS', `${urlField}: ${via}${msg}`, { field: urlField, cause: err })
      }
    },

    plan(input: PlanInput): KernelRecord {
      return { type: KERNEL, endpointNetns: input.endpoint.netns, endpointIfname: endpointIfname(input.connection.id) }
    },

    async build(rec) {
      const { client, endpoint } = ends(rec)
      const kernelRoutes = (list: readonly Route[]) => list.map((r) => (r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }))
      try {
        await buildCrossConnect(sessions, {
          mtu: rec.mtu,
          tag: linkTag(rec.connectionId),
          client: { ...client, mac: clientMac(rec.connectionId), addresses: rec.ipContext.src, routes: kernelRoutes(rec.ipContext.srcRoutes) },
          endpoint: { ...endpoint, addresses: rec.ipContext.dst, routes: kernelRoutes(rec.ipContext.dstRoutes) },
        })
      } catch (err) {
        if (err instanceof AddressConflictError) {
          const pair = [...rec.ipContext.src, ...rec.ipContext.dst].join(', ')
          throw new AgentError('ADDRESS_UNAVAILABLE', `addresses ${pair}: an address or route of them is already in use in ${err.netns} (${err.side} side)`, { cause: err })
        }
        if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) {
          // Every build judges both paths again (pkg/netns-policy.ts): one may have been re-pointed since it
          // was accepted (a bind mount replaced by the host's netns). BAD_NETNS lets selection try another.
          throw new AgentError('BAD_NETNS', err.message, { cause: err })
        }
        if (KernelError.is(err, 'EXISTS')) {
          throw new AgentError('ALREADY_EXISTS', `interface ${client.ifname} already exists in ${client.netns} (or ${endpoint.ifname} in ${endpoint.netns})`, { cause: err })
        }
        throw err
      }
      try {
        const forwards = (routes: readonly Route[]): boolean => routes.some((r) => r.nextHop !== '')
        if (forwards(rec.ipContext.srcRoutes)) enableForwarding(endpoint.netns)
        if (forwards(rec.ipContext.dstRoutes)) enableForwarding(client.netns)
      } catch (err) {
        await remove(rec)
        throw err
      }
    },

    remove,

    async close(rec) {
      // The endpoint side first: many connections share an endpoint's netns, so its deletions batch.
      const { client, endpoint } = ends(rec)
      const tag = linkTag(rec.connectionId)
      const reap = async (end: { netns: string; ifname: string }): Promise<ReapResult> => {
        const r = await opts.reaper.reap(end.netns, end.ifname, tag)
        if (r === 'foreign') foreign(rec, end, undefined)
        return r
      }
      if ((await reap(endpoint)) !== 'deleted') await reap(client)
    },

    check,

    async reconcile(rec) {
      if (netnsKey(rec.clientNetns) === undefined) return { state: 'client-gone' }
      const problems = await check(rec)
      if (problems.length === 0) return { state: 'intact' }
      if (problems.some((p) => p.code === 'link-foreign') && (await adoptUntagged(rec))) return { state: 'intact' }
      return { state: 'broken', problems }
    },

    namespaces(rec) {
      const { client, endpoint } = ends(rec)
      return [client.netns, endpoint.netns]
    },

    sweep: (input) => sweepTaggedLinks(sessions, input),

    ipContext,

    connectionMechanism(rec) {
      // Percent-encoded per component, as parseRequest decodes it (a `%` in a netns name must survive healing).
      return { cls: 'LOCAL', type: KERNEL, parameters: { name: rec.clientIfname, inodeURL: netnsFileUrl(rec.clientNetns) } }
    },

    context(rec, requested): ConnectionContext {
      return connectionContextOf(rec, requested, { srcMac: clientMac(rec.connectionId), dstMac: requested?.ethernetContext?.dstMac ?? '' })
    },
  }
}
