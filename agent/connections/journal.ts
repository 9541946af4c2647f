// Durable storage for the connection table: a snapshot file written atomically (connections.json) plus
// an append-only journal (connections.json.journal) of puts and deletes, each batch flushed with
// fdatasync before the callers' promises resolve.
//
// Why a journal: a durable atomic rewrite of the whole table costs a new file's fsync, a rename and a
// directory fsync (~8 ms on this machine's disk) and grows with the table; appending one line and
// fdatasync-ing an open file costs ~0.1 ms. The snapshot is rewritten (compaction) at open, every
// COMPACT_AT lines, and on flush at shutdown; the journal is truncated after each snapshot is durable.
//
// Crash safety: a line is acknowledged only after fdatasync, so a torn last line was never acknowledged
// and is dropped on load. Replaying the journal over a snapshot that already contains its effects is
// harmless (each op sets or removes one id's latest value), so a crash between "snapshot durable" and
// "journal truncated" loses nothing.
import { open, readFile, type FileHandle } from 'node:fs/promises'
import { writeFileAtomic } from '../registry/atomic-file.js'

export type JournalOp<E> = { op: 'put'; id: string; entry: E } | { op: 'del'; id: string }

const COMPACT_AT = 2000

interface Waiter {
  resolve: () => void
  reject: (err: unknown) => void
}

export class Journal<E> {
  private fh: FileHandle | undefined
  private pending: string[] = []
  private waiters: Waiter[] = []
  private writing = false
  private lines = 0
  private compactRequested = false
  readonly journalPath: string

  constructor(
    readonly path: string,
    /** The whole current state, as the snapshot file holds it. */
    private readonly snapshot: () => unknown,
  ) {
    this.journalPath = `${path}.journal`
  }

  /** The snapshot (undefined when absent) and the journal's ops in order. */
  async load(): Promise<{ snapshot: unknown; ops: Array<JournalOp<E>> }> {
    const snapshot = await readJson(this.path)
    let text = ''
    try {
      text = await readFile(this.journalPath, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    const lines = text.split('\n')
    const ops: Array<JournalOp<E>> = []
    lines.forEach((line, i) => {
      if (line === '') return
      try {
        const op = JSON.parse(line) as JournalOp<E>
        if ((op.op !== 'put' && op.op !== 'del') || typeof op.id !== 'string') throw new Error('not a journal op')
        ops.push(op)
      } catch (err) {
        // Only the last line can be torn by a crash (it was never acknowledged); anything else is damage.
        const isLast = lines.slice(i + 1).every((l) => l === '')
        if (!isLast) throw new Error(`${this.journalPath}: line ${i + 1} is not a journal entry (${(err as Error).message})`, { cause: err })
      }
    })
    return { snapshot, ops }
  }

  /** Appends one op; resolves once it is durable. */
  append(op: JournalOp<E>): Promise<void> {
    this.pending.push(`${JSON.stringify(op)}\n`)
    return this.kick()
  }

  /** Rewrites the snapshot and empties the journal; resolves once durable. */
  compact(): Promise<void> {
    this.compactRequested = true
    return this.kick()
  }

  async close(): Promise<void> {
    await this.compact()
    await this.fh?.close()
    this.fh = undefined
  }

  private kick(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject })
      // run() settles every waiter itself and never rejects.
      void this.run()
    })
  }

  private async run(): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      while (this.waiters.length > 0) {
        const batch = this.pending.splice(0)
        const waiters = this.waiters.splice(0)
        try {
          if (batch.length > 0) {
            this.fh ??= await open(this.journalPath, 'a', 0o600)
            await this.fh.write(batch.join(''))
            await this.fh.datasync()
            this.lines += batch.length
          }
          if (this.compactRequested || this.lines >= COMPACT_AT) {
            this.compactRequested = false
            await writeFileAtomic(this.path, JSON.stringify(this.snapshot()))
            this.fh ??= await open(this.journalPath, 'a', 0o600)
            await this.fh.truncate(0)
            await this.fh.datasync()
            this.lines = 0
          }
          for (const w of waiters) w.resolve()
        } catch (err) {
          for (const w of waiters) w.reject(err)
        }
      }
    } finally {
      this.writing = false
    }
  }
}

async function readJson(path: string): Promise<unknown> {
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
