// IP addresses and prefixes <-> the raw bytes rtnetlink carries. Small and strict: anything that
// does not parse is an INVALID_ARGUMENT naming the input.
import { formatIp as formatCodecIp, parseIp as parseCodecIp } from '../../ipam/range/ip.js'
import { KernelError } from '../errors'
import { AF_INET, AF_INET6 } from './codec'

export interface Prefix {
  family: typeof AF_INET | typeof AF_INET6
  bytes: Buffer
  len: number
}

// Text <-> bigint is the project's one codec (ipam/range/ip.ts); here only bigint <-> bytes.
function toBytes(value: bigint, len: number): Buffer {
  const out = Buffer.alloc(len)
  let v = value
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn)
    v >>= 8n
  }
  return out
}

export function parseIp(s: string): { family: typeof AF_INET | typeof AF_INET6; bytes: Buffer } {
  const ip = parseCodecIp(s)
  if (ip === undefined) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not an IP address`)
  return ip.family === 4 ? { family: AF_INET, bytes: toBytes(ip.value, 4) } : { family: AF_INET6, bytes: toBytes(ip.value, 16) }
}

/** "10.0.0.1/32", "fd00::1/128", or a bare address (host prefix). */
export function parsePrefix(s: string): Prefix {
  const slash = s.indexOf('/')
  const ip = parseIp(slash < 0 ? s : s.slice(0, slash))
  const max = ip.family === AF_INET ? 32 : 128
  let len = max
  if (slash >= 0) {
    const lenText = s.slice(slash + 1)
    len = Number(lenText)
    if (!/^[0-9]{1,3}$/.test(lenText) || len > max) {
      throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)}: prefix length must be 0..${max}`)
    }
  }
  return { ...ip, len }
}

export function formatIp(b: Buffer): string {
  let v = 0n
  for (const x of b) v = (v << 8n) | BigInt(x)
  return formatCodecIp({ family: b.length === 4 ? 4 : 6, value: v })
}

export function formatPrefix(p: { bytes: Buffer; len: number }): string {
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
