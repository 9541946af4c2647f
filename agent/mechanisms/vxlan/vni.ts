// VNIs for remote cross-connects. Both halves of a connection use one VNI, and the kernel allows one VXLAN
// device per VNI (and port) in a netns — the node netns, where every half's UDP socket stays, wherever
// its interface went — so a VNI is chosen unique per node, which also keeps it unique per pair of nodes.
//
// `VniSource` is the small contract the forwarding element takes from; `MemoryVniSource` is the one-node
// implementation: random picks (two agents choosing independently rarely meet), retried while taken.
// A store-backed implementation (claims shared by the agents) implements the same two calls.
import { randomInt } from 'node:crypto'
import { AgentError } from '../../errors.js'
import { VNI_MAX, VNI_MIN } from './params.js'

export interface VniSource {
  /** A VNI for `connectionId`; the same one again while it holds one (a refresh, a rebuild). */
  take(connectionId: string): Promise<number>
  /** Gives `vni` back (its connection closed, or its build failed). Idempotent. */
  release(vni: number): Promise<void>
}

export interface MemoryVniSourceOptions {
  /** The range to pick from (default 1..16777215). */
  min?: number
  max?: number
  /** Random picks before a scan of the whole range (default 32). */
  attempts?: number
  /** A VNI in [min, max] (default: uniform, node:crypto). */
  random?: (min: number, max: number) => number
  /** Also taken: VNIs this source does not know about (the kernel's, another allocator's). */
  inUse?: (vni: number) => boolean | Promise<boolean>
}

export class MemoryVniSource implements VniSource {
  private readonly byConnection = new Map<string, number>()
  private readonly byVni = new Map<number, string>()
  private readonly min: number
  private readonly max: number

  constructor(private readonly opts: MemoryVniSourceOptions = {}) {
    this.min = opts.min ?? VNI_MIN
    this.max = opts.max ?? VNI_MAX
    if (!Number.isInteger(this.min) || !Number.isInteger(this.max) || this.min < VNI_MIN || this.max > VNI_MAX || this.min > this.max) {
      throw new RangeError(`VNI range ${this.min}..${this.max} is not within ${VNI_MIN}..${VNI_MAX}`)
    }
  }

  async take(connectionId: string): Promise<number> {
    const held = this.byConnection.get(connectionId)
    if (held !== undefined) return held
    const random = this.opts.random ?? ((min: number, max: number) => randomInt(min, max + 1))
    const attempts = this.opts.attempts ?? 32
    for (let i = 0; i < attempts; i++) {
      const vni = await this.claim(connectionId, random(this.min, this.max))
      if (vni !== undefined) return vni
    }
    // Crowded (a small range): every free one, from a random place on.
    const size = this.max - this.min + 1
    const start = random(this.min, this.max) - this.min
    for (let i = 0; i < size; i++) {
      const vni = await this.claim(connectionId, this.min + ((start + i) % size))
      if (vni !== undefined) return vni
    }
    throw new AgentError('POOL_EXHAUSTED', `no free VNI in ${this.min}..${this.max} for connection ${connectionId}`)
  }

  async release(vni: number): Promise<void> {
    const owner = this.byVni.get(vni)
    if (owner === undefined) return
    this.byVni.delete(vni)
    this.byConnection.delete(owner)
  }

  /** The VNI `connectionId` holds, if any. */
  held(connectionId: string): number | undefined {
    return this.byConnection.get(connectionId)
  }

  /**
   * Claims `vni` for `connectionId` when free: held before `inUse` is asked, so that concurrent takes
   * never choose the same one while it answers. Resolves undefined when it is taken.
   */
  private async claim(connectionId: string, vni: number): Promise<number | undefined> {
    if (!Number.isInteger(vni) || vni < this.min || vni > this.max) throw new RangeError(`random VNI ${vni} is outside ${this.min}..${this.max}`)
    if (this.byVni.has(vni)) return undefined
    this.byVni.set(vni, connectionId)
    let busy: boolean
    try {
      busy = (await this.opts.inUse?.(vni)) === true
    } catch (err) {
      this.byVni.delete(vni)
      throw err
    }
    if (busy) {
      this.byVni.delete(vni)
      return undefined
    }
    // A concurrent take for the same connection may have won meanwhile: keep one.
    const other = this.byConnection.get(connectionId)
    if (other !== undefined) {
      this.byVni.delete(vni)
      return other
    }
    this.byConnection.set(connectionId, vni)
    return vni
  }
}
