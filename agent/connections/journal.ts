// Durable storage for the connection table: a snapshot file written atomically (connections.json) plus
// an append-only journal (connections.json.journal) of puts and deletes, each batch on stable storage
// before the callers' promises resolve. Owns the two files: their loading (what can still be read, what
// is damaged), their writing, and the quarantine of a damaged one. The line format is journal-lines.ts.
//
// Why a journal: a durable atomic rewrite of the whole table costs a new file's fsync, a rename and a
// directory fsync (~8 ms on this machine's disk) and grows with the table. The journal file is
// preallocated (written with zeros once, at open: a state dir without room for it stops the start), and
// lines are written in place at the current offset, so a sync never has to commit a size or
// block-allocation change: ~0.1 ms instead of ~4 ms here.
//
// The journal is opened with O_DSYNC: a write returns once its data is on stable storage, exactly what
// write + fdatasync guarantee, in one system call and one thread-pool round trip instead of two.
//
// The valid content ends at the first NUL byte. The snapshot is rewritten (compaction) at open, when
// the journal fills up, and on flush at shutdown; after each durable snapshot the used part of the
// journal is zeroed again.
//
// The journal grows with the table: after a compaction whose snapshot is more than half the journal, the
// file is extended (with zeros, as at open) to twice the snapshot. Each snapshot S then follows at least
// 2 S' journal bytes since the previous one S', and S <= S' + those bytes: a journal byte costs at most 1.5
// snapshot bytes (0.5 while the table keeps its size), however many connections the table holds.
// Compaction is amortized O(1) per write; with a fixed 8 MiB journal, 10,000 connections rewrote ~14 MB
// every ~6,000 requests, snapshot bytes per request growing with the table (issue 10). A file grown by an
// earlier run is used whole; an extension the disk has no room for is given back and the journal keeps its
// size (compacting more often; nothing fails).
//
// Crash and full-disk safety: every write is checked and completed (short writes loop; no progress or
// an error fails the batch), and a line is acknowledged only once its O_DSYNC write returned whole. A
// failed batch is zeroed again at once (and before the next write if that failed too), so its lines are
// never read back; a torn last line was never acknowledged and is dropped on load. Replaying the journal
// over a snapshot that already contains its effects is harmless (each op sets or removes one id's latest
// value); zeroing runs from the start of the file, so a crash while zeroing leaves at most a suffix.
import { constants } from 'node:fs'
import { open, readFile, unlink, type FileHandle } from 'node:fs/promises'
import { CoalescedWrites, describeError, quarantineFile, salvageCutJson, timedFileWrite, writeFileAtomic } from '../registry/atomic-file.js'
import { encodeLine, readLines, writeFully, type DamagedLine, type JournalOp } from './journal-lines.js'

export type { JournalOp } from './journal-lines.js'

/** Default journal file size, written once with zeros. */
export const JOURNAL_BYTES = 8 * 1024 * 1024
/** A grown journal's size is a multiple of this; its zeros are written at most GROW_CHUNK at a time. */
const GROW_ALIGN = 4096
const GROW_CHUNK = 1024 * 1024
/**
 * Zeros written GROW_CHUNK at a time from one buffer (only ever read): a buffer the size of the journal,
 * made for each preallocation or clearing, stayed in the agent's resident memory (8 MiB at start).
 */
const ZEROS = Buffer.alloc(GROW_CHUNK)

/** Writes zeros over [from, to) of `fh`, a chunk at a time. */
async function writeZeros(fh: FileHandle, from: number, to: number): Promise<void> {
  for (let at = from; at < to; at += GROW_CHUNK) await writeFully(fh, ZEROS.subarray(0, Math.min(GROW_CHUNK, to - at)), at)
}

/** What load found: readable state, and what could not be read (the caller decides what to report). */
export interface JournalLoad<E> {
  /** The snapshot's JSON value (what was salvaged of a cut one); undefined when absent or unreadable. */
  snapshot: unknown
  /** Why the snapshot file could not be read (it is then damaged: quarantine it). */
  snapshotDamage: string | undefined
  /** The journal's readable ops, in order. */
  ops: Array<JournalOp<E>>
  /** Journal lines that failed their check or did not parse (dropped; the others are kept). */
  damaged: DamagedLine[]
  /** The journal file's size when it is shorter than a preallocated journal (truncated, e.g. to zero). */
  truncatedTo: number | undefined
}

export class Journal<E> {
  private fh: FileHandle | undefined
  private pending: string[] = []
  // Each physical write is timed (nsm_store_operation_duration_seconds{backend="file",kind="connections"}).
  private readonly writes = new CoalescedWrites(() => timedFileWrite('connections', () => this.lastWrite, () => this.write()))
  /** What the last physical write was (its metric's operation). */
  private lastWrite: 'append' | 'compact' = 'append'
  /** End of the valid content in the journal file. */
  private offset = 0
  /** One past the last byte that may be non-zero: a failed write's bytes are zeroed up to here. */
  private dirtyEnd = 0
  private compactRequested = false
  /** The journal file's usable size: `segment`, or more once grown (see above). */
  private capacity: number
  readonly journalPath: string
  readonly segment: number

  constructor(
    readonly path: string,
    /** The whole current state, as the snapshot file holds it. */
    private readonly snapshot: () => unknown,
    opts: { segmentBytes?: number } = {},
  ) {
    this.journalPath = `${path}.journal`
    this.segment = opts.segmentBytes ?? JOURNAL_BYTES
    this.capacity = this.segment
  }

