// IP addresses and prefixes <-> the raw bytes rtnetlink carries, and MAC addresses. Parsing, canonical
// text and the byte conversion are the `ip-address` library's (through ipam/address.ts: toArray /
// toUnsignedByteArray, fromByteArray / fromUnsignedByteArray); here only the Buffer and the errors. Strict:
// anything that does not parse is an INVALID_ARGUMENT naming the input.
import { formatIp as formatAddress, ipFromBytes, ipToBytes, parseCidr, parseIp as parseAddress } from '../../ipam/address.js'
import { KernelError } from '../errors'
import { AF_INET, AF_INET6 } from './codec'

export interface Prefix {
  family: typeof AF_INET | typeof AF_INET6
  bytes: Buffer
  len: number
}

export function parseIp(s: string): { family: typeof AF_INET | typeof AF_INET6; bytes: Buffer } {
  const ip = parseAddress(s)
  if (ip === undefined) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not an IP address`)
  return { family: ip.family === 4 ? AF_INET : AF_INET6, bytes: Buffer.from(ipToBytes(ip)) }
}

/** "10.0.0.1/32", "fd00::1/128", or a bare address (host prefix). The length is plain decimal. */
export function parsePrefix(s: string): Prefix {
  const slash = s.indexOf('/')
  const ip = parseIp(slash < 0 ? s : s.slice(0, slash))
  if (slash < 0) return { ...ip, len: ip.family === AF_INET ? 32 : 128 }
  const c = parseCidr(s)
  if (c === undefined) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)}: prefix length must be 0..${ip.family === AF_INET ? 32 : 128}`)
  return { ...ip, len: c.prefix }
}

/** 4 or 16 bytes (network order) -> canonical text. */
export function formatIp(b: Uint8Array): string {
  const ip = ipFromBytes(b)
  if (ip === undefined) throw new KernelError('INVALID_ARGUMENT', `a ${b.length}-byte value is not an IP address (4 or 16 bytes)`)
  return formatAddress(ip)
}

export function formatPrefix(p: { bytes: Uint8Array; len: number }): string {
  return `${formatIp(p.bytes)}/${p.len}`
}

/** "aa:bb:cc:dd:ee:ff" -> 6 bytes. */
export function parseMac(s: string): Buffer {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) {
    throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not a MAC address (aa:bb:cc:dd:ee:ff)`)
  }
  return Buffer.from(s.split(':').map((x) => parseInt(x, 16)))
}

export const formatMac = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':')
