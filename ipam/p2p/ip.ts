// ipam/p2p/ip.ts: the point-to-point allocator's view of addresses and prefixes: bigints and bounds, with
// errors that name the field.
//
// Needs: ipam/address.ts (the `ip-address` library: parsing, canonical text, subnet bounds). Pure.
// Contract: `parseAddr` accepts dotted IPv4 (no leading zeros) and any RFC 4291 IPv6 text (with `::` and a
// trailing dotted IPv4), no zone index; `formatAddr` writes canonical text (IPv6 per RFC 5952: lowercase,
// longest run of two or more zero groups compressed, leftmost on a tie, `::ffff:a.b.c.d` for IPv4-mapped).
// `parsePrefix` takes `address/length` (length in plain decimal, at most 32 or 128), accepts host bits set
// (`192.168.3.4/16`, as NSM does) and normalises to the network; its `first` and `last` are the library's
// startAddress() and endAddress(). Both throw P2PError INVALID_PREFIX naming `field` and quoting the text.
import { familyBits, formatIp, lastOf, networkOf, parseCidr, parseIp, type Family, type Ip } from '../address.js'
import { P2PError } from './errors.js'

export type { Family }
export type Addr = Ip

export interface Prefix {
  family: Family
  /** Network address (host bits cleared). */
  first: bigint
  /** Last address of the prefix (broadcast for IPv4). */
  last: bigint
  length: number
}

export const bits = familyBits

export function parseAddr(text: string, field = 'address'): Addr {
  const ip = parseIp(text)
  if (ip === undefined) throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} is not an IP address`, field)
  return ip
}

export const formatAddr = (a: Addr): string => formatIp(a)

/**
 * Parsed prefixes by text. Every request of an endpoint carries the same pools, excluded prefixes and
 * routes, and the library's parse + startAddress() + endAddress() is ~25 µs for an IPv6 prefix (3 000
 * dual-stack allocations: 440 µs each without this, ~170 µs with). Bounded: cleared when full.
 */
const prefixes = new Map<string, Readonly<Prefix>>()
const MAX_CACHED_PREFIXES = 4096

export function parsePrefix(text: string, field = 'prefix'): Prefix {
  const cached = prefixes.get(text)
  if (cached !== undefined) return { ...cached }
  const slash = text.indexOf('/')
  if (slash < 0) throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} is not a prefix (address/length)`, field)
  parseAddr(text.slice(0, slash), field)
  const c = parseCidr(text)
  if (c === undefined) throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} has an invalid prefix length`, field)
  const p: Prefix = { family: c.ip.family, first: networkOf(c).value, last: lastOf(c).value, length: c.prefix }
  if (prefixes.size >= MAX_CACHED_PREFIXES) prefixes.clear()
  prefixes.set(text, Object.freeze({ ...p }))
  return p
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
