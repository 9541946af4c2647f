// Subnet ranges with host-local's semantics: a range is a subnet with an optional [rangeStart, rangeEnd]
// and gateway; a range set is a list of ranges of one family from which one address is given per call.
//
// Defaults (as host-local): gateway = network + 1; rangeStart = network + 1; rangeEnd = the last address
// (the one before the broadcast for IPv4). Subnets with fewer than two host bits are refused. The network
// address, the IPv4 broadcast and every range's gateway are never handed out.
import { IpamError } from './errors'
import { contains, familyBits, formatCidr, formatIp, lastOf, networkOf, parseCidr, parseIp, type Cidr, type Family, type Ip } from './ip'

export interface Range {
  subnet: Cidr
  start: Ip
  end: Ip
  gateway: Ip
}
export type RangeSet = Range[]

export interface RangeInput {
  subnet?: unknown
  rangeStart?: unknown
  rangeEnd?: unknown
  gateway?: unknown
}

const invalid = (field: string, msg: string): IpamError => new IpamError('INVALID_RANGE', `${field}: ${msg}`)

function ipField(v: unknown, field: string): Ip | undefined {
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v !== 'string') throw invalid(field, `expected an IP address, got ${JSON.stringify(v)}`)
  const ip = parseIp(v)
  if (ip === undefined) throw invalid(field, `"${v}" is not an IP address`)
  return ip
}

/** Validates one range and fills in the defaults. `field` names it in errors (e.g. ipam.ranges[0][1]). */
export function canonicalizeRange(input: RangeInput, field: string): Range {
  if (typeof input.subnet !== 'string') throw invalid(`${field}.subnet`, `expected a CIDR, got ${JSON.stringify(input.subnet)}`)
  const parsed = parseCidr(input.subnet)
  if (parsed === undefined) throw invalid(`${field}.subnet`, `"${input.subnet}" is not a CIDR`)
  const f = parsed.ip.family
  const subnet: Cidr = { ip: networkOf(parsed), prefix: parsed.prefix }
  if (subnet.prefix > familyBits(f) - 2) throw invalid(`${field}.subnet`, `${formatCidr(subnet)} is too small to allocate from`)
  const last = lastOf(subnet)
  const check = (ip: Ip | undefined, name: string): Ip | undefined => {
    if (ip === undefined) return undefined
    if (!contains(subnet, ip)) throw invalid(`${field}.${name}`, `${formatIp(ip)} is not in ${formatCidr(subnet)}`)
    return ip
  }
  const gateway = check(ipField(input.gateway, `${field}.gateway`), 'gateway') ?? { family: f, value: subnet.ip.value + 1n }
  const start = check(ipField(input.rangeStart, `${field}.rangeStart`), 'rangeStart') ?? { family: f, value: subnet.ip.value + 1n }
  const end = check(ipField(input.rangeEnd, `${field}.rangeEnd`), 'rangeEnd') ?? { family: f, value: f === 4 ? last.value - 1n : last.value }
  if (start.value > end.value) throw invalid(`${field}.rangeStart`, `${formatIp(start)} is after rangeEnd ${formatIp(end)}`)
  return { subnet, start, end, gateway }
}

export const rangeFamily = (set: RangeSet): Family => (set[0] as Range).subnet.ip.family

function overlaps(a: Range, b: Range): boolean {
  return a.subnet.ip.family === b.subnet.ip.family && a.start.value <= b.end.value && b.start.value <= a.end.value
}

/** One range set as configured: `field` names it in errors; `single` for the old one-range style. */
export interface RangeSetInput {
  field: string
  ranges: unknown
  single?: boolean
}

