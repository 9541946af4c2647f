// Durable JSON snapshots for the agent's embedded stores (registry, connection table): write to a temp
// file, fsync, rename over the target, fsync the directory, so a crash leaves the old or the new file and
// never a torn one. Writes are coalesced: callers that arrive while a write is in flight share the next
// one, so N concurrent mutations cost at most two writes, and each caller's promise resolves only once a
// snapshot taken after its mutation is on disk.
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'

let tmpCounter = 0

/** Writes `data` to `path` atomically and durably (file mode `mode`). */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  tmpCounter += 1
  const tmp = `${path}.tmp-${process.pid}-${tmpCounter}`
  const fh = await open(tmp, 'w', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await unlink(tmp).catch(() => undefined)
    throw err
  }
  await fh.close()
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => undefined)
    throw err
  }
  const dir = await open(dirname(path), 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

interface Waiter {
  resolve: () => void
  reject: (err: unknown) => void
}

/**
 * Serial, coalesced writes: `request()` resolves once a run of `write` that started after the call
 * has finished (or rejects with its error). Callers arriving while a write is in flight share the next
 * one, so N concurrent requests cost at most two writes. `write` reads the state to persist when it runs.
 */
export class CoalescedWrites {
  private readonly waiters: Waiter[] = []
  private writing = false

  constructor(private readonly write: () => Promise<void>) {}

  request(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      // run() settles every waiter itself and never rejects, so nothing floats unhandled.
      void this.run()
    })
  }

  private async run(): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      while (this.waiters.length > 0) {
        const batch = this.waiters.splice(0)
        try {
          await this.write()
          for (const w of batch) w.resolve()
        } catch (err) {
          for (const w of batch) w.reject(err)
        }
      }
    } finally {
      this.writing = false
    }
  }
}

/** A JSON file's value, or undefined when the file does not exist. Throws on unparsable content. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`, { cause: err })
  }
}

export class AtomicJsonFile<T> {
  private readonly writes: CoalescedWrites

  constructor(
    readonly path: string,
    /** Produces the snapshot to write; called once per physical write, after the callers' mutations. */
    private readonly snapshot: () => T,
  ) {
    this.writes = new CoalescedWrites(() => writeFileAtomic(this.path, JSON.stringify(this.snapshot())))
  }

  /** The stored value, or undefined when the file does not exist. Throws on unparsable content. */
  read(): Promise<unknown> {
    return readJsonFile(this.path)
  }

  /** Resolves when a snapshot taken after this call is durable on disk. */
  save(): Promise<void> {
    return this.writes.request()
  }
}
