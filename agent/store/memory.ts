// The in-process store: unit tests, and the reference the conformance suite (test/lib/kv-conformance.ts)
// pins the other backends to. It keeps kv.ts's contract the way etcd does, so a test written against it
// holds against the real engines:
// - one store-wide revision counter; an entry's revision is the counter at its last write;
// - ttl as a timer per entry (the "lease"): it deletes the entry, and watchers see a delete;
// - a bounded history of changes: a watch from a revision the history no longer covers (more than
//   `historyLimit` changes ago, or before `compact()`) gets `onReset` with a full list;
// - `down()`/`up()`: a test switch that makes the engine unreachable for every client: calls reject
//   with KvUnavailable, watchers report 'down', and on `up()` report 'up' and resume from the last
//   revision they delivered (or reset when that was compacted meanwhile). Expiry keeps running while
//   down, as a real engine's does.
//
// `new MemoryKv()` makes a store and its first client; `connect()` another client of the same store (as
// a second agent on the same etcd): each client has its own watches and its own `close()`. Values are kept
// as JSON text, so what a caller reads back is always a fresh copy of what was written.
//
// Watch handlers run on a microtask, never inside the call that made the change; a handler must not
// throw (a throw surfaces as an uncaught exception, as from an EventEmitter).
import { checkKvName, checkKvTtl, KV_KINDS, KvConflict, KvUnavailable } from './kv.js'
import type { Kv, KvCasOptions, KvEntry, KvEvent, KvKind, KvList, KvWatchHandlers, KvWriteOptions } from './kv.js'

export interface MemoryKvOptions {
  /** How many changes a watch can resume across (default 1000); older starts are reset. */
  readonly historyLimit?: number
}

interface Stored {
  readonly json: string
  readonly revision: number
  readonly expiry: NodeJS.Timeout | undefined
}

/** One write or delete, as the history keeps it; `json` undefined for a delete. */
interface Change {
  readonly revision: number
  readonly kind: KvKind
  readonly name: string
  readonly json: string | undefined
}

/** The shared state every client of one store sees. */
class MemoryEngine {
  revision = 0
  /** The history holds every change with a revision above this one. */
  compactedThrough = 0
  available = true
  readonly entries = new Map<KvKind, Map<string, Stored>>(KV_KINDS.map((k) => [k, new Map()]))
  readonly history: Change[] = []
  readonly watches = new Set<MemoryWatch>()

  constructor(readonly historyLimit: number) {}

  of(kind: KvKind): Map<string, Stored> {
    const m = this.entries.get(kind)
    if (m === undefined) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
    return m
  }

  /** Applies one change, records it, arms its expiry and hands it to the live watches. */
  commit(kind: KvKind, name: string, json: string | undefined, ttlMs: number | undefined): number {
    const entries = this.of(kind)
    clearTimeout(entries.get(name)?.expiry)
    const revision = ++this.revision
    if (json === undefined) {
      entries.delete(name)
    } else {
      const expiry = ttlMs === undefined ? undefined : setTimeout(() => this.expire(kind, name, revision), ttlMs)
      // An entry waiting to expire must not keep a process alive on its own.
      expiry?.unref()
      entries.set(name, { json, revision, expiry })
    }
    const change: Change = { revision, kind, name, json }
    this.history.push(change)
    while (this.history.length > this.historyLimit) {
      const dropped = this.history.shift()
      if (dropped !== undefined) this.compactedThrough = dropped.revision
    }
    for (const w of this.watches) w.change(change)
    return revision
  }

  private expire(kind: KvKind, name: string, revision: number): void {
    if (this.of(kind).get(name)?.revision === revision) this.commit(kind, name, undefined, undefined)
  }

  list(kind: KvKind): KvList {
    const entries = [...this.of(kind)].map(([name, s]) => entryOf(kind, name, s.json, s.revision))
    return { entries, revision: String(this.revision) }
  }
}

function entryOf(kind: KvKind, name: string, json: string, revision: number): KvEntry {
  return { kind, name, value: JSON.parse(json) as unknown, revision: String(revision) }
}

/** One watch: delivers changes of its kind after `last`, pausing while the engine is down. */
class MemoryWatch {
  private stopped = false
  private paused = false

  constructor(
    private readonly engine: MemoryEngine,
    private readonly kind: KvKind,
    private last: number,
    private readonly handlers: KvWatchHandlers,
  ) {}

  start(): void {
    this.engine.watches.add(this)
    if (this.engine.available) this.catchUp()
    else this.down()
  }

  stop(): void {
    this.stopped = true
    this.engine.watches.delete(this)
  }

  change(c: Change): void {
    if (this.paused || c.kind !== this.kind) return
    this.deliver(c)
  }

  down(): void {
    this.paused = true
    this.post(() => this.handlers.onState?.('down', 'memory store is down (test switch)'))
  }

  up(): void {
    this.paused = false
    this.post(() => this.handlers.onState?.('up'))
    this.catchUp()
  }

  /** Replays the history after `last`, or resets when the history no longer reaches back to it. */
  private catchUp(): void {
    if (this.last < this.engine.compactedThrough) {
      const { entries, revision } = this.engine.list(this.kind)
      this.last = this.engine.revision
      this.post(() => this.handlers.onReset(entries, revision))
      return
    }
    for (const c of this.engine.history) {
      if (c.revision > this.last && c.kind === this.kind) this.deliver(c)
    }
    // Nothing of this kind may have changed since: later changes are still newer than `last`.
    this.last = Math.max(this.last, this.engine.revision)
  }

