// The subnet-range allocator: decides which addresses an owner gets from a list of range sets, over a
// Store that makes each claim atomic. No I/O of its own: the store is the only side effect, so unit
// tests run it over MemoryStore and the plugin over FileStore.
//
// allocate() gives one address per range set (a requested one when it lies in that set), and undoes
// every claim it made when a later set fails. release() and gc() remove reservations by owner.
import { sameOwner, type Owner, type Reservation, type Store } from '../store/store'
import { IpamError } from './errors'
import { formatCidr, formatIp, parseIp, type Ip } from './ip'
import { candidates, capacity, rangeFor, type Range, type RangeSet } from './range'

export interface Allocation {
  rangeSet: number
  ip: Ip
  range: Range
}

/** "10.1.2.3/24" for an allocation: the address with its subnet's prefix. */
export const allocationCidr = (a: Allocation): string => `${formatIp(a.ip)}/${a.range.subnet.prefix}`

export async function ownerReservations(store: Store, owner: Owner): Promise<Reservation[]> {
  return (await store.list()).filter((r) => sameOwner(r, owner))
}

/**
 * Which range set each requested address belongs to (pure: callers check requests before touching a
 * store). An address in no set, or two in one set, is a configuration error.
 */
export function placeRequested(sets: readonly RangeSet[], requested: readonly Ip[]): Map<number, Ip> {
  const wanted = new Map<number, Ip>()
  for (const ip of requested) {
    const idx = sets.findIndex((s) => rangeFor(s, ip) !== undefined)
    if (idx < 0) throw new IpamError('ADDRESS_OUTSIDE_RANGES', `requested address ${formatIp(ip)} is not an allocatable address of any configured range`)
    if (wanted.has(idx)) throw new IpamError('ADDRESS_OUTSIDE_RANGES', `requested addresses ${formatIp(wanted.get(idx) as Ip)} and ${formatIp(ip)} are in the same range set (one address per range set)`)
    wanted.set(idx, ip)
  }
  return wanted
}

export async function allocate(store: Store, sets: readonly RangeSet[], owner: Owner, requested: readonly Ip[] = []): Promise<Allocation[]> {
  const wanted = placeRequested(sets, requested)
  const existing = await store.list()
  const mine = existing.filter((r) => sameOwner(r, owner))
  if (mine.length > 0) {
    throw new IpamError('ATTACHMENT_EXISTS', `container ${owner.containerID} interface ${owner.ifname} already holds ${mine.map((r) => r.ip).join(', ')}: DEL it first`)
  }
  const reserved = new Set(existing.map((r) => r.ip))
  const done: Allocation[] = []
  try {
    for (const [i, set] of sets.entries()) {
      const want = wanted.get(i)
      if (want !== undefined) {
        const ipText = formatIp(want)
        if (!(await store.reserve({ ip: ipText, rangeSet: i, ...owner }))) {
          throw new IpamError('ADDRESS_UNAVAILABLE', `requested address ${ipText} is already reserved`)
        }
        done.push({ rangeSet: i, ip: want, range: rangeFor(set, want) as Range })
        continue
      }
      const lastText = await store.lastReserved(i)
      const last = lastText === undefined ? undefined : parseIp(lastText)
      let got: Allocation | undefined
      for (const c of candidates(set, reserved, last)) {
        if (await store.reserve({ ip: formatIp(c.ip), rangeSet: i, ...owner })) {
          got = { rangeSet: i, ip: c.ip, range: c.range }
          break
        }
        reserved.add(formatIp(c.ip)) // someone else took it since we listed
      }
      if (got === undefined) {
        throw new IpamError('POOL_EXHAUSTED', `no free address in range set ${i} (${set.map((r) => formatCidr(r.subnet)).join(', ')})`)
      }
      done.push(got)
    }
    await store.sync()
  } catch (err) {
    await store.release(owner, done.map((a) => formatIp(a.ip))).catch(() => undefined)
    throw err
  }
  // The round-robin hint: losing it only changes which address comes next, so a failure to write it (a
  // full disk) neither fails the allocation nor leaves it half done.
  for (const a of done) await store.setLastReserved(a.rangeSet, formatIp(a.ip)).catch(() => undefined)
  return done
}

/** Releases everything `owner` holds. Idempotent. Returns the addresses released. */
export async function release(store: Store, owner: Owner): Promise<string[]> {
  const mine = await ownerReservations(store, owner)
  return store.release(owner, mine.map((r) => r.ip))
}

/** Releases every reservation whose owner is not in `valid`. Returns what was released. */
export async function gc(store: Store, valid: readonly Owner[]): Promise<Reservation[]> {
  const keep = new Set(valid.map((o) => `${o.containerID}\n${o.ifname}`))
  const stale = (await store.list()).filter((r) => !keep.has(`${r.containerID}\n${r.ifname}`))
  const released: Reservation[] = []
  for (const r of stale) {
    const done = await store.release(r, [r.ip])
    if (done.length > 0) released.push(r)
  }
  return released
}

/** Range sets with no address left (for STATUS). */
export async function exhaustedSets(store: Store, sets: readonly RangeSet[]): Promise<number[]> {
  const held = await store.list()
  const out: number[] = []
  sets.forEach((set, i) => {
    let used = 0n
    for (const r of held) {
      const ip = parseIp(r.ip)
      if (ip !== undefined && rangeFor(set, ip) !== undefined) used += 1n
    }
    if (used >= capacity(set)) out.push(i)
  })
  return out
}
