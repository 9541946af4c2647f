// CNI results: one internal shape (the 1.1 one), encoded for the version a call speaks, and parsed back
// from `prevResult` whatever version wrote it.
//
// Shapes per version (SPEC.md §5 and the 0.3.x/0.4.0 specs):
// - 0.3.0, 0.3.1, 0.4.0: `ips[].version` ("4" | "6") is required; no 1.1 fields.
// - 1.0.0: `ips[].version` removed.
// - 1.1.0: adds `interfaces[].mtu`, `socketPath`, `pciID` and `routes[].mtu`, `advmss`, `priority`,
//   `table`, `scope`.
// An IPAM plugin returns the same object without `interfaces` (the main plugin fills `ips[].interface`).
import { CniCode, CniError } from './errors'
import { compareVersions, type SpecVersion } from './version'
import { parseCidr, parseIp } from '../../ipam/range/ip'

export interface CniInterface {
  name: string
  mac?: string
  sandbox?: string
  mtu?: number
  socketPath?: string
  pciID?: string
}
export interface CniIpConfig {
  /** CIDR: address/prefix. */
  address: string
  gateway?: string
  /** Index into interfaces. */
  interface?: number
}
export interface CniRoute {
  dst: string
  gw?: string
  mtu?: number
  advmss?: number
  priority?: number
  table?: number
  scope?: number
}
export interface CniDns {
  nameservers?: string[]
  domain?: string
  search?: string[]
  options?: string[]
}
export interface CniResult {
  interfaces?: CniInterface[]
  ips?: CniIpConfig[]
  routes?: CniRoute[]
  dns?: CniDns
}

const IFACE_11 = ['mtu', 'socketPath', 'pciID'] as const
const ROUTE_11 = ['mtu', 'advmss', 'priority', 'table', 'scope'] as const

function dnsIsEmpty(d: CniDns | undefined): boolean {
  return d === undefined || ((d.nameservers ?? []).length === 0 && (d.domain ?? '') === '' && (d.search ?? []).length === 0 && (d.options ?? []).length === 0)
}

/** The result object to print for `version` (cniVersion first). */
export function encodeResult(result: CniResult, version: SpecVersion): Record<string, unknown> {
  const v11 = compareVersions(version, '1.1.0') >= 0
  const legacy = compareVersions(version, '1.0.0') < 0
  const out: Record<string, unknown> = { cniVersion: version }
  if (result.interfaces !== undefined) {
    out.interfaces = result.interfaces.map((i) => {
      const o: Record<string, unknown> = { ...i }
      if (!v11) for (const k of IFACE_11) delete o[k]
      return o
    })
  }
  out.ips = (result.ips ?? []).map((ip) => {
    const o: Record<string, unknown> = {}
    if (legacy) o.version = ip.address.includes(':') ? '6' : '4'
    o.address = ip.address
    if (ip.gateway !== undefined) o.gateway = ip.gateway
    if (ip.interface !== undefined) o.interface = ip.interface
    return o
  })
  if (result.routes !== undefined && result.routes.length > 0) {
    out.routes = result.routes.map((r) => {
      const o: Record<string, unknown> = { ...r }
      if (!v11) for (const k of ROUTE_11) delete o[k]
      return o
    })
  }
  if (!dnsIsEmpty(result.dns)) out.dns = result.dns
  return out
}

// --- parsing prevResult -------------------------------------------------------------------------

const bad = (field: string, what: string): CniError => new CniError(CniCode.DECODING_FAILURE, `${field}: ${what}`)

/** A result's address fields are passed on into the next result: they must be what they say they are. */
function cidr(v: string, field: string): string {
  if (parseCidr(v) === undefined) throw bad(field, `${JSON.stringify(v)} is not an address/prefix-length`)
  return v
}
function address(v: string | undefined, field: string): string | undefined {
  if (v !== undefined && parseIp(v) === undefined) throw bad(field, `${JSON.stringify(v)} is not an IP address`)
  return v
}

