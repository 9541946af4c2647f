// VXLAN VNI claims in a shared store (ARCHITECTURE §12). A remote cross-connect is two VXLAN devices with
// one VNI, one in each node's netns, and the kernel allows one device per VNI (and port) in a netns: the VNI
// must be free on both nodes. The client side's agent chooses it, before it asks the endpoint's agent to
// build the other half, by claiming it on both nodes: two atomic creates, `claims/vni-<vni>.<node>` (the
// VNI first: it is digits only, so the first '.' ends it, and node names may hold '.' and '-'). Of two
// agents claiming one VNI on one node exactly one wins (Kv contract); the loser undoes its half-made pair
// and picks again.
//
// Each agent watches all claims (as ./claims.ts does for addresses, sharing its kind: each side ignores
// the other's entries, whose values it cannot decode) and picks at random among the VNIs it does not know
// taken on either node, so collisions happen only between concurrent takes. A claim names the node whose
// VNI space it takes, its connection and its claimer (the agent that made it): the claimer releases its
// claims when the connection closes and, at restart, keeps only those of the connections it kept; any agent
// collects the claims of claimers whose node record expired (./nodes.ts).
//
// Store away: take, release, retain and collect reject with STORE_FAILURE naming the store. A claim this
// agent could not delete then (the undo of a half-made pair, a release) is remembered and deleted by the
// next call that reaches the store; a restart's `retain` finds any that outlived the process.
import { randomInt } from 'node:crypto'
import { AgentError } from '../errors.js'
import { VNI_MAX, VNI_MIN } from '../mechanisms/vxlan/params.js'
import { checkKvName, KvConflict, KvUnavailable, type Kv, type KvEntry } from './kv.js'
import { listThenWatch } from './watch-kind.js'

export interface VniClaimValue {
  readonly vni: number
  /** The node whose VNI space the claim takes. */
  readonly node: string
  readonly connectionId: string
  /** The agent (node name) that made the claim. */
  readonly claimer: string
}

export interface VniClaimsOptions {
  /** The range to pick from (default 1..16777215). */
  readonly min?: number
  readonly max?: number
  /** Claim attempts per take (each a VNI believed free on both nodes) before POOL_EXHAUSTED. Default 32. */
  readonly attempts?: number
  /** A VNI in [min, max] where the search for a free one starts (default: uniform, node:crypto). */
  readonly random?: (min: number, max: number) => number
  /** The watch lost the store ('down') or resumed ('up'). */
  readonly onState?: (state: 'down' | 'up', reason?: string) => void
}

/** A VNI claim's store name. */
export function vniClaimName(node: string, vni: number): string {
  return `vni-${vni}.${node}`
}

function decode(name: string, v: unknown): VniClaimValue | undefined {
  if (v === null || typeof v !== 'object') return undefined
  const o = v as Record<string, unknown>
  if (typeof o.vni !== 'number' || typeof o.node !== 'string' || typeof o.connectionId !== 'string' || typeof o.claimer !== 'string') return undefined
  // An entry under another name is not one of ours (nor trustworthy).
  if (vniClaimName(o.node, o.vni) !== name) return undefined
  return { vni: o.vni, node: o.node, connectionId: o.connectionId, claimer: o.claimer }
}

interface Known {
  readonly value: VniClaimValue
  readonly revision: string
}

/** What a connection of this agent holds: one VNI, claimed on these nodes (node → the claim's revision). */
interface Held {
  readonly vni: number
  readonly nodes: Map<string, string>
}

/** Node names become part of store names: refused here when they cannot. */
function checkNode(node: string): void {
  try {
    checkKvName('claims', vniClaimName(node, VNI_MAX))
  } catch {
    throw new TypeError(`VNI claims: node name ${JSON.stringify(node)} does not make a store name (lowercase letters, digits, '-' and '.')`)
  }
}

