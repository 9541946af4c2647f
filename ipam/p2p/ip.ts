// ipam/p2p/ip.ts: IPv4/IPv6 addresses and prefixes as bigints, for the allocator's arithmetic.
//
// Needs: `node:net` (isIP, to reject malformed text before parsing). Pure otherwise.
// Contract: `parseAddr` accepts dotted IPv4 and any RFC 4291 IPv6 text (with `::` and a trailing dotted
// IPv4), no zone index; `formatAddr` writes canonical text (IPv6 per RFC 5952: lowercase, longest run of
// two or more zero groups compressed, leftmost on a tie, `::ffff:a.b.c.d` for IPv4-mapped). `parsePrefix`
// accepts host bits set (`192.168.3.4/16`, as NSM does) and normalises to the network; it throws
// P2PError INVALID_PREFIX naming `field`.
import { isIP } from 'node:net'
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

export function parseAddr(text: string, field = 'address'): Addr {
  const family = isIP(text)
  if (family === 4) {
    let v = 0n
    for (const part of text.split('.')) v = (v << 8n) | BigInt(Number(part))
    return { family: 4, value: v }
  }
  if (family === 6 && !text.includes('%')) return { family: 6, value: parseV6(text) }
  throw new P2PError('INVALID_PREFIX', `${field}: ${JSON.stringify(text)} is not an IP address`, field)
}

function parseV6(text: string): bigint {
  let s = text
  const groups: number[] = []
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)
  let tail: number[] = []
  if (v4 !== null && v4[1] !== undefined) {
    const n = Number(parseAddr(v4[1]).value)
    tail = [n >>> 16, n & 0xffff]
    s = s.slice(0, s.length - v4[1].length)
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1)
  }
  const [left = '', right] = s.split('::')
  const hex = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)))
  const l = hex(left)
  const r = [...(right === undefined ? [] : hex(right)), ...tail]
  if (right === undefined) groups.push(...l, ...r)
  else groups.push(...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r)
  let v = 0n
  for (const g of groups) v = (v << 16n) | BigInt(g)
  return v
}

export function formatAddr(a: Addr): string {
  if (a.family === 4) return [24n, 16n, 8n, 0n].map((s) => String((a.value >> s) & 0xffn)).join('.')
  const g: number[] = []
  for (let i = 7; i >= 0; i--) g.push(Number((a.value >> BigInt(i * 16)) & 0xffffn))
  if (a.value >> 32n === 0xffffn) return `::ffff:${formatAddr({ family: 4, value: a.value & 0xffffffffn })}`
  // Longest run of zero groups, at least two long; the leftmost wins a tie.
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
  const h = g.map((x) => x.toString(16))
  if (best < 0) return h.join(':')
  return `${h.slice(0, best).join(':')}::${h.slice(best + bestLen).join(':')}`
}

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
