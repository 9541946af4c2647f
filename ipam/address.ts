// ipam/address.ts: IPv4/IPv6 addresses and prefixes through the `ip-address` library (Address4, Address6).
//
// Needs: ip-address. Pure.
// Used by: the agent's point-to-point allocator (ipam/p2p/ip.ts), the agent's netlink encoding
// (pkg/netlink/addr.ts). The exec'd CNI plugins use ipam/range/ip.ts instead, a hand-written subset with
// this module's API and results (test/unit/address.test.ts checks both agree), because importing the
// library costs each plugin exec measurable start-up time (figures in ipam/range/ip.ts).
//
// Contract:
//   - an address is `{ family, value }`, the value an unsigned bigint (the library's `bigInt()`);
//   - `parseIp` takes a bare address: dotted-quad IPv4 without leading zeros, RFC 4291 IPv6 text (`::`,
//     a trailing dotted IPv4, any case); no zone index (`%eth0`), no prefix, no blanks, no brackets.
//     IPv4-mapped IPv6 (`::ffff:a.b.c.d`) stays IPv6. Returns undefined on anything else;
//   - `parseCidr` takes `address/length`, the length in canonical decimal (no sign, no leading zero) and at
//     most 32 (128); the address keeps its host bits (`10.0.0.5/24`): `networkOf`/`lastOf` give the bounds;
//   - `formatIp` writes the library's `correctForm()` (RFC 5952: lowercase, the longest run of two or more
//     zero groups compressed, the leftmost on a tie), except for IPv4-mapped addresses, which keep their
//     dotted tail (`::ffff:10.1.2.3`, RFC 5952 §5; the library's `to4in6()`);
//   - `networkOf`/`lastOf`/`contains` are the library's startAddress()/endAddress()/isHostInSubnet(),
//     `ipToBytes`/`ipFromBytes` its toArray()/toUnsignedByteArray() and fromByteArray()/fromUnsignedByteArray();
//     a value outside the family's space (e.g. one past the last address) throws the library's AddressError.
// What this module adds to the library is strictness it does not have: no zone index, no bare address
// with a suffix, the prefix length spelled in plain decimal (the library takes `fd00::/064`).
import { Address4, Address6 } from 'ip-address'

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

type Lib = Address4 | Address6

export const familyBits = (f: Family): number => (f === 4 ? 32 : 128)

/** A prefix length as the CNI and NSM write it: decimal, no sign, no leading zero. */
const PREFIX_LENGTH = /^(0|[1-9]\d{0,2})$/

/** The library's parse of `text` (`a` or `a/len`), or undefined; zones are refused here (the library keeps them). */
function parseLib(text: string): Lib | undefined {
  if (text.includes('%')) return undefined
  try {
    return text.includes(':') ? new Address6(text) : new Address4(text)
  } catch {
    return undefined // AddressError: not an address
  }
}

const toIp = (a: Lib): Ip => ({ family: a instanceof Address4 ? 4 : 6, value: a.bigInt() })

/** The library's object for an address (throws AddressError when the value is outside the family's space). */
function libAddress(ip: Ip): Lib {
  return ip.family === 4 ? Address4.fromBigInt(ip.value) : Address6.fromBigInt(ip.value)
}

/** The library's object for a CIDR, with its subnet mask. */
function libCidr(c: Cidr): Lib {
  const text = `${libAddress(c.ip).correctForm()}/${c.prefix}`
  return c.ip.family === 4 ? new Address4(text) : new Address6(text)
}

/** Parses a bare address; undefined when it is not one. */
export function parseIp(s: string): Ip | undefined {
  if (s.includes('/')) return undefined
  const a = parseLib(s)
  return a === undefined ? undefined : toIp(a)
}

/** Parses `address/length`; undefined when it is not one. */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/')
  if (slash < 0 || !PREFIX_LENGTH.test(s.slice(slash + 1))) return undefined
  const a = parseLib(s) // the library checks the length against the family (Invalid subnet mask)
  return a === undefined ? undefined : { ip: toIp(a), prefix: a.subnetMask }
}

export function formatIp(ip: Ip): string {
  if (ip.family === 4) return Address4.fromBigInt(ip.value).correctForm()
  const a = Address6.fromBigInt(ip.value)
  return a.isMapped4() ? a.to4in6() : a.correctForm()
}

export const formatCidr = (c: Cidr): string => `${formatIp(c.ip)}/${c.prefix}`

/** The network address of a CIDR (host bits cleared): the library's startAddress(). */
export function networkOf(c: Cidr): Ip {
  return { family: c.ip.family, value: libCidr(c).startAddress().bigInt() }
}

/** The last address of a CIDR (all host bits set; the IPv4 broadcast): the library's endAddress(). */
export function lastOf(c: Cidr): Ip {
  return { family: c.ip.family, value: libCidr(c).endAddress().bigInt() }
}

/** Whether `ip` lies in `c` (never across families). */
export function contains(c: Cidr, ip: Ip): boolean {
  return ip.family === c.ip.family && libAddress(ip).isHostInSubnet(libCidr(c))
}

/** The address in network byte order (4 or 16 bytes). */
export function ipToBytes(ip: Ip): number[] {
  const a = libAddress(ip)
  return a instanceof Address4 ? a.toArray() : a.toUnsignedByteArray()
}

/** An address from network byte order; undefined unless 4 or 16 bytes. */
export function ipFromBytes(bytes: ArrayLike<number>): Ip | undefined {
  const b = Array.from(bytes)
  if (b.length === 4) return toIp(Address4.fromByteArray(b))
  if (b.length === 16) return toIp(Address6.fromUnsignedByteArray(b))
  return undefined
}
