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
import { KernelError } from '../../../pkg/errors.js'
import { buildCrossConnect, removeCrossConnect, validateLinkName, writeSysctl, type LinkReaper, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import { netnsKey } from '../../../pkg/netns.js'
import type { ConnectionContext, IPContext } from '../../../proto/gen/networkservice/connectioncontext.js'
import { AgentError } from '../../errors.js'
import type { ClientSide, DatapathRecord, Mechanism, PlanInput, RequestedMechanism, Route } from '../types.js'
import { checkEnd } from './check.js'
import { clientMac, endpointIfname } from './names.js'
import type { KernelRecord } from './record.js'

export { clientMac, endpointIfname } from './names.js'
export type { KernelRecord } from './record.js'

export interface KernelMechanismOptions {
  sessions: NetlinkSessions
  /** Batches the deletions of Close (one kernel grace period for many veths). */
  reaper: LinkReaper
}

const KERNEL = 'KERNEL'

export function kernelMechanism(opts: KernelMechanismOptions): Mechanism {
  const { sessions } = opts
  // The namespaces (by their cached socket, which pins the namespace, so its identity cannot be reused)
  // where this agent has enabled forwarding.
  const forwarding = new WeakSet<Rtnl>()
  const enableForwarding = (netns: string): void => {
    const h = sessions.forNetns(netns)
    if (forwarding.has(h)) return
    writeSysctl(sessions, netns, 'net.ipv4.ip_forward', '1')
    writeSysctl(sessions, netns, 'net.ipv6.conf.all.forwarding', '1')
    forwarding.add(h)
  }
  const kernel = (rec: DatapathRecord): KernelRecord => {
    if (rec.mechanism.type !== KERNEL) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${rec.mechanism.type} record reached the KERNEL mechanism`)
    return rec.mechanism
  }
  const ends = (rec: DatapathRecord) => {
    const k = kernel(rec)
    return { client: { netns: rec.clientNetns, ifname: rec.clientIfname }, endpoint: { netns: k.endpointNetns, ifname: k.endpointIfname } }
  }
  const ipContext = (rec: DatapathRecord): IPContext => ({
    srcIpAddrs: rec.ipContext.src,
    dstIpAddrs: rec.ipContext.dst,
    srcIpRequired: false,
    dstIpRequired: false,
    srcRoutes: rec.ipContext.srcRoutes,
    dstRoutes: rec.ipContext.dstRoutes,
    excludedPrefixes: [],
    ipNeighbors: [],
    extraPrefixRequest: [],
    extraPrefixes: [],
    policies: [],
  })
  const check = async (rec: DatapathRecord) => {
    const k = kernel(rec)
    const { src, dst, srcRoutes, dstRoutes } = rec.ipContext
    const [client, endpoint] = await Promise.all([
      checkEnd(sessions, rec.connectionId, { side: 'client', netns: rec.clientNetns, ifname: rec.clientIfname, addresses: src, routes: srcRoutes }),
      checkEnd(sessions, rec.connectionId, { side: 'endpoint', netns: k.endpointNetns, ifname: k.endpointIfname, addresses: dst, routes: dstRoutes }),
    ])
    return [...client, ...endpoint]
  }
  const remove = async (rec: DatapathRecord): Promise<void> => {
    await removeCrossConnect(sessions, ends(rec))
  }

  return {
    type: KERNEL,

    parseRequest(requested: RequestedMechanism, field: string): ClientSide {
      const ifname = requested.parameters.name ?? ''
      try {
        validateLinkName(ifname, `${field}.parameters.name`)
      } catch (err) {
        throw AgentError.invalid(`${field}.parameters.name`, (err as Error).message)
      }
      const urlField = `${field}.parameters.inodeURL`
      const url = requested.parameters.inodeURL ?? ''
      if (!url.startsWith('file://')) throw AgentError.invalid(urlField, `${JSON.stringify(url)} must be a file:// URL of a netns`)
      let path: string
      try {
        path = decodeURIComponent(url.slice('file://'.length))
      } catch {
        throw AgentError.invalid(urlField, `${JSON.stringify(url)} is not a valid URL (bad % escape)`)
      }
      try {
        return { netns: sessions.policy.check(path), ifname }
      } catch (err) {
        const msg = err instanceof KernelError ? err.message : String(err)
        throw new AgentError('BAD_NETNS', `${urlField}: ${msg}`, { field: urlField, cause: err })
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
          client: { ...client, mac: clientMac(rec.connectionId), addresses: rec.ipContext.src, routes: kernelRoutes(rec.ipContext.srcRoutes) },
          endpoint: { ...endpoint, addresses: rec.ipContext.dst, routes: kernelRoutes(rec.ipContext.dstRoutes) },
        })
      } catch (err) {
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
      if (!(await opts.reaper.delete(endpoint.netns, endpoint.ifname))) await opts.reaper.delete(client.netns, client.ifname)
    },

    check,

    async reconcile(rec) {
      if (netnsKey(rec.clientNetns) === undefined) return { state: 'client-gone' }
      const problems = await check(rec)
      return problems.length === 0 ? { state: 'intact' } : { state: 'broken', problems }
    },

    ipContext,

    connectionMechanism(rec) {
      return { cls: 'LOCAL', type: KERNEL, parameters: { name: rec.clientIfname, inodeURL: `file://${rec.clientNetns}` } }
    },

    context(rec, requested): ConnectionContext {
      return {
        ipContext: { ...ipContext(rec), excludedPrefixes: requested?.ipContext?.excludedPrefixes ?? [] },
        dnsContext: requested?.dnsContext,
        ethernetContext: { srcMac: clientMac(rec.connectionId), dstMac: requested?.ethernetContext?.dstMac ?? '', vlanTag: requested?.ethernetContext?.vlanTag ?? 0 },
        extraContext: requested?.extraContext ?? {},
        MTU: rec.mtu,
      }
    },
  }
}
