// ipam/p2p/allocator.ts: point-to-point IPAM (ARCHITECTURE §7, as NSM's point2pointipam) as a pure allocator.
//
// Needs: the endpoint's pools and offered routes, the request's excluded prefixes; state loaded from (and
// saved to) the agent's store as the plain JSON `P2PState`. No I/O, no clock.
// Contract:
//   - per address family the endpoint has a pool for, a connection gets the two lowest addresses of the first
//     pool with room: dst (the endpoint's end) then src (the client's), each as /32 (/128). An address is
//     not free when it lies in an excluded prefix or is held by another connection of either party: the
//     client's other connections (so they never overlap) and the endpoint's (so its side never does), or
//     held elsewhere (`heldElsewhere`: other nodes' claims on a shared store). Party
//     ids are the caller's choice; use the netns identity, so a composed endpoint that is also a client is
//     one party in both roles;
//   - src_routes = dst/32 (per family) + the endpoint's offered routes; dst_routes = src/32;
//   - re-requesting a connection id returns the same addresses while they stay valid (in a pool of the
//     endpoint now serving it, not excluded, not taken): healing to another endpoint keeps them where that
//     endpoint's pools allow;
//   - `block(party, addresses)` makes addresses unusable for a party without a connection holding them (the
//     kernel showed them in use: a leftover datapath nobody journaled); `unblock()` lifts every block (after
//     the agent swept such leftovers). Blocks are not part of the persisted state;
//   - `allocate` is atomic: it throws P2PError (POOL_EXHAUSTED, NO_POOL, INVALID_PREFIX) having changed
//     nothing, or returns the allocation with an `undo()` that restores exactly the previous state (for a
//     pipeline whose later step fails). `snapshot()` is what to persist; `new PointToPointPool(snapshot)`
//     restores it.
// Cost: a request reads only the sorted addresses its two parties hold (binary search, then a merge walk up
// to the first hole), never all connections nor the pool's size.
import { P2PError } from './errors.js'
import { formatAddr, formatPrefix, hostPrefix, parseAddr, parsePrefix, prefixContains, type Family, type Prefix } from './ip.js'

/** One family's pair of a connection (plain addresses, canonical text). */
export interface P2PPair {
  /** The pool (canonical CIDR) the pair was taken from. */
  readonly pool: string
  readonly src: string
  readonly dst: string
}

export interface P2PRecord {
  readonly connectionId: string
  readonly clientId: string
  readonly endpointId: string
  /** At most one pair per family, IPv4 first. */
  readonly pairs: readonly P2PPair[]
}

/** The allocator's whole state: JSON-serialisable, persisted as is by the agent. */
export interface P2PState {
  version: 1
  connections: Record<string, P2PRecord>
}

export interface P2PRequest {
  connectionId: string
  clientId: string
  endpointId: string
  /** The endpoint's address pools (CIDRs, IPv4 and/or IPv6), tried in order within a family. */
  pools: readonly string[]
  /** Prefixes the endpoint offers behind it; the client routes them to its dst. */
  routes?: readonly string[]
  /** The request's `excluded_prefixes` (addresses that must not be used, e.g. the cluster's). */
  excludedPrefixes?: readonly string[]
  /**
   * Addresses held outside this allocator (other nodes' claims on a shared store), per family, sorted
   * ascending: never chosen, as if a party held them.
   */
  heldElsewhere?: Readonly<Record<Family, readonly bigint[]>>
}

/** What goes into the connection's IPContext (all CIDR text). */
export interface P2PAllocation {
  srcIpAddrs: string[]
  dstIpAddrs: string[]
  srcRoutes: string[]
  dstRoutes: string[]
  /** True when the connection already held exactly these addresses for this endpoint. */
  reused: boolean
}

export interface P2PResult extends P2PAllocation {
  record: P2PRecord
  /** Restores the state from before this allocate (its previous record, or none). */
  undo(): void
}

export function emptyP2PState(): P2PState {
  return { version: 1, connections: {} }
}

