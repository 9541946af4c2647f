// Address claims in a shared store (ARCHITECTURE §7, §12): every address a connection takes from an
// endpoint pool is claimed cluster-wide by an atomic create of `claims/<pool>.<address>`, so two agents
// allocating from one pool at once never hand out the same address: of two creates of one claim exactly one
// succeeds (Kv contract), and the loser picks another pair.
//
// Each agent watches all claims and keeps, per pool, the addresses other nodes hold, sorted: the allocator
// skips them like the addresses a party already holds (ipam/p2p `heldElsewhere`), so collisions are rare
// and only happen between concurrent allocations. A claim names its node and connection; this node's claims
// are released on Close and re-asserted at start for the connections it kept. Claims of a node whose
// record has expired (the node is gone, ./nodes.ts) are collected by any agent.
import { AgentError } from '../errors.js'
import { parseAddr, parsePrefix, prefixContains, type P2PPair, type Prefix } from '../../ipam/p2p/index.js'
import { KvConflict, KvUnavailable, type Kv, type KvEntry } from './kv.js'
import { listThenWatch } from './watch-kind.js'

export interface ClaimValue {
  readonly pool: string
  readonly address: string
  readonly connectionId: string
  readonly node: string
}

/** A claim's name: family, pool network and length, address, all in hex (a valid, injective store name). */
export function claimName(pool: string, address: string): string {
  const p = parsePrefix(pool)
  const a = parseAddr(address)
  return `${p.family}-${p.first.toString(16)}-${p.length}.${a.value.toString(16)}`
}

function decode(v: unknown): ClaimValue | undefined {
  if (v === null || typeof v !== 'object') return undefined
  const o = v as Record<string, unknown>
  if (typeof o.pool !== 'string' || typeof o.address !== 'string' || typeof o.connectionId !== 'string' || typeof o.node !== 'string') return undefined
  return { pool: o.pool, address: o.address, connectionId: o.connectionId, node: o.node }
}

/** The claim create lost: these addresses are held by another node (or another connection). */
export class ClaimConflict extends Error {
  override readonly name = 'ClaimConflict'
  constructor(
    readonly addresses: readonly string[],
    message: string,
  ) {
    super(message)
  }
}

interface Known {
  readonly value: ClaimValue
  readonly revision: string
  readonly family: 4 | 6
  readonly addr: bigint
}

export class AddressClaims {
  /** Every claim in the store, by name (from list + watch and this agent's own writes). */
  private readonly claims = new Map<string, Known>()
  private unwatch: (() => void) | undefined

  private constructor(
    private readonly kv: Kv,
    readonly node: string,
  ) {}

  static async start(kv: Kv, node: string, onState?: (state: 'down' | 'up', reason?: string) => void): Promise<AddressClaims> {
    const c = new AddressClaims(kv, node)
    c.unwatch = await listThenWatch(kv, 'claims', { learn: (e) => c.learn(e), forget: (name) => c.claims.delete(name), clear: () => c.claims.clear() }, onState === undefined ? {} : { onState })
    return c
  }

  stop(): void {
    this.unwatch?.()
    this.unwatch = undefined
  }

  /** Addresses other nodes hold in any of `pools`, per family, sorted ascending (for the allocator). */
  heldElsewhere(pools: readonly string[]): Record<4 | 6, bigint[]> {
    const parsed: Prefix[] = pools.map((p) => parsePrefix(p))
    const out: Record<4 | 6, bigint[]> = { 4: [], 6: [] }
    for (const k of this.claims.values()) {
      if (k.value.node === this.node) continue
      if (parsed.some((p) => prefixContains(p, { family: k.family, value: k.addr }))) out[k.family].push(k.addr)
    }
    out[4].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    out[6].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    return out
  }

  /**
   * Claims both addresses of every pair for `connectionId`. Addresses this connection already claims are
   * kept. On a lost create, the claims made by this call are removed and ClaimConflict names the taken
   * addresses; the store away is STORE_FAILURE.
   */
  async claim(connectionId: string, pairs: readonly P2PPair[]): Promise<void> {
    const made: string[] = []
    try {
      for (const p of pairs) {
        for (const address of [p.dst, p.src]) {
          const name = claimName(p.pool, address)
          const have = this.claims.get(name)
          if (have !== undefined && have.value.connectionId === connectionId && have.value.node === this.node) continue
          const value: ClaimValue = { pool: p.pool, address, connectionId, node: this.node }
          try {
            this.learn(await this.kv.create('claims', name, value))
            made.push(name)
          } catch (err) {
            if (!(err instanceof KvConflict)) throw err
            // Held by someone else: learn who (the watch may lag), and let the caller pick another pair.
            const now = await this.kv.get('claims', name).catch(() => undefined)
            if (now !== undefined) this.learn(now)
            const owner = now === undefined ? undefined : decode(now.value)
            if (owner !== undefined && owner.connectionId === connectionId && owner.node === this.node) continue
            throw new ClaimConflict([address], `address ${address} of pool ${p.pool} is claimed by ${owner === undefined ? 'another agent' : `connection ${owner.connectionId} on node ${owner.node}`}`)
          }
        }
      }
    } catch (err) {
      await this.drop(made)
      if (err instanceof KvUnavailable) throw new AgentError('STORE_FAILURE', `address claims: the ${this.kv.backend} store is unreachable (${err.message})`, { cause: err })
      throw err
    }
  }

  /** Releases the claims this node holds for `connectionId` in `pairs` (gone already is fine). */
  async release(connectionId: string, pairs: readonly P2PPair[]): Promise<void> {
    const names = pairs.flatMap((p) => [claimName(p.pool, p.dst), claimName(p.pool, p.src)])
    await this.drop(names.filter((n) => {
      const k = this.claims.get(n)
      return k === undefined || (k.value.connectionId === connectionId && k.value.node === this.node)
    }))
  }

  /** Claims of this node whose connection is not in `live` (a restart's reconcile): released. */
  async retain(live: ReadonlySet<string>): Promise<number> {
    const stale = [...this.claims].filter(([, k]) => k.value.node === this.node && !live.has(k.value.connectionId)).map(([n]) => n)
    await this.drop(stale)
    return stale.length
  }

  /** Claims held by nodes not in `nodes` (their records expired): collected. Returns how many. */
  async collect(nodes: ReadonlySet<string>): Promise<number> {
    const orphaned = [...this.claims].filter(([, k]) => !nodes.has(k.value.node))
    for (const [name, k] of orphaned) {
      await this.kv.delete('claims', name, { revision: k.revision }).catch(() => false)
      this.claims.delete(name)
    }
    return orphaned.length
  }

  private async drop(names: readonly string[]): Promise<void> {
    for (const name of names) {
      const k = this.claims.get(name)
      await this.kv.delete('claims', name, k === undefined ? {} : { revision: k.revision }).catch(() => false)
      this.claims.delete(name)
    }
  }

  private learn(e: KvEntry): void {
    const value = decode(e.value)
    if (value === undefined) return
    let a
    try {
      a = parseAddr(value.address)
    } catch {
      return
    }
    this.claims.set(e.name, { value, revision: e.revision, family: a.family, addr: a.value })
  }
}
