// Durable JSON snapshots for the agent's embedded stores (registry, connection table): write to a temp
// file, fsync, rename over the target, fsync the directory, so a crash leaves the old or the new file and
// never a torn one. Writes are coalesced: callers that arrive while a write is in flight share the next
// one, so N concurrent mutations cost at most two writes, and each caller's promise resolves only once a
// snapshot taken after its mutation is on disk. Every error names the file it is about. Also owns the
// quarantine of a damaged state file: renamed aside with a timestamp suffix, kept for a human to read.
//
// Each physical write of a store (a journal batch, a compaction, a snapshot) is published on the
// diagnostics channel `nsm:store:file-write` with its duration (agent/metrics/ observes it as
// nsm_store_operation_duration_seconds{backend="file"}); with no subscriber nothing is timed.
import { channel } from 'node:diagnostics_channel'
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { performance } from 'node:perf_hooks'
import { whenSettled } from '../settled.js'

/** One physical write of a local store: which store, what kind of write, how long, whether it failed. */
export interface FileWrite {
  /** The store: `connections` (the connection table), `registry`. */
  store: string
  /** `append` (journal lines), `compact` (snapshot + journal cleared), `snapshot` (a whole-file rewrite). */
  operation: string
  seconds: number
  ok: boolean
}

export const fileWriteChannel = channel('nsm:store:file-write')

/**
 * Runs `write`, publishing its duration on fileWriteChannel when someone listens; `operation` is read once
 * it ended (a journal knows whether it compacted only once it wrote).
 */
export function timedFileWrite(store: string, operation: string | (() => string), write: () => Promise<void>): Promise<void> {
  if (!fileWriteChannel.hasSubscribers) return write()
  const t0 = performance.now()
  return whenSettled(write, (failed) => {
    const msg: FileWrite = { store, operation: typeof operation === 'string' ? operation : operation(), seconds: (performance.now() - t0) / 1000, ok: !failed }
    fileWriteChannel.publish(msg)
  })
}

let tmpCounter = 0

/** Writes `data` to `path` atomically and durably (file mode `mode`); an error names `path`. */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  try {
    await writeAtomic(path, data, mode)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw Object.assign(new Error(`${path}: cannot write (${describeError(err)})`, { cause: err }), code === undefined ? {} : { code })
  }
}

/** An error's message with its errno code leading when the message lacks it. */
export function describeError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message
}

/**
 * Renames a damaged state file aside as `<path>.damaged-<ISO time>` (durably: the directory is synced)
 * and returns the new path. The file keeps its content, for a human to read.
 */
export async function quarantineFile(path: string): Promise<string> {
  const target = `${path}.damaged-${new Date().toISOString()}`
  await rename(path, target)
  await syncDir(dirname(path))
  return target
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}

async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
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
  await syncDir(dirname(path))
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

/**
 * What can still be read of a snapshot cut short (a `{"...": [ or { records ] }` document truncated): the
 * document up to the last record that ends before the cut, closed again. Undefined when no record is
 * whole. Records are the values two levels deep, as in both stores' snapshots.
 */
export function salvageCutJson(text: string): unknown {
  const closers: string[] = []
  let inString = false
  let escaped = false
  let best: string | undefined
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]
    if (inString) {
      if (escaped) escaped = false
      else if (ch === '\\') escaped = true
      else if (ch === '"') inString = false
      continue
    }
    if (ch === '"') inString = true
    else if (ch === '{') closers.push('}')
    else if (ch === '[') closers.push(']')
    else if (ch === '}' || ch === ']') {
      if (closers.pop() !== ch) return undefined
      if (closers.length === 2) best = text.slice(0, i + 1) + [...closers].reverse().join('')
    }
  }
  if (best === undefined) return undefined
  try {
    return JSON.parse(best) as unknown
  } catch {
    return undefined
  }
}

/** A file's text, or undefined when it does not exist; other read errors name the file. */
export async function readJsonText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`${path}: cannot read (${describeError(err)})`, { cause: err })
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
    /** What the store is called in the write's metric (fileWriteChannel). */
    private readonly store = 'registry',
  ) {
    this.writes = new CoalescedWrites(() => timedFileWrite(this.store, 'snapshot', () => writeFileAtomic(this.path, JSON.stringify(this.snapshot()))))
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
