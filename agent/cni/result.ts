// Connections → the CNI result (ARCHITECTURE §4 step 5): one interface per connection (sandbox = CNI_NETNS,
// mtu, socketPath for memif, pciID for a VF), `ips` from src_ip_addrs pointing at it, `routes` from
// src_routes (next hop → gw), `dns` from the dns context. In chained mode prevResult comes first and ours
// are appended, with the `interface` indexes shifted past prevResult's interfaces.
import type { Connection } from '../../proto/gen/networkservice/connection'
import type { CniDns, CniInterface, CniIpConfig, CniResult, CniRoute } from '../../cni/protocol/index.js'

function iface(conn: Connection, ifname: string, netns: string): CniInterface {
  const out: CniInterface = { name: ifname, sandbox: netns }
  const mac = conn.context?.ethernetContext?.srcMac
  if (mac !== undefined && mac !== '') out.mac = mac
  const mtu = conn.context?.MTU
  if (mtu !== undefined && mtu > 0) out.mtu = mtu
  const params = conn.mechanism?.parameters ?? {}
  if (params.socketfile !== undefined && params.socketfile !== '') out.socketPath = params.socketfile
  if (params.pciAddress !== undefined && params.pciAddress !== '') out.pciID = params.pciAddress
  return out
}

function dnsOf(conns: readonly Connection[]): CniDns | undefined {
  const nameservers: string[] = []
  const search: string[] = []
  for (const c of conns) {
    for (const cfg of c.context?.dnsContext?.configs ?? []) {
      for (const s of cfg.dnsServerIps) if (!nameservers.includes(s)) nameservers.push(s)
      for (const d of cfg.searchDomains) if (!search.includes(d)) search.push(d)
    }
  }
  if (nameservers.length === 0 && search.length === 0) return undefined
  const dns: CniDns = {}
  if (nameservers.length > 0) dns.nameservers = nameservers
  if (search.length > 0) dns.search = search
  return dns
}

export interface MadeConnection {
  ifname: string
  connection: Connection
}

/** The result for `made`, appended to `prev` (chained mode) or alone (attachment mode). */
export function buildResult(made: readonly MadeConnection[], netns: string, prev?: CniResult): CniResult {
  const interfaces: CniInterface[] = [...(prev?.interfaces ?? [])]
  const ips: CniIpConfig[] = [...(prev?.ips ?? [])]
  const routes: CniRoute[] = [...(prev?.routes ?? [])]
  for (const m of made) {
    const index = interfaces.length
    interfaces.push(iface(m.connection, m.ifname, netns))
    for (const address of m.connection.context?.ipContext?.srcIpAddrs ?? []) ips.push({ address, interface: index })
    for (const r of m.connection.context?.ipContext?.srcRoutes ?? []) {
      if (routes.some((x) => x.dst === r.prefix && (x.gw ?? '') === r.nextHop)) continue
      routes.push(r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gw: r.nextHop })
    }
  }
  const result: CniResult = { interfaces, ips, routes }
  const dns = dnsOf(made.map((m) => m.connection))
  if (prev?.dns !== undefined || dns !== undefined) {
    result.dns = {
      ...(prev?.dns ?? {}),
      ...(dns?.nameservers === undefined ? {} : { nameservers: [...new Set([...(prev?.dns?.nameservers ?? []), ...dns.nameservers])] }),
      ...(dns?.search === undefined ? {} : { search: [...new Set([...(prev?.dns?.search ?? []), ...dns.search])] }),
    }
  }
  return result
}