/** The IPContext view of a record (e.g. to answer a CHECK from the state alone). */
export function allocationOf(record: P2PRecord, routes: readonly string[] = []): P2PAllocation {
  const src = record.pairs.map((p) => hostPrefix(parseAddr(p.src)))
  const dst = record.pairs.map((p) => hostPrefix(parseAddr(p.dst)))
  return { srcIpAddrs: src, dstIpAddrs: dst, srcRoutes: [...new Set([...dst, ...routes])], dstRoutes: src, reused: true }
}

interface Indexed {
  record: P2PRecord
  /** Parsed addresses of every pair (both ends), with their family. */
  addrs: Array<{ family: Family; value: bigint }>
}

export class PointToPointPool {
  private readonly records = new Map<string, Indexed>()
  /** party id → the addresses its connections hold, per family, sorted ascending (duplicates kept, one per holder). */
  private readonly held = new Map<string, Held>()
  /** Blocked addresses (`block`), indexed in `held` like a connection's, by a pseudo record each. */
  private readonly blocks: Indexed[] = []

  /** Loads a persisted state (validated: throws P2PError INVALID_STATE). */
  constructor(state: unknown = emptyP2PState()) {
    const bad = (why: string): P2PError => new P2PError('INVALID_STATE', `p2p state: ${why}`, 'state')
    if (!isObj(state) || state.version !== 1 || !isObj(state.connections)) throw bad('expected { version: 1, connections: {...} }')
    for (const [id, r] of Object.entries(state.connections)) {
      if (!isObj(r) || r.connectionId !== id || typeof r.clientId !== 'string' || typeof r.endpointId !== 'string' || !Array.isArray(r.pairs)) {
        throw bad(`connection ${id} is malformed`)
      }
      const pairs = (r.pairs as unknown[]).map((p): P2PPair => {
        if (!isObj(p) || typeof p.pool !== 'string' || typeof p.src !== 'string' || typeof p.dst !== 'string') throw bad(`connection ${id} has a malformed pair`)
        try {
          const pool = parsePrefix(p.pool)
          const src = parseAddr(p.src)
          const dst = parseAddr(p.dst)
          if (!prefixContains(pool, src) || !prefixContains(pool, dst)) throw bad(`connection ${id}: ${p.src}/${p.dst} outside ${p.pool}`)
          return { pool: formatPrefix(pool), src: formatAddr(src), dst: formatAddr(dst) }
        } catch (e) {
          throw P2PError.is(e, 'INVALID_STATE') ? e : bad(`connection ${id}: ${e instanceof Error ? e.message : String(e)}`)
        }
      })
      this.index(freeze({ connectionId: id, clientId: r.clientId, endpointId: r.endpointId, pairs }))
    }
  }

  get size(): number {
    return this.records.size
  }

  get(connectionId: string): P2PRecord | undefined {
    return this.records.get(connectionId)?.record
  }

  /** The plain JSON state to persist (records are immutable and shared, the containers are fresh). */
  snapshot(): P2PState {
    const connections: Record<string, P2PRecord> = {}
    for (const [id, x] of this.records) connections[id] = x.record
    return { version: 1, connections }
  }

