// The registry's Store<T> (agent/registry/store.ts) over one kind of a cluster Kv (./kv.ts): what the
// registry writes goes to the shared engine, and what other agents write comes back through `watch`.
//
// Contract, beyond Store's:
// - `load` lists the kind and remembers the list's revision; `watch` starts from it, so nothing written
//   between the two is missed. An entry that does not decode (another agent's newer format, damage) is
//   skipped and reported through onDamage, never fatal.
// - Writes are last-writer-wins per entry (a registration replaces the whole record: there is nothing to
//   merge). `ttlOf` gives each written value its lifetime in the engine (an endpoint's expiration_time):
//   the engine removes it even if this agent dies.
// - `apply` is not one transaction across entries: it writes them in order and, when one fails, puts back
//   what it had already changed (best effort), then rejects. The registry changes its view only after
//   `apply` resolved, so a failed batch leaves the view as it was.
// - Failures are AgentError STORE_FAILURE (CNI 108, gRPC UNAVAILABLE) naming the backend and the entry:
//   a client sees a clear error at once, not an endless "try again". Reads are the registry's view
//   (the last watched state), so they keep working while the engine is away.
import { AgentError } from '../errors.js'
import type { JsonCodec, Store, StoreDamage, StoreWatch } from '../registry/store.js'
import { KvConflict, KvUnavailable, type Kv, type KvKind } from './kv.js'

export interface KvStoreOptions<T> {
  /** The value's lifetime in the engine from now, or undefined for none. */
  readonly ttlOf?: (value: T) => number | undefined
  readonly onDamage?: (damage: StoreDamage) => void
  /** Judges each decoded entry (throws to refuse it as damaged), for loads and watched changes alike. */
  readonly check?: (key: string, value: T) => void
}

export class KvStore<T> implements Store<T> {
  /** The engine's last known JSON of each entry (own writes and watched changes): for rollback. */
  private readonly known = new Map<string, unknown>()
  private revision: string | undefined

  constructor(
    private readonly kv: Kv,
    private readonly kind: KvKind,
    private readonly codec: JsonCodec<T>,
    private readonly opts: KvStoreOptions<T> = {},
  ) {}

  async load(accept?: (key: string, value: T) => void): Promise<Map<string, T>> {
    const listed = await this.call('list', undefined, () => this.kv.list(this.kind))
    this.revision = listed.revision
    this.known.clear()
    const out = new Map<string, T>()
    for (const e of listed.entries) {
      this.known.set(e.name, e.value)
      const value = this.decode(e.name, e.value)
      if (value === undefined) continue
      try {
        accept?.(e.name, value)
      } catch (err) {
        this.damaged(e.name, (err as Error).message)
        continue
      }
      out.set(e.name, value)
    }
    return out
  }

  async put(key: string, value: T): Promise<void> {
    await this.apply([[key, value]], [])
  }

  async delete(key: string): Promise<boolean> {
    const existed = this.known.has(key)
    await this.apply([], [key])
    return existed
  }

  async apply(puts: ReadonlyArray<readonly [string, T]>, deletes: readonly string[]): Promise<void> {
    const done: Array<{ key: string; before: unknown }> = []
    try {
      for (const [key, value] of puts) {
        const json = this.codec.toJSON(value)
        const ttl = this.opts.ttlOf?.(value)
        const before = this.known.get(key)
        await this.call('write', key, () => this.kv.put(this.kind, key, json, ttl === undefined ? {} : { ttlMs: Math.max(1000, ttl) }))
        done.push({ key, before })
        this.known.set(key, json)
      }
      for (const key of deletes) {
        const before = this.known.get(key)
        await this.call('delete', key, () => this.kv.delete(this.kind, key))
        done.push({ key, before })
        this.known.delete(key)
      }
    } catch (err) {
      for (const { key, before } of done.reverse()) {
        try {
          if (before === undefined) await this.kv.delete(this.kind, key)
          else await this.kv.put(this.kind, key, before)
          if (before === undefined) this.known.delete(key)
          else this.known.set(key, before)
        } catch {
          // The engine is away: what it holds is reconciled by the watch when it is back.
        }
      }
      throw err
    }
  }

  /** Other agents' changes (and echoes of ours) from the revision `load` listed at. */
  watch(handlers: StoreWatch<T>): () => void {
    if (this.revision === undefined) throw new Error(`store ${this.kind}: watch before load`)
    return this.kv.watch(this.kind, this.revision, {
      onEvent: (ev) => {
        if (ev.type === 'delete') {
          this.known.delete(ev.name)
          handlers.onDelete(ev.name)
          return
        }
        this.known.set(ev.entry.name, ev.entry.value)
        const value = this.decode(ev.entry.name, ev.entry.value)
        if (value !== undefined) handlers.onPut(ev.entry.name, value)
      },
      onReset: (entries) => {
        this.known.clear()
        const all = new Map<string, T>()
        for (const e of entries) {
          this.known.set(e.name, e.value)
          const value = this.decode(e.name, e.value)
          if (value !== undefined) all.set(e.name, value)
        }
        handlers.onReset(all)
      },
      onState: (state, reason) => handlers.onState?.(state, reason),
    })
  }

  private decode(key: string, json: unknown): T | undefined {
    try {
      const value = this.codec.fromJSON(json)
      this.opts.check?.(key, value)
      return value
    } catch (err) {
      this.damaged(key, `does not decode: ${(err as Error).message}`)
      return undefined
    }
  }

  private damaged(key: string, reason: string): void {
    this.opts.onDamage?.({ file: `${this.kv.backend}:${this.kind}/${key}`, reason, quarantined: undefined })
  }

  private async call<R>(what: string, key: string | undefined, fn: () => Promise<R>): Promise<R> {
    try {
      return await fn()
    } catch (err) {
      const where = `${this.kv.backend} store ${this.kind}${key === undefined ? '' : `/${key}`}`
      if (err instanceof KvUnavailable) throw new AgentError('STORE_FAILURE', `${where}: ${what} failed, the store is unreachable (${err.message})`, { cause: err })
      if (err instanceof KvConflict) throw new AgentError('STORE_FAILURE', `${where}: ${what} failed, changed concurrently (${err.message})`, { cause: err })
      throw err
    }
  }
}
