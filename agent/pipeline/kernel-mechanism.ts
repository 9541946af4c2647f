// mechanism/kernel — builds the datapath for a local endpoint (DESIGN §8): one veth pair, the client
// end in the client's netns as its requested name, the endpoint end in the endpoint's netns as
// `nsm-<10 hex of the connection id's hash>`, the point-to-point addresses on both ends, routes on both
// sides (client: the endpoint's /32 and the prefixes it offers via that address; endpoint: the client's
// /32 and, for a client that is itself an endpoint, its pools back via the client), MTU, links up.
// An endpoint that offers routes forwards traffic for them: IP forwarding is enabled in its netns, once
// per namespace (per socket the sessions hold for it: a namespace re-created under the same path gets a
// new socket, so it is enabled again there), not on every request (two sysctl writes, four setns).
// Needs: clientNetns, clientIfname, endpoint, addresses (and previous, to rebuild in place).
// Provides: datapath (the record persisted with the connection).
// Undoes: deletes the pair when a later element fails. Close deletes it (idempotent).
import { createHash } from 'node:crypto'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import { KernelError } from '../../pkg/errors.js'
import { buildCrossConnect, getLink, removeCrossConnect, writeSysctl, type LinkReaper, type NetlinkSessions, type Rtnl } from '../../pkg/netlink/index.js'
import { AgentError } from '../server/agent-error.js'
import { withUndo, type Element } from './chain.js'
import type { DatapathRecord, EndpointInfo } from './types.js'

export interface KernelMechanismOptions {
  sessions: NetlinkSessions
  /** MTU when the request does not set one. */
  defaultMtu: number
  /** For a client netns that is itself an endpoint's netns: that endpoint (composition). */
  endpointAt(netns: string): EndpointInfo | undefined
  onUndoError(err: unknown): void
  /** Batches the deletions of Close (one kernel grace period for many veths). */
  reaper: LinkReaper
}

/**
 * The client interface's MAC: locally administered unicast, derived from the connection id, so a rebuild
 * (heal, restart) keeps it. Reported as ethernet_context.src_mac: the CNI result lists it (runtimes such
 * as podman refuse a sandbox interface without one).
 */