  private deliver(c: Change): void {
    this.last = c.revision
    const event: KvEvent =
      c.json === undefined
        ? { type: 'delete', kind: c.kind, name: c.name, revision: String(c.revision) }
        : { type: 'put', entry: entryOf(c.kind, c.name, c.json, c.revision) }
    this.post(() => this.handlers.onEvent(event))
  }

  /** Runs a handler after the current call, in order, unless the watch was stopped meanwhile. */
  private post(fn: () => void): void {
    queueMicrotask(() => {
      if (!this.stopped) fn()
    })
  }
}

export class MemoryKv implements Kv {
  readonly backend = 'memory'
  private closed = false
  private readonly watches = new Set<MemoryWatch>()
  private readonly engine: MemoryEngine

  /** A new store, or with `sharedWith` another client of that one's store. */
  constructor(opts: MemoryKvOptions = {}, sharedWith?: MemoryKv) {
    const limit = opts.historyLimit ?? 1000
    if (!Number.isInteger(limit) || limit < 0) throw new TypeError(`store: historyLimit ${limit} is not a whole number`)
    this.engine = sharedWith?.engine ?? new MemoryEngine(limit)
  }

  /** Another client of the same store (another agent on the same engine). */
  connect(): MemoryKv {
    return new MemoryKv({}, this)
  }

  /** Test switch: the engine becomes unreachable for every client of this store. */
  down(): void {
    if (!this.engine.available) return
    this.engine.available = false
    for (const w of this.engine.watches) w.down()
  }

  /** Test switch: the engine is reachable again; watches resume from their revision. */
  up(): void {
    if (this.engine.available) return
    this.engine.available = true
    for (const w of this.engine.watches) w.up()
  }

  /** Forgets the history: a watch from an earlier revision than now gets onReset. */
  compact(): void {
    this.engine.history.length = 0
    this.engine.compactedThrough = this.engine.revision
  }

  async get(kind: KvKind, name: string): Promise<KvEntry | undefined> {
    this.check(kind, name)
    const s = this.engine.of(kind).get(name)
    return s === undefined ? undefined : entryOf(kind, name, s.json, s.revision)
  }

  async list(kind: KvKind): Promise<KvList> {
    this.check(kind)
    return this.engine.list(kind)
  }

  async create(kind: KvKind, name: string, value: unknown, opts: KvWriteOptions = {}): Promise<KvEntry> {
    const json = this.prepare(kind, name, value, opts)
    if (this.engine.of(kind).has(name)) throw new KvConflict(kind, name, `store ${kind}/${name}: already exists`)
    return entryOf(kind, name, json, this.engine.commit(kind, name, json, opts.ttlMs))
  }

  async put(kind: KvKind, name: string, value: unknown, opts: KvCasOptions = {}): Promise<KvEntry> {
    const json = this.prepare(kind, name, value, opts)
    if (opts.revision !== undefined) this.expect(kind, name, opts.revision)
    return entryOf(kind, name, json, this.engine.commit(kind, name, json, opts.ttlMs))
  }

  async delete(kind: KvKind, name: string, opts: { readonly revision?: string } = {}): Promise<boolean> {
    this.check(kind, name)
    if (opts.revision !== undefined) this.expect(kind, name, opts.revision)
    if (!this.engine.of(kind).has(name)) return false
    this.engine.commit(kind, name, undefined, undefined)
    return true
  }

  watch(kind: KvKind, fromRevision: string, handlers: KvWatchHandlers): () => void {
    if (!KV_KINDS.includes(kind)) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
    if (!/^\d+$/.test(fromRevision)) throw new TypeError(`store: revision ${JSON.stringify(fromRevision)} is not a memory store revision`)
    if (this.closed) throw new KvUnavailable(this.backend, 'memory store client is closed')
    const w = new MemoryWatch(this.engine, kind, Number(fromRevision), handlers)
    this.watches.add(w)
    w.start()
    return () => {
      w.stop()
      this.watches.delete(w)
    }
  }

  async health(): Promise<void> {
    this.reachable()
  }

  async close(): Promise<void> {
    this.closed = true
    for (const w of this.watches) w.stop()
    this.watches.clear()
  }

  private reachable(): void {
    if (this.closed) throw new KvUnavailable(this.backend, 'memory store client is closed')
    if (!this.engine.available) throw new KvUnavailable(this.backend, 'memory store is down (test switch)')
  }

  private check(kind: KvKind, name?: string): void {
    if (!KV_KINDS.includes(kind)) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
    if (name !== undefined) checkKvName(kind, name)
    this.reachable()
  }

  /** Validates a write and gives its value as JSON text. */
  private prepare(kind: KvKind, name: string, value: unknown, opts: KvWriteOptions): string {
    this.check(kind, name)
    checkKvTtl(opts.ttlMs)
    const json = JSON.stringify(value) as string | undefined
    if (json === undefined) throw new TypeError(`store ${kind}/${name}: the value is not JSON`)
    return json
  }

  private expect(kind: KvKind, name: string, revision: string): void {
    const s = this.engine.of(kind).get(name)
    if (s === undefined) throw new KvConflict(kind, name, `store ${kind}/${name}: gone (expected revision ${revision})`)
    if (String(s.revision) !== revision) throw new KvConflict(kind, name, `store ${kind}/${name}: revision ${s.revision}, expected ${revision}`)
  }
}