  /** Reads the snapshot and the journal; damage is reported in the result, I/O errors are thrown. */
  async load(): Promise<JournalLoad<E>> {
    let snapshot: unknown
    let snapshotDamage: string | undefined
    const text = await readOptional(this.path)
    if (text !== undefined) {
      try {
        snapshot = JSON.parse(text.toString('utf8')) as unknown
      } catch (err) {
        // A cut file still gives the records before the cut.
        snapshot = salvageCutJson(text.toString('utf8'))
        snapshotDamage = text.length === 0 ? 'empty file' : `not valid JSON (${(err as Error).message})${snapshot === undefined ? '' : ', the records before the damage kept'}`
      }
    }
    const raw = await readOptional(this.journalPath)
    const read = readLines<E>(raw ?? Buffer.alloc(0))
    this.offset = read.end
    this.dirtyEnd = read.dirtyEnd
    return {
      snapshot,
      snapshotDamage,
      ops: read.ops,
      damaged: read.damaged,
      truncatedTo: raw !== undefined && raw.length < this.segment ? raw.length : undefined,
    }
  }

  /** Renames the damaged snapshot aside (before it is rewritten); returns the new name. */
  quarantineSnapshot(): Promise<string> {
    return quarantineFile(this.path)
  }

  /**
   * Renames the damaged journal aside; the next write creates and preallocates a fresh one. Call after a
   * snapshot holding what could still be read is durable (compact), so nothing readable is lost.
   */
  async quarantineJournal(): Promise<string> {
    await this.fh?.close()
    this.fh = undefined
    this.offset = 0
    this.dirtyEnd = 0
    this.capacity = this.segment
    return quarantineFile(this.journalPath)
  }

  /** Appends one op; resolves once it is durable. */
  append(op: JournalOp<E>): Promise<void> {
    this.pending.push(encodeLine(op))
    return this.kick()
  }

  /** Rewrites the snapshot and empties the journal (creating and preallocating it); resolves once durable. */
  compact(): Promise<void> {
    this.compactRequested = true
    return this.kick()
  }

  async close(): Promise<void> {
    await this.compact()
    await this.fh?.close()
    this.fh = undefined
  }

  /** The journal file, created and preallocated (zeros) on first use; throws naming the file and size. */
  private async handle(): Promise<FileHandle> {
    if (this.fh !== undefined) return this.fh
    // Created without truncating; writes are positional and synchronous to stable storage (O_DSYNC).
    const rw = await open(this.journalPath, constants.O_RDWR | constants.O_CREAT | constants.O_DSYNC, 0o600)
    let size = 0
    try {
      size = (await rw.stat()).size
      if (size < this.segment) {
        await writeZeros(rw, size, this.segment)
        await rw.sync()
      }
    } catch (err) {
      // Give the space back: a partial preallocation only fills the disk further (and a journal this
      // open created goes, so the next start does not take it for a truncated one).
      await rw.truncate(size).catch(() => undefined)
      await rw.close().catch(() => undefined)
      if (size === 0) await unlink(this.journalPath).catch(() => undefined)
      throw fileError(`${this.journalPath}: cannot preallocate the journal (${this.segment} bytes)`, err)
    }
    this.fh = rw
    this.capacity = Math.max(this.segment, size)
    return rw
  }

  /** After a snapshot of `snapshotBytes`: extends the journal to twice that when it is smaller. */
  private async grow(fh: FileHandle, snapshotBytes: number): Promise<void> {
    const target = Math.ceil((2 * snapshotBytes) / GROW_ALIGN) * GROW_ALIGN
    if (target <= this.capacity) return
    const from = this.capacity
    try {
      await writeZeros(fh, from, target)
      this.capacity = target
    } catch {
      // No room: the journal keeps its size (compactions come more often); the space goes back.
      await fh.truncate(from).catch(() => undefined)
    }
  }

  private kick(): Promise<void> {
    return this.writes.request()
  }

  /** One physical write: the pending lines, or a compaction when asked for or when the file is full. */
  private async write(): Promise<void> {
    const batch = this.pending.splice(0)
    let data = Buffer.from(batch.join(''))
    this.lastWrite = 'append'
    if (this.compactRequested || this.offset + data.length > this.capacity) {
      // The snapshot already holds the effects of the batch: the batch needs no journal line.
      this.lastWrite = 'compact'
      this.compactRequested = false
      data = Buffer.alloc(0)
      const text = JSON.stringify(this.snapshot())
      await writeFileAtomic(this.path, text)
      const fh = await this.handle()
      await this.zero(fh, 0, Math.max(this.offset, this.dirtyEnd))
      this.offset = 0
      this.dirtyEnd = 0
      await this.grow(fh, Buffer.byteLength(text))
    }
    if (data.length === 0) return
    const fh = await this.handle()
    if (this.dirtyEnd > this.offset) await this.zero(fh, this.offset, this.dirtyEnd)
    this.dirtyEnd = Math.max(this.dirtyEnd, this.offset + data.length)
    try {
      await writeFully(fh, data, this.offset)
    } catch (err) {
      // None of the batch is acknowledged: clear whatever part of it reached the file, now if we can.
      await this.zero(fh, this.offset, this.dirtyEnd).catch(() => undefined)
      throw fileError(`${this.journalPath}: cannot write the journal`, err)
    }
    this.offset += data.length
    this.dirtyEnd = this.offset
  }

  /** Zeroes [from, to) of the journal; on success nothing stray is left past `from`. */
  private async zero(fh: FileHandle, from: number, to: number): Promise<void> {
    if (to <= from) return
    try {
      await writeZeros(fh, from, to)
    } catch (err) {
      throw fileError(`${this.journalPath}: cannot clear the journal`, err)
    }
    this.dirtyEnd = from
  }
}

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw fileError(`${path}: cannot read`, err)
  }
}

/** An Error whose message names the file and the cause, keeping the cause's errno code. */
function fileError(message: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code
  return Object.assign(new Error(`${message}: ${describeError(err)}`, { cause: err }), code === undefined ? {} : { code })
}