/** Validates a list of range sets: non-empty sets, one family per set, no overlaps anywhere. */
export function canonicalizeRangeSets(sets: readonly RangeSetInput[]): RangeSet[] {
  if (sets.length === 0) throw invalid('ipam', 'no ranges configured (give "ranges" or "subnet")')
  const all: Array<{ r: Range; at: string }> = []
  const out = sets.map((set) => {
    if (!Array.isArray(set.ranges) || set.ranges.length === 0) throw invalid(set.field, 'a range set must be a non-empty list of ranges')
    const ranges = set.ranges.map((r: unknown, j: number) => {
      const at = set.single === true ? set.field : `${set.field}[${j}]`
      if (typeof r !== 'object' || r === null || Array.isArray(r)) throw invalid(at, `expected a range object, got ${JSON.stringify(r)}`)
      const range = canonicalizeRange(r as RangeInput, at)
      all.push({ r: range, at })
      return range
    })
    const fam = (ranges[0] as Range).subnet.ip.family
    ranges.forEach((r: Range, j: number) => {
      if (r.subnet.ip.family !== fam) throw invalid(`${set.field}[${j}].subnet`, 'mixes IPv4 and IPv6 in one range set')
    })
    return ranges
  })
  for (let a = 0; a < all.length; a++) {
    for (let b = a + 1; b < all.length; b++) {
      const x = all[a] as { r: Range; at: string }
      const y = all[b] as { r: Range; at: string }
      if (overlaps(x.r, y.r)) throw invalid(`${y.at}.subnet`, `${formatCidr(y.r.subnet)} overlaps ${x.at} (${formatCidr(x.r.subnet)})`)
    }
  }
  return out
}

/** Whether `ip` may be handed out by this range (inside [start, end], not gateway/network/broadcast). */
export function allocatable(r: Range, ip: Ip): boolean {
  if (ip.family !== r.subnet.ip.family || ip.value < r.start.value || ip.value > r.end.value) return false
  if (ip.value === r.gateway.value || ip.value === r.subnet.ip.value) return false
  if (ip.family === 4 && ip.value === lastOf(r.subnet).value) return false
  return true
}

/** The range of the set that contains `ip` as an allocatable address, if any. */
export function rangeFor(set: RangeSet, ip: Ip): Range | undefined {
  return set.find((r) => allocatable(r, ip))
}

/**
 * Free addresses of a set in allocation order: the one after `last` (when it lies in the set) first,
 * wrapping around, so a released address is reused as late as possible (as host-local does).
 * Lazy: a /64 is never enumerated beyond the first free address.
 */
export function* candidates(set: RangeSet, reserved: ReadonlySet<string>, last?: Ip): Generator<{ ip: Ip; range: Range }> {
  let startRange = 0
  let startValue: bigint | undefined
  if (last !== undefined) {
    const idx = set.findIndex((r) => last.family === r.subnet.ip.family && last.value >= r.start.value && last.value <= r.end.value)
    if (idx >= 0) {
      startRange = idx
      startValue = last.value + 1n
    }
  }
  const n = set.length
  // Walk ranges from startRange (from startValue), then the others, then the head of startRange.
  for (let k = 0; k <= n; k++) {
    const r = set[(startRange + k) % n] as Range
    let from = r.start.value
    let to = r.end.value
    if (k === 0 && startValue !== undefined) from = startValue
    if (k === n) {
      if (startValue === undefined) break
      to = startValue - 1n
    }
    for (let v = from; v <= to; v++) {
      const ip: Ip = { family: r.subnet.ip.family, value: v }
      if (!allocatable(r, ip) || reserved.has(formatIp(ip))) continue
      yield { ip, range: r }
    }
  }
}

/** How many addresses a set can hand out in total (exact, for STATUS). */
export function capacity(set: RangeSet): bigint {
  let total = 0n
  for (const r of set) {
    total += r.end.value - r.start.value + 1n
    const excluded = new Set([r.gateway.value, r.subnet.ip.value, ...(r.subnet.ip.family === 4 ? [lastOf(r.subnet).value] : [])])
    for (const x of excluded) if (x >= r.start.value && x <= r.end.value) total -= 1n
  }
  return total
}