export function clientMac(connectionId: string): string {
  const h = createHash('sha256').update(`mac:${connectionId}`).digest()
  const b = [((h[0] ?? 0) & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
  return b.map((x) => (x ?? 0).toString(16).padStart(2, '0')).join(':')
}

/** The endpoint-side interface name of a connection: stable, so close and heal can find it. */
export function endpointIfname(connectionId: string): string {
  return `nsm-${createHash('sha256').update(connectionId).digest('hex').slice(0, 10)}`
}

const host = (cidr: string): string => cidr.slice(0, cidr.indexOf('/'))
const family = (ip: string): 4 | 6 => (ip.includes(':') ? 6 : 4)
const hostPrefix = (ip: string): string => `${ip}/${family(ip) === 4 ? 32 : 128}`

export function kernelMechanism(opts: KernelMechanismOptions): Element {
  // The namespaces (by their cached socket, which pins the namespace, so its identity cannot be reused)
  // where this agent has enabled forwarding.
  const forwarding = new WeakSet<Rtnl>()
  const enableForwarding = (netns: string): void => {
    const h = opts.sessions.forNetns(netns)
    if (forwarding.has(h)) return
    writeSysctl(opts.sessions, netns, 'net.ipv4.ip_forward', '1')
    writeSysctl(opts.sessions, netns, 'net.ipv6.conf.all.forwarding', '1')
    forwarding.add(h)
  }
  return {
    name: 'mechanism-kernel',
    needs: ['clientNetns', 'clientIfname', 'endpoint', 'addresses'],
    provides: ['datapath'],
    wrap: (next) => ({
      async request(r) {
        const { clientNetns, clientIfname, endpoint, addresses, previous } = r.state as Required<typeof r.state>
        const c = r.connection
        const mtu = c.context?.MTU !== undefined && c.context.MTU > 0 ? c.context.MTU : opts.defaultMtu
        const srcIps = addresses.src.map(host)
        const dstIps = addresses.dst.map(host)
        const gatewayFor = (prefix: string): string | undefined => dstIps.find((d) => family(d) === family(prefix.split('/')[0] ?? ''))
        const srcRoutes = [
          ...dstIps.map((d) => ({ prefix: hostPrefix(d), nextHop: '' })),
          ...endpoint.routes.flatMap((p) => {
            const gw = gatewayFor(p)
            return gw === undefined ? [] : [{ prefix: p, nextHop: gw }]
          }),
        ]
        // Composition: a client that is an endpoint itself gets its pools routed back to it.
        const clientAsEndpoint = opts.endpointAt(clientNetns)
        const dstRoutes = [
          ...srcIps.map((s) => ({ prefix: hostPrefix(s), nextHop: '' })),
          ...(clientAsEndpoint?.pools ?? []).flatMap((p) => {
            const gw = srcIps.find((s) => family(s) === family(p.split('/')[0] ?? ''))
            return gw === undefined ? [] : [{ prefix: p, nextHop: gw }]
          }),
        ]
        const record: DatapathRecord = {
          version: 1,
          connectionId: c.id,
          service: c.networkService,
          endpointName: endpoint.name,
          clientNetns,
          clientIfname,
          endpointNetns: endpoint.netns,
          endpointIfname: endpointIfname(c.id),
          src: addresses.src,
          dst: addresses.dst,
          srcRoutes,
          dstRoutes,
          mtu,
          p2p: addresses.record,
          clientLabels: r.state.clientLabels ?? {},
        }
        const unchanged = previous !== undefined && sameDatapath(previous, record) && (await clientEndExists(opts.sessions, record))
        if (!unchanged) {
          if (previous !== undefined) await removeCrossConnect(opts.sessions, { client: ends(previous).client, endpoint: ends(previous).endpoint })
          await build(opts.sessions, record)
          if (endpoint.routes.length > 0) enableForwarding(endpoint.netns)
          if (clientAsEndpoint !== undefined) enableForwarding(clientNetns)
        }
        r.state.datapath = record
        const out: Connection = {
          ...c,
          mechanism: { cls: 'LOCAL', type: 'KERNEL', parameters: { name: clientIfname, inodeURL: `file://${clientNetns}` } },
          context: {
            ipContext: {
              srcIpAddrs: record.src,
              dstIpAddrs: record.dst,
              srcIpRequired: false,
              dstIpRequired: false,
              srcRoutes: record.srcRoutes,
              dstRoutes: record.dstRoutes,
              excludedPrefixes: c.context?.ipContext?.excludedPrefixes ?? [],
              ipNeighbors: [],
              extraPrefixRequest: [],
              extraPrefixes: [],
              policies: [],
            },
            dnsContext: c.context?.dnsContext,
            ethernetContext: { srcMac: clientMac(c.id), dstMac: c.context?.ethernetContext?.dstMac ?? '', vlanTag: c.context?.ethernetContext?.vlanTag ?? 0 },
            extraContext: c.context?.extraContext ?? {},
            MTU: mtu,
          },
          networkServiceEndpointName: endpoint.name,
          state: State.UP,
        }
        return withUndo(
          () => next.request({ ...r, connection: out }),
          async () => {
            if (!unchanged) await removeCrossConnect(opts.sessions, ends(record))
          },
          opts.onUndoError,
        )
      },
      async close(cl) {
        await next.close(cl)
        if (cl.record === undefined) return
        // The endpoint side first: many connections share an endpoint's netns, so its deletions batch.
        const { client, endpoint } = ends(cl.record)
        if (!(await opts.reaper.delete(endpoint.netns, endpoint.ifname))) await opts.reaper.delete(client.netns, client.ifname)
      },
    }),
  }
}

export function ends(rec: DatapathRecord): { client: { netns: string; ifname: string }; endpoint: { netns: string; ifname: string } } {
  return { client: { netns: rec.clientNetns, ifname: rec.clientIfname }, endpoint: { netns: rec.endpointNetns, ifname: rec.endpointIfname } }
}

async function build(sessions: NetlinkSessions, rec: DatapathRecord): Promise<void> {
  const routes = (list: DatapathRecord['srcRoutes']) => list.map((r) => (r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }))
  try {
    await buildCrossConnect(sessions, {
      mtu: rec.mtu,
      client: { netns: rec.clientNetns, ifname: rec.clientIfname, mac: clientMac(rec.connectionId), addresses: rec.src, routes: routes(rec.srcRoutes) },
      endpoint: { netns: rec.endpointNetns, ifname: rec.endpointIfname, addresses: rec.dst, routes: routes(rec.dstRoutes) },
    })
  } catch (err) {
    if (KernelError.is(err, 'EXISTS')) {
      throw new AgentError('ALREADY_EXISTS', `interface ${rec.clientIfname} already exists in ${rec.clientNetns} (or ${rec.endpointIfname} in ${rec.endpointNetns})`, { cause: err })
    }
    throw err
  }
}

function sameDatapath(a: DatapathRecord, b: DatapathRecord): boolean {
  return JSON.stringify({ ...a, clientLabels: {}, p2p: {} }) === JSON.stringify({ ...b, clientLabels: {}, p2p: {} })
}

async function clientEndExists(sessions: NetlinkSessions, rec: DatapathRecord): Promise<boolean> {
  try {
    return (await getLink(sessions.forNetns(rec.clientNetns), rec.clientIfname)) !== undefined
  } catch {
    return false
  }
}