export class VniClaims {
  /** Every VNI claim in the store, by name: list + watch, and this agent's own writes. */
  private readonly claims = new Map<string, Known>()
  /** This agent's connections and what they hold; changed only by this agent's own calls. */
  private readonly own = new Map<string, Held>()
  /** Claims being created by this agent now: not picked by a concurrent take. */
  private readonly reserving = new Set<string>()
  /** This agent's claims that must go but could not be deleted (the store away): name → revision. */
  private readonly leftovers = new Map<string, string>()
  /** Takes in flight, by connection: a second take of a connection waits for the first. */
  private readonly taking = new Map<string, Promise<number>>()
  private unwatch: (() => void) | undefined
  private readonly min: number
  private readonly max: number
  private readonly attempts: number
  private readonly random: (min: number, max: number) => number

  private constructor(
    private readonly kv: Kv,
    readonly self: string,
    opts: VniClaimsOptions,
  ) {
    this.min = opts.min ?? VNI_MIN
    this.max = opts.max ?? VNI_MAX
    if (!Number.isInteger(this.min) || !Number.isInteger(this.max) || this.min < VNI_MIN || this.max > VNI_MAX || this.min > this.max) {
      throw new RangeError(`VNI range ${this.min}..${this.max} is not within ${VNI_MIN}..${VNI_MAX}`)
    }
    this.attempts = opts.attempts ?? 32
    if (!Number.isInteger(this.attempts) || this.attempts < 1) throw new RangeError(`VNI claim attempts ${this.attempts} is not a positive whole number`)
    this.random = opts.random ?? ((min: number, max: number) => randomInt(min, max + 1))
  }

  /** Lists the claims and watches them; this agent's own claims (a restart) are held again as they were. */
  static async start(kv: Kv, self: string, opts: VniClaimsOptions = {}): Promise<VniClaims> {
    checkNode(self)
    const c = new VniClaims(kv, self, opts)
    const { onState } = opts
    c.unwatch = await listThenWatch(kv, 'claims', { learn: (e) => c.learn(e), forget: (name) => c.forget(name), clear: () => c.claims.clear() }, {
      call: (list) => c.storeCall(list),
      listed: (e) => {
        const k = c.claims.get(e.name)
        if (k === undefined || k.value.claimer !== self) return
        const held = c.own.get(k.value.connectionId)
        if (held === undefined) c.own.set(k.value.connectionId, { vni: k.value.vni, nodes: new Map([[k.value.node, k.revision]]) })
        else if (held.vni === k.value.vni) held.nodes.set(k.value.node, k.revision)
        // A second VNI for one connection (an undo that never happened): not held, deleted by the next call.
        else c.leftovers.set(e.name, e.revision)
      },
      ...(onState === undefined ? {} : { onState }),
    })
    return c
  }

  stop(): void {
    this.unwatch?.()
    this.unwatch = undefined
  }

  /**
   * A VNI free on this node and on `peer` for `connectionId`, claimed on both; the same VNI again while
   * the connection holds one with that peer (a half that went missing is claimed again, and when that
   * VNI is no longer free there, the connection gets a new one). A connection holding a VNI with another
   * peer: FAILED_PRECONDITION (release it first). No VNI free on both: POOL_EXHAUSTED. The store away:
   * STORE_FAILURE and the connection holds nothing; a half made before the store went is deleted by the
   * next call that reaches it.
   */
  async take(connectionId: string, peer: string): Promise<number> {
    checkNode(peer)
    for (;;) {
      const running = this.taking.get(connectionId)
      if (running === undefined) break
      await running.catch(() => undefined)
    }
    const run = this.takeNow(connectionId, peer)
    this.taking.set(connectionId, run)
    try {
      return await run
    } finally {
      this.taking.delete(connectionId)
    }
  }

  /** The VNI `connectionId` holds (undefined when none). */
  held(connectionId: string): number | undefined {
    return this.own.get(connectionId)?.vni
  }