function str(o: Record<string, unknown>, k: string, field: string, required = false): string | undefined {
  const v = o[k]
  if (v === undefined || (v === '' && !required)) {
    if (required) throw bad(`${field}.${k}`, 'is required')
    return undefined
  }
  if (typeof v !== 'string') throw bad(`${field}.${k}`, `expected a string, got ${JSON.stringify(v)}`)
  return v
}
function int(o: Record<string, unknown>, k: string, field: string): number | undefined {
  const v = o[k]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw bad(`${field}.${k}`, `expected a non-negative integer, got ${JSON.stringify(v)}`)
  return v
}
function strList(o: Record<string, unknown>, k: string, field: string): string[] | undefined {
  const v = o[k]
  if (v === undefined || v === null) return undefined
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad(`${field}.${k}`, 'expected a list of strings')
  return v as string[]
}
function obj(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, `expected an object, got ${JSON.stringify(v)}`)
  return v as Record<string, unknown>
}
function list(o: Record<string, unknown>, k: string, field: string): unknown[] | undefined {
  const v = o[k]
  if (v === undefined || v === null) return undefined
  if (!Array.isArray(v)) throw bad(`${field}.${k}`, 'expected a list')
  return v
}
function set<T, K extends keyof T>(target: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) target[key] = value
}

/** Parses a result of any supported version (0.3.0 to 1.1.0) into the internal shape. */
export function parseResult(value: unknown, field = 'prevResult'): CniResult {
  const o = obj(value, field)
  const result: CniResult = {}
  const ifaces = list(o, 'interfaces', field)
  if (ifaces !== undefined) {
    result.interfaces = ifaces.map((raw, n) => {
      const f = `${field}.interfaces[${n}]`
      const i = obj(raw, f)
      const iface: CniInterface = { name: str(i, 'name', f, true) as string }
      set(iface, 'mac', str(i, 'mac', f))
      set(iface, 'sandbox', str(i, 'sandbox', f))
      set(iface, 'mtu', int(i, 'mtu', f))
      set(iface, 'socketPath', str(i, 'socketPath', f))
      set(iface, 'pciID', str(i, 'pciID', f))
      return iface
    })
  }
  const ips = list(o, 'ips', field)
  if (ips !== undefined) {
    result.ips = ips.map((raw, n) => {
      const f = `${field}.ips[${n}]`
      const i = obj(raw, f)
      const ip: CniIpConfig = { address: cidr(str(i, 'address', f, true) as string, `${f}.address`) }
      set(ip, 'gateway', address(str(i, 'gateway', f), `${f}.gateway`))
      const idx = int(i, 'interface', f)
      if (idx !== undefined && (result.interfaces === undefined || idx >= result.interfaces.length)) {
        throw bad(`${f}.interface`, `index ${idx} does not name an entry of interfaces`)
      }
      set(ip, 'interface', idx)
      return ip
    })
  }
  const routes = list(o, 'routes', field)
  if (routes !== undefined) {
    result.routes = routes.map((raw, n) => {
      const f = `${field}.routes[${n}]`
      const r = obj(raw, f)
      const route: CniRoute = { dst: cidr(str(r, 'dst', f, true) as string, `${f}.dst`) }
      set(route, 'gw', address(str(r, 'gw', f), `${f}.gw`))
      for (const k of ROUTE_11) set(route, k, int(r, k, f))
      return route
    })
  }
  if (o.dns !== undefined && o.dns !== null) {
    const d = obj(o.dns, `${field}.dns`)
    const dns: CniDns = {}
    set(dns, 'nameservers', strList(d, 'nameservers', `${field}.dns`))
    set(dns, 'domain', str(d, 'domain', `${field}.dns`))
    set(dns, 'search', strList(d, 'search', `${field}.dns`))
    set(dns, 'options', strList(d, 'options', `${field}.dns`))
    if (!dnsIsEmpty(dns)) result.dns = dns
  }
  return result
}
