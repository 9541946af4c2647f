// The registry's storage seam: a keyed Store<T> with an in-memory backend (unit tests) and the embedded
// file backend (one JSON snapshot per store, written atomically through atomic-file.ts). etcd and
// Kubernetes CRD backends implement the same interface later.
//
// Contract: `load` returns everything stored; `put`/`delete` resolve once durable. A failed `put`/`delete`
// leaves the store as it was (the in-memory view is rolled back), so a failed Register changes nothing.
import { AtomicJsonFile } from './atomic-file.js'

export interface Store<T> {
  load(): Promise<Map<string, T>>
  put(key: string, value: T): Promise<void>
  delete(key: string): Promise<boolean>
}

export class MemoryStore<T> implements Store<T> {
  readonly data = new Map<string, T>()
  async load(): Promise<Map<string, T>> {
    return new Map(this.data)
  }
  async put(key: string, value: T): Promise<void> {
    this.data.set(key, value)
  }
  async delete(key: string): Promise<boolean> {
    return this.data.delete(key)
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
  ) {
    this.file = new AtomicJsonFile(path, () => ({
      version: 1,
      items: Object.fromEntries([...this.data].map(([k, v]) => [k, this.codec.toJSON(v)])),
    }))
  }

  async load(): Promise<Map<string, T>> {
    const stored = (await this.file.read()) as Snapshot | undefined
    this.data.clear()
    if (stored !== undefined) {
      if (stored.version !== 1 || typeof stored.items !== 'object' || stored.items === null) {
        throw new Error(`${this.path}: not a registry store (version ${String(stored.version)})`)
      }
      for (const [k, v] of Object.entries(stored.items)) this.data.set(k, this.codec.fromJSON(v))
    }
    return new Map(this.data)
  }

  async put(key: string, value: T): Promise<void> {
    const had = this.data.has(key)
    const previous = this.data.get(key)
    this.data.set(key, value)
    try {
      await this.file.save()
    } catch (err) {
      if (had) this.data.set(key, previous as T)
      else this.data.delete(key)
      throw err
    }
  }

  async delete(key: string): Promise<boolean> {
    if (!this.data.has(key)) return false
    const previous = this.data.get(key) as T
    this.data.delete(key)
    try {
      await this.file.save()
    } catch (err) {
      this.data.set(key, previous)
      throw err
    }
    return true
  }
}
