// IPv4/IPv6 addresses as (family, bigint) with parsing, canonical formatting (RFC 5952 for v6) and
// prefix arithmetic. Small and dependency-free so the CNI bundles stay lean. The one address codec of
// the project: ipam/p2p/ip.ts and pkg/netlink/addr.ts build on it.

export type Family = 4 | 6

export interface Ip {
  family: Family
  value: bigint
}

export interface Cidr {
  /** The address as written (host bits may be set: 10.0.0.5/24). */
  ip: Ip
  prefix: number
}

const bits = (f: Family): number => (f === 4 ? 32 : 128)

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.')
  if (parts.length !== 4) return undefined
  let v = 0n
  for (const p of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return undefined
    const n = Number(p)
    if (n > 255) return undefined
    v = (v << 8n) | BigInt(n)
  }
  return v
}

function parseV6(s: string): bigint | undefined {
  if (s.includes('%')) return undefined
  let head = s
  let tailV4: bigint | undefined
  const lastColon = s.lastIndexOf(':')
  if (s.includes('.')) {
    tailV4 = parseV4(s.slice(lastColon + 1))
    if (tailV4 === undefined) return undefined
    head = `${s.slice(0, lastColon + 1)}0:0`
  }
  const dbl = head.split('::')
  if (dbl.length > 2) return undefined
  const groups = (x: string): string[] | undefined => (x === '' ? [] : x.split(':'))
  const left = groups(dbl[0] as string)
  const right = dbl.length === 2 ? groups(dbl[1] as string) : []
  if (left === undefined || right === undefined) return undefined
  const total = left.length + right.length
  if (dbl.length === 1 ? total !== 8 : total > 7) return undefined
  const all = [...left, ...Array<string>(8 - total).fill('0'), ...right]
  let v = 0n
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
    v = (v << 16n) | BigInt(parseInt(g, 16))
  }
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4
  return v
}

/** Parses an address; undefined when it is not one. IPv4-mapped IPv6 stays IPv6. */
export function parseIp(s: string): Ip | undefined {
  if (s.includes(':')) {
    const v = parseV6(s)
    return v === undefined ? undefined : { family: 6, value: v }
  }
  const v = parseV4(s)
  return v === undefined ? undefined : { family: 4, value: v }
}

export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/')
  if (slash < 0) return undefined
  const ip = parseIp(s.slice(0, slash))
  const p = s.slice(slash + 1)
  if (ip === undefined || !/^(0|[1-9]\d{0,2})$/.test(p)) return undefined
  const prefix = Number(p)
  if (prefix > bits(ip.family)) return undefined
  return { ip, prefix }
}

export function formatIp(ip: Ip): string {
  if (ip.family === 4) {
    const v = Number(ip.value)
    return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`
  }
  // RFC 5952 §5: IPv4-mapped addresses keep their dotted tail.
  if (ip.value >> 32n === 0xffffn) return `::ffff:${formatIp({ family: 4, value: ip.value & 0xffffffffn })}`
  const g: number[] = []
  for (let i = 7; i >= 0; i--) g.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn))
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on a tie.
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && g[j] === 0) j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':')
  if (best < 0) return hex(g)
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`
}

export const formatCidr = (c: Cidr): string => `${formatIp(c.ip)}/${c.prefix}`

export function mask(f: Family, prefix: number): bigint {
  const b = BigInt(bits(f))
  return ((1n << BigInt(prefix)) - 1n) << (b - BigInt(prefix))
}

/** The network address of a CIDR (host bits cleared). */
export function networkOf(c: Cidr): Ip {
  return { family: c.ip.family, value: c.ip.value & mask(c.ip.family, c.prefix) }
}

/** The last address of a CIDR (all host bits set). */
export function lastOf(c: Cidr): Ip {
  const hostBits = BigInt(bits(c.ip.family) - c.prefix)
  return { family: c.ip.family, value: networkOf(c).value | ((1n << hostBits) - 1n) }
}

export function contains(c: Cidr, ip: Ip): boolean {
  return ip.family === c.ip.family && (ip.value & mask(c.ip.family, c.prefix)) === networkOf(c).value
}

export const sameIp = (a: Ip, b: Ip): boolean => a.family === b.family && a.value === b.value
export const addIp = (ip: Ip, n: bigint): Ip => ({ family: ip.family, value: ip.value + n })
export const familyBits = bits
