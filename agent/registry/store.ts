// The registry's storage seam: a keyed Store<T> with an in-memory backend (unit tests) and the embedded
// file backend (one JSON snapshot per store, written atomically through atomic-file.ts). etcd and
// Kubernetes CRD backends implement the same interface later.
//
// Contract: `load` returns everything stored that can be read; `put`/`delete` resolve once durable. A
// failed `put`/`delete` leaves the store as it was (the in-memory view is rolled back), so a failed
// Register changes nothing.
//
// Damage never stops a load: a file that is empty, cut, of an unknown format or holding records that do
// not decode or that `accept` refuses (e.g. an invalid name) is renamed aside (<file>.damaged-<time>),
// reported through onDamage, and rewritten with every record that could still be read.
import { rename } from 'node:fs/promises'
import { AtomicJsonFile, quarantineFile, readJsonText, salvageCutJson } from './atomic-file.js'

/** A damaged store file found at load: which, why, and where it was moved. */
export interface StoreDamage {
  readonly file: string
  readonly reason: string
  readonly quarantined: string | undefined
}

/** Changes made by others to a shared store (agent/store/kv-store.ts), and echoes of one's own. */
export interface StoreWatch<T> {
  onPut(key: string, value: T): void
  onDelete(key: string): void
  /** The watch could not resume: everything the store holds now. */
  onReset(all: Map<string, T>): void
  onState?(state: 'down' | 'up', reason?: string): void
}

export interface Store<T> {
  /** Everything stored. `accept` judges each record (throws to refuse): a refused record is dropped. */
  load(accept?: (key: string, value: T) => void): Promise<Map<string, T>>
  put(key: string, value: T): Promise<void>
  delete(key: string): Promise<boolean>
  /** Several puts and deletes as one durable change (one file write): all of them, or none on failure. */
  apply(puts: ReadonlyArray<readonly [string, T]>, deletes: readonly string[]): Promise<void>
  /** Shared stores only: others' changes after `load`. Returns the stop function. */
  watch?(handlers: StoreWatch<T>): () => void
}

export class MemoryStore<T> implements Store<T> {
  readonly data = new Map<string, T>()
  async load(accept?: (key: string, value: T) => void): Promise<Map<string, T>> {
    for (const [k, v] of [...this.data]) {
      try {
        accept?.(k, v)
      } catch {
        this.data.delete(k)
      }
    }
    return new Map(this.data)
  }
  async put(key: string, value: T): Promise<void> {
    this.data.set(key, value)
  }
  async delete(key: string): Promise<boolean> {
    return this.data.delete(key)
  }
  async apply(puts: ReadonlyArray<readonly [string, T]>, deletes: readonly string[]): Promise<void> {
    for (const [k, v] of puts) this.data.set(k, v)
    for (const k of deletes) this.data.delete(k)
  }
}

export interface JsonCodec<T> {
  toJSON(value: T): unknown
  fromJSON(json: unknown): T
}

interface Snapshot {
  version: 1
  items: Record<string, unknown>
}

export class FileStore<T> implements Store<T> {
  private readonly data = new Map<string, T>()
  private readonly file: AtomicJsonFile<Snapshot>

  constructor(
    readonly path: string,
    private readonly codec: JsonCodec<T>,
    private readonly opts: { onDamage?: (damage: StoreDamage) => void } = {},
  ) {
    this.file = new AtomicJsonFile(path, () => ({
      version: 1,
      items: Object.fromEntries([...this.data].map(([k, v]) => [k, this.codec.toJSON(v)])),
    }))
  }

  async load(accept?: (key: string, value: T) => void): Promise<Map<string, T>> {
    this.data.clear()
    const text = await readJsonText(this.path)
    if (text === undefined) return new Map()
    const damage: string[] = []
    let stored: unknown
    try {
      stored = JSON.parse(text) as unknown
    } catch (err) {
      // A cut file still gives the records before the cut.
      stored = salvageCutJson(text)
      damage.push(text === '' ? 'empty file' : `not valid JSON (${(err as Error).message})${stored === undefined ? '' : ', the records before the damage kept'}`)
    }
    const snap = stored as Partial<Snapshot> | null | undefined
    if (snap !== undefined) {
      if (snap === null || typeof snap !== 'object' || snap.version !== 1 || typeof snap.items !== 'object' || snap.items === null) {
        damage.push(`not a registry store of a known format (version ${String((snap as { version?: unknown } | null)?.version)})`)
      } else {
        const bad: string[] = []
        for (const [k, v] of Object.entries(snap.items)) {
          try {
            const value = this.codec.fromJSON(v)
            accept?.(k, value)
            this.data.set(k, value)
          } catch (err) {
            bad.push(`${JSON.stringify(k)}: ${(err as Error).message}`)
          }
        }
        if (bad.length > 0) damage.push(`${bad.length} unreadable record(s) dropped (${bad.slice(0, 3).join('; ')})`)
      }
    }
    if (damage.length > 0) await this.replaceDamaged(damage.join('; '))
    return new Map(this.data)
  }

  async put(key: string, value: T): Promise<void> {
    await this.apply([[key, value]], [])
  }

  async delete(key: string): Promise<boolean> {
    if (!this.data.has(key)) return false
    await this.apply([], [key])
    return true
  }

  /** One snapshot write for the whole change; the in-memory view is put back when it fails. */
  async apply(puts: ReadonlyArray<readonly [string, T]>, deletes: readonly string[]): Promise<void> {
    const before = new Map<string, T | undefined>()
    const remember = (k: string): void => {
      if (!before.has(k)) before.set(k, this.data.get(k))
    }
    for (const [k, v] of puts) {
      remember(k)
      this.data.set(k, v)
    }
    for (const k of deletes) {
      remember(k)
      this.data.delete(k)
    }
    try {
      await this.file.save()
    } catch (err) {
      for (const [k, v] of before) {
        if (v === undefined) this.data.delete(k)
        else this.data.set(k, v)
      }
      throw err
    }
  }

  /** Moves the damaged file aside and writes what was read in its place (puts it back if that fails). */
  private async replaceDamaged(reason: string): Promise<void> {
    const aside = await quarantineFile(this.path)
    try {
      await this.file.save()
    } catch (err) {
      await rename(aside, this.path).catch(() => undefined)
      throw err
    }
    this.opts.onDamage?.({ file: this.path, reason, quarantined: aside })
  }
}