  allocate(req: P2PRequest): P2PResult {
    const pools = req.pools.map((p, i) => parsePrefix(p, `pools[${i}]`))
    const excluded = (req.excludedPrefixes ?? []).map((p, i) => parsePrefix(p, `excludedPrefixes[${i}]`))
    const routes = (req.routes ?? []).map((p, i) => formatPrefix(parsePrefix(p, `routes[${i}]`)))
    if (pools.length === 0) throw new P2PError('NO_POOL', `endpoint ${req.endpointId} has no address pool`, 'pools')

    const previous = this.records.get(req.connectionId)
    // The connection's own addresses do not block it: take them out while choosing, put back on failure.
    if (previous !== undefined) this.unindex(previous)
    try {
      const a = this.held.get(req.clientId)
      const b = this.held.get(req.endpointId)
      const none: readonly bigint[] = []
      const pairs: P2PPair[] = []
      let reused = previous !== undefined && previous.record.endpointId === req.endpointId && previous.record.clientId === req.clientId
      for (const family of [4, 6] as const) {
        const familyPools = pools.filter((p) => p.family === family)
        if (familyPools.length === 0) continue
        const familyExcluded = excluded.filter((p) => p.family === family)
        const heldA = a?.[family] ?? none
        const heldB = b?.[family] ?? none
        const heldC = req.heldElsewhere?.[family] ?? none
        const free = (v: bigint): boolean =>
          !includes(heldA, v) && !includes(heldB, v) && !includes(heldC, v) && !familyExcluded.some((p) => v >= p.first && v <= p.last)

        const prevPair = previous?.record.pairs.find((p) => parseAddr(p.dst).family === family)
        const kept = prevPair === undefined ? undefined : keep(prevPair, familyPools, free)
        if (kept !== undefined) {
          if (kept.pool !== prevPair?.pool) reused = false
          pairs.push(kept)
          continue
        }
        reused = false
        const fresh = lowestPair(familyPools, familyExcluded, heldA, heldB, heldC)
        if (fresh === undefined) {
          throw new P2PError(
            'POOL_EXHAUSTED',
            `no free IPv${family} address pair for connection ${req.connectionId} in the pools of endpoint ${req.endpointId} (${familyPools.map(formatPrefix).join(', ')})`,
            'pools',
          )
        }
        pairs.push(fresh)
      }
      if (previous !== undefined && previous.record.pairs.length !== pairs.length) reused = false
      const record = freeze({ connectionId: req.connectionId, clientId: req.clientId, endpointId: req.endpointId, pairs })
      const indexed = this.index(record)
      const undo = (): void => {
        if (this.records.get(req.connectionId) !== indexed) return // already released or replaced since
        this.unindex(indexed)
        if (previous !== undefined) this.reindex(previous)
      }
      return { ...allocationOf(record, routes), reused, record, undo }
    } catch (e) {
      if (previous !== undefined) this.reindex(previous)
      throw e
    }
  }

  /** Frees a connection's addresses; an unknown id is a no-op (returns undefined). */
  release(connectionId: string): P2PRecord | undefined {
    const x = this.records.get(connectionId)
    if (x === undefined) return undefined
    this.unindex(x)
    return x.record
  }

  /**
   * Makes `addresses` (plain or CIDR text) unusable for `party` until `unblock`: a free check treats them as
   * held. Invalid text is ignored. Returns how many addresses were blocked.
   */
  block(party: string, addresses: readonly string[]): number {
    const addrs = addresses.flatMap((a) => {
      try {
        return [parseAddr(a.includes('/') ? a.slice(0, a.indexOf('/')) : a)]
      } catch {
        return []
      }
    })
    if (addrs.length === 0) return 0
    const x: Indexed = { record: { connectionId: '', clientId: party, endpointId: party, pairs: [] }, addrs }
    this.blocks.push(x)
    this.addHeld(x)
    return addrs.length
  }

  /** Lifts every block. */
  unblock(): void {
    for (const x of this.blocks.splice(0)) this.removeHeld(x)
  }

  /** How many blocks are in place (observability, tests). */
  get blocked(): number {
    return this.blocks.length
  }

  /** Keeps only the connections whose ids are in `live` (reconcile after a restart, CNI GC); returns the rest. */
  retain(live: ReadonlySet<string>): P2PRecord[] {
    const released: P2PRecord[] = []
    for (const [id, x] of [...this.records]) {
      if (!live.has(id)) {
        this.unindex(x)
        released.push(x.record)
      }
    }
    return released
  }

  private index(record: P2PRecord): Indexed {
    const addrs = record.pairs.flatMap((p) => [parseAddr(p.src), parseAddr(p.dst)])
    const x: Indexed = { record, addrs }
    this.reindex(x)
    return x
  }

  private reindex(x: Indexed): void {
    this.records.set(x.record.connectionId, x)
    this.addHeld(x)
  }

  private addHeld(x: Indexed): void {
    for (const party of parties(x.record)) {
      let h = this.held.get(party)
      if (h === undefined) this.held.set(party, (h = { 4: [], 6: [] }))
      for (const a of x.addrs) {
        const arr = h[a.family]
        arr.splice(lowerBound(arr, a.value), 0, a.value)
      }
    }
  }

