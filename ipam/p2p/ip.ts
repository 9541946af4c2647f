// ipam/p2p/ip.ts: IPv4/IPv6 addresses and prefixes as bigints, for the allocator's arithmetic.
//
// Needs: ipam/range/ip.ts (the project's one address codec). Pure.
// Contract: `parseAddr` accepts dotted IPv4 and any RFC 4291 IPv6 text (with `::` and a trailing dotted
// IPv4), no zone index; `formatAddr` writes canonical text (IPv6 per RFC 5952: lowercase, longest run of
// two or more zero groups compressed, leftmost on a tie, `::ffff:a.b.c.d` for IPv4-mapped). `parsePrefix`
// accepts host bits set (`192.168.3.4/16`, as NSM does) and normalises to the network; it throws
// P2PError INVALID_PREFIX naming `field`.
import { formatIp, parseIp } from '../range/ip.js'
import { P2PError } from './errors.js'

export type Family = 4 | 6

export interface Addr {
  family: Family
  value: bigint
}

export interface Prefix {
  family: Family
  /** Network address (host bits cleared). */
  first: bigint
  /** Last address of the prefix (broadcast for IPv4). */
  last: bigint
  length: number
}

export const bits = (f: Family): number => (f === 4 ? 32 : 128)

/** The shared codec (ipam/range/ip.ts), with errors that name the field. */
export function parseAddr(text: string, field = 'address'): Addr {
  const ip = parseIp(text)
  if (ip === undefined) throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} is not an IP address`, field)
  return ip
}

export const formatAddr = (a: Addr): string => formatIp(a)

export function parsePrefix(text: string, field = 'prefix'): Prefix {
  const slash = text.indexOf('/')
  if (slash < 0) throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} is not a prefix (address/length)`, field)
  const a = parseAddr(text.slice(0, slash), field)
  const lenText = text.slice(slash + 1)
  const length = Number(lenText)
  if (!/^\d{1,3}$/.test(lenText) || length > bits(a.family)) {
    throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} has an invalid prefix length`, field)
  }
  const host = (1n << BigInt(bits(a.family) - length)) - 1n
  const first = a.value & ~host
  return { family: a.family, first, last: first | host, length }
}

export function formatPrefix(p: Prefix): string {
  return `${formatAddr({ family: p.family, value: p.first })}/${p.length}`
}

/** The single-address prefix of an address: `a/32` or `a/128`. */
export function hostPrefix(a: Addr): string {
  return `${formatAddr(a)}/${bits(a.family)}`
}

export function prefixContains(p: Prefix, a: Addr): boolean {
  return p.family === a.family && a.value >= p.first && a.value <= p.last
}