  /**
   * Drops `connectionId`'s claims (on both nodes) made by this agent. Idempotent. The store away:
   * STORE_FAILURE, the connection holds nothing, and the next call that reaches the store deletes them.
   */
  async release(connectionId: string): Promise<void> {
    await this.taking.get(connectionId)?.catch(() => undefined)
    const held = this.own.get(connectionId)
    this.own.delete(connectionId)
    if (held !== undefined) this.leaveAll(held)
    await this.flush()
  }

  /** Restart: this agent's claims for connections not in `live` are released. Returns how many claims. */
  async retain(live: ReadonlySet<string>): Promise<number> {
    let count = 0
    for (const [connectionId, held] of [...this.own]) {
      if (live.has(connectionId) || this.taking.has(connectionId)) continue
      this.own.delete(connectionId)
      this.leaveAll(held)
      count += held.nodes.size
    }
    await this.flush()
    return count
  }

  /**
   * Claims made by agents not in `nodes` (their node records expired): deleted, each only at the revision
   * known (a claim written again meanwhile stays). This agent's own are never collected here. Returns how
   * many were deleted.
   */
  async collect(nodes: ReadonlySet<string>): Promise<number> {
    await this.flush()
    let count = 0
    for (const [name, k] of [...this.claims]) {
      if (k.value.claimer === this.self || nodes.has(k.value.claimer)) continue
      try {
        if (await this.storeCall(() => this.kv.delete('claims', name, { revision: k.revision }))) count++
        this.forget(name)
      } catch (err) {
        // Written again or gone meanwhile: the watch tells what it is now.
        if (!(err instanceof KvConflict)) throw err
      }
    }
    return count
  }

  /** Whether `vni` is known taken on `node` (by any claim). */
  taken(node: string, vni: number): boolean {
    return this.claims.has(vniClaimName(node, vni))
  }