  private unindex(x: Indexed): void {
    this.records.delete(x.record.connectionId)
    this.removeHeld(x)
  }

  private removeHeld(x: Indexed): void {
    for (const party of parties(x.record)) {
      const h = this.held.get(party)
      if (h === undefined) continue
      for (const a of x.addrs) {
        const arr = h[a.family]
        const i = lowerBound(arr, a.value)
        if (arr[i] === a.value) arr.splice(i, 1)
      }
      if (h[4].length === 0 && h[6].length === 0) this.held.delete(party)
    }
  }
}

type Held = Record<Family, bigint[]>

/** First index i with arr[i] >= v (arr sorted ascending). */
function lowerBound(arr: readonly bigint[], v: bigint): number {
  let lo = 0
  let hi = arr.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((arr[mid] as bigint) < v) lo = mid + 1
    else hi = mid
  }
  return lo
}

function includes(arr: readonly bigint[], v: bigint): boolean {
  return arr[lowerBound(arr, v)] === v
}

function parties(r: P2PRecord): string[] {
  return r.clientId === r.endpointId ? [r.clientId] : [r.clientId, r.endpointId]
}

function keep(prev: P2PPair, pools: readonly Prefix[], free: (v: bigint) => boolean): P2PPair | undefined {
  const src = parseAddr(prev.src)
  const dst = parseAddr(prev.dst)
  if (!free(src.value) || !free(dst.value)) return undefined
  const pool = pools.find((p) => prefixContains(p, src) && prefixContains(p, dst))
  return pool === undefined ? undefined : { pool: formatPrefix(pool), src: formatAddr(src), dst: formatAddr(dst) }
}

/**
 * The two lowest free addresses of the first pool that has two: the least fixed point above the pool's start
 * of "skip an excluded prefix, skip a run of the client's held addresses, skip a run of the endpoint's",
 * each skip a binary search, so a request costs O(log n) per hole found, not a walk over the pool or over
 * every held address.
 */
function lowestPair(pools: readonly Prefix[], excluded: readonly Prefix[], heldA: readonly bigint[], heldB: readonly bigint[], heldC: readonly bigint[]): P2PPair | undefined {
  for (const pool of pools) {
    const ex = excluded.filter((p) => p.first <= pool.last && p.last >= pool.first)
    const nextFree = (from: bigint): bigint => {
      let c = from
      for (;;) {
        const before = c
        for (let e = ex.find((p) => c >= p.first && c <= p.last); e !== undefined; e = ex.find((p) => c >= p.first && c <= p.last)) {
          c = e.last + 1n
        }
        c = firstGap(heldC, firstGap(heldB, firstGap(heldA, c)))
        if (c === before) return c
      }
    }
    const dst = nextFree(pool.first)
    if (dst > pool.last) continue
    const src = nextFree(dst + 1n)
    if (src > pool.last) continue
    return { pool: formatPrefix(pool), src: formatAddr({ family: pool.family, value: src }), dst: formatAddr({ family: pool.family, value: dst }) }
  }
  return undefined
}

/**
 * The least value >= c not in the run of consecutive values of `arr` (sorted) starting at c. With duplicates
 * the run may be cut short and a held value returned; the caller's fixed-point loop then skips it.
 */
function firstGap(arr: readonly bigint[], c: bigint): bigint {
  const i = lowerBound(arr, c)
  if (arr[i] !== c) return c
  // Largest j with arr[j] - arr[i] === j - i: the run [i..j] is contiguous (monotone for unique values).
  let lo = i
  let hi = arr.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1
    if ((arr[mid] as bigint) - c === BigInt(mid - i)) lo = mid
    else hi = mid - 1
  }
  return (arr[lo] as bigint) + 1n
}

function freeze(r: { connectionId: string; clientId: string; endpointId: string; pairs: P2PPair[] }): P2PRecord {
  for (const p of r.pairs) Object.freeze(p)
  Object.freeze(r.pairs)
  return Object.freeze(r)
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
