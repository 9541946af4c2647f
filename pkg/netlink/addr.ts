// IP addresses and prefixes <-> the raw bytes rtnetlink carries. Small and strict: anything that
// does not parse is an INVALID_ARGUMENT naming the input.
import { isIPv4, isIPv6 } from 'node:net'
import { KernelError } from '../errors'
import { AF_INET, AF_INET6 } from './codec'

export interface Prefix {
  family: typeof AF_INET | typeof AF_INET6
  bytes: Buffer
  len: number
}

export function parseIp(s: string): { family: typeof AF_INET | typeof AF_INET6; bytes: Buffer } {
  if (isIPv4(s)) return { family: AF_INET, bytes: Buffer.from(s.split('.').map(Number)) }
  if (isIPv6(s)) return { family: AF_INET6, bytes: ipv6Bytes(s) }
  throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not an IP address`)
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

function ipv6Bytes(s: string): Buffer {
  let text = s
  const out = Buffer.alloc(16)
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two hextets.
  const lastColon = text.lastIndexOf(':')
  const tail = text.slice(lastColon + 1)
  if (tail.includes('.')) {
    const q = tail.split('.').map(Number)
    text = `${text.slice(0, lastColon + 1)}${(((q[0] ?? 0) << 8) | (q[1] ?? 0)).toString(16)}:${(((q[2] ?? 0) << 8) | (q[3] ?? 0)).toString(16)}`
  }
  const [head, rest] = text.split('::') as [string, string | undefined]
  const h = head === '' ? [] : head.split(':')
  const r = rest === undefined || rest === '' ? [] : rest.split(':')
  const groups = rest === undefined ? h : [...h, ...Array<string>(8 - h.length - r.length).fill('0'), ...r]
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  return out
}

export function formatIp(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i))
  // Longest run of zeros (length >= 2) becomes "::" (RFC 5952).
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (best < 0) return hex.join(':')
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`
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