  private async takeNow(connectionId: string, peer: string): Promise<number> {
    await this.flush()
    const nodes = [...new Set([this.self, peer])]
    const held = this.own.get(connectionId)
    if (held !== undefined) {
      const other = [...held.nodes.keys()].find((n) => !nodes.includes(n))
      if (other !== undefined) {
        throw new AgentError('FAILED_PRECONDITION', `connection ${connectionId} holds VNI ${held.vni} with node ${other}, not ${peer}: release it first`)
      }
      if (await this.claimPair(connectionId, held.vni, nodes)) return held.vni
      // Its VNI went to another connection on a node where this one's claim was lost (collected): a new one.
      this.own.delete(connectionId)
      this.leaveAll(held)
      await this.flush()
    }
    const space = `${this.min}..${this.max}`
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      const vni = this.pick(nodes)
      if (vni === undefined) throw new AgentError('POOL_EXHAUSTED', `no VNI in ${space} free on nodes ${nodes.join(' and ')} for connection ${connectionId}`)
      if (await this.claimPair(connectionId, vni, nodes)) return vni
    }
    throw new AgentError('POOL_EXHAUSTED', `no VNI in ${space} claimed on nodes ${nodes.join(' and ')} for connection ${connectionId}: other agents won all ${this.attempts} attempts`)
  }

  /**
   * Claims `vni` on every node of `nodes` for `connectionId` (claims it has already are kept). True when
   * it holds them all; false when a node's claim is another's, after undoing the claims this call made;
   * the store away throws STORE_FAILURE after that undo (what cannot be undone is left to `flush`).
   */
  private async claimPair(connectionId: string, vni: number, nodes: readonly string[]): Promise<boolean> {
    const names = nodes.map((n) => vniClaimName(n, vni))
    for (const name of names) this.reserving.add(name)
    const made: Array<[string, string]> = []
    const revisions = new Map<string, string>()
    try {
      for (const node of nodes) {
        const name = vniClaimName(node, vni)
        const known = this.claims.get(name)
        if (known !== undefined && this.isMine(known, connectionId)) {
          revisions.set(node, known.revision)
          continue
        }
        const value: VniClaimValue = { vni, node, connectionId, claimer: this.self }
        try {
          const created = await this.storeCall(() => this.kv.create('claims', name, value))
          this.learn(created)
          made.push([name, created.revision])
          revisions.set(node, created.revision)
        } catch (err) {
          if (!(err instanceof KvConflict)) throw err
          // Held by someone else: learn who (the watch may lag), so the next pick skips it.
          const now = await this.kv.get('claims', name).catch(() => undefined)
          if (now !== undefined) this.learn(now)
          const k = this.claims.get(name)
          if (now !== undefined && k !== undefined && this.isMine(k, connectionId)) {
            revisions.set(node, k.revision)
            continue
          }
          await this.undo(made)
          return false
        }
      }
    } catch (err) {
      await this.undo(made)
      throw err
    } finally {
      for (const name of names) this.reserving.delete(name)
    }
    const held = this.own.get(connectionId)
    if (held === undefined) this.own.set(connectionId, { vni, nodes: revisions })
    else for (const [n, r] of revisions) held.nodes.set(n, r)
    return true
  }

  private isMine(k: Known, connectionId: string): boolean {
    return k.value.claimer === this.self && k.value.connectionId === connectionId
  }

  /** A VNI not known taken (nor being claimed here) on any of `nodes`: from a random start, upwards. */
  private pick(nodes: readonly string[]): number | undefined {
    const start = this.random(this.min, this.max)
    if (!Number.isInteger(start) || start < this.min || start > this.max) throw new RangeError(`random VNI ${start} is outside ${this.min}..${this.max}`)
    const size = this.max - this.min + 1
    for (let i = 0; i < size; i++) {
      const vni = this.min + ((start - this.min + i) % size)
      if (nodes.every((n) => !this.claims.has(vniClaimName(n, vni)) && !this.reserving.has(vniClaimName(n, vni)))) return vni
    }
    return undefined
  }

  /** Deletes the claims a failed claimPair made; what the store does not take now stays for `flush`. */
  private async undo(made: ReadonlyArray<readonly [string, string]>): Promise<void> {
    for (const [name, revision] of made) this.leftovers.set(name, revision)
    await this.flush().catch(() => undefined)
  }

  /** Marks a connection's claims for deletion (at the revisions this agent wrote); `flush` deletes them. */
  private leaveAll(held: Held): void {
    for (const [node, revision] of held.nodes) this.leftovers.set(vniClaimName(node, held.vni), revision)
  }

  /** Deletes the own claims marked to go; the store away: STORE_FAILURE, and they stay marked. */
  private async flush(): Promise<void> {
    for (const [name, revision] of [...this.leftovers]) {
      try {
        await this.storeCall(() => this.kv.delete('claims', name, { revision }))
      } catch (err) {
        // Changed or gone meanwhile: no longer this agent's to delete.
        if (!(err instanceof KvConflict)) throw err
      }
      this.leftovers.delete(name)
      if (this.claims.get(name)?.revision === revision) this.claims.delete(name)
    }
  }

  /** A store call whose unreachable store is STORE_FAILURE naming it. */
  private async storeCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call()
    } catch (err) {
      if (err instanceof KvUnavailable) throw new AgentError('STORE_FAILURE', `VNI claims: the ${this.kv.backend} store is unreachable (${err.message})`, { cause: err })
      throw err
    }
  }

  private learn(e: KvEntry): void {
    const value = decode(e.name, e.value)
    if (value === undefined) this.claims.delete(e.name)
    else this.claims.set(e.name, { value, revision: e.revision })
  }

  private forget(name: string): void {
    // Not from `leftovers`: a late delete event may be of an earlier claim of the same name; `flush`
    // finds out (a conflict) itself.
    this.claims.delete(name)
  }
}
