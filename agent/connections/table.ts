// agent/connections/: the agent's connection table — the one place the pipeline writes a connection's
// current state, and what MonitorConnections, CHECK, GC, status and restart recovery read.
//
// Contract: mutations update memory, notify subscribers synchronously (in mutation order), then resolve
// once the table is durable (when a file is configured): one journal line per mutation (journal.ts).
// A mutation whose write fails (a full disk) rejects with STORE_FAILURE naming the file and is undone in
// memory (subscribers see the undo as one more event), so the table never holds what is not on disk.
// Connections are stored as the NSM Connection message plus the CNI attachment the connection serves,
// if any, and the pipeline's datapath record.
//
// Cost: a mutation costs the same whatever the table holds (one journal line; the attachment index below
// updated); whole-table work is the snapshot a compaction writes (journal.ts: amortized over the journal,
// which grows with the snapshot) and `list()`.
//
// Loading keeps every record that can still be read: a damaged snapshot or journal is quarantined
// (renamed aside, journal.ts) and reported through onDamage, never a reason not to start.
import { rename } from 'node:fs/promises'
import { Connection, State } from '../../proto/gen/networkservice/connection.js'
import type { AttachmentInfo } from '../server/handler.js'
import { AgentError } from '../errors.js'
import { Journal, type JournalOp } from './journal.js'

export interface ConnectionEntry {
  readonly connection: Connection
  readonly attachment: AttachmentInfo | undefined
  /** The pipeline's record of what it built (agent/pipeline/types.ts DatapathRecord); opaque here. */
  readonly datapath?: unknown
}

export type ConnectionTableEvent =
  | { readonly type: 'update'; readonly entry: ConnectionEntry }
  | { readonly type: 'delete'; readonly entry: ConnectionEntry }

export type ConnectionTableListener = (event: ConnectionTableEvent) => void

interface PersistedEntry {
  connection: unknown
  attachment?: AttachmentInfo
  datapath?: unknown
}

interface PersistedTable {
  version: 1
  connections: PersistedEntry[]
}

/** A damaged state file found at open: which, why, and where it was moved. */
export interface TableDamage {
  readonly file: string
  readonly reason: string
  /** The damaged file's new name (undefined when nothing was renamed, e.g. a truncated journal). */
  readonly quarantined: string | undefined
}

export interface TableOptions {
  /** Told about each damaged file found at open (the agent logs it at level error). */
  onDamage?: (damage: TableDamage) => void
  /** The journal file's preallocated size (journal.ts JOURNAL_BYTES by default). */
  journalBytes?: number
}

/** A mutation not yet durable: undone in memory if its write fails. */
interface Inflight {
  readonly after: ConnectionEntry | undefined
  /** What undoing restores; handed on to the next in-flight mutation of the id when this one fails first. */
  before: ConnectionEntry | undefined
}

export class ConnectionTable {
  private readonly entries = new Map<string, ConnectionEntry>()
  /** Connection ids by CNI network, and by network + container id (byAttachment reads these, not the table). */
  private readonly byNetwork = new Map<string, Set<string>>()
  private readonly byContainer = new Map<string, Set<string>>()
  private readonly listeners = new Set<ConnectionTableListener>()
  private readonly inflight = new Map<string, Inflight[]>()
  private readonly file: Journal<PersistedEntry> | undefined

  private constructor(
    path: string | undefined,
    private readonly onListenerError: (err: unknown) => void,
    journalBytes?: number,
  ) {
    this.file = path === undefined ? undefined : new Journal<PersistedEntry>(path, () => this.toPersisted(), journalBytes === undefined ? {} : { segmentBytes: journalBytes })
  }

  /** An in-memory table (unit tests, or an agent without a state dir). */
  static inMemory(onListenerError: (err: unknown) => void = () => undefined): ConnectionTable {
    return new ConnectionTable(undefined, onListenerError)
  }

  /**
   * Opens the table persisted at `path`, loading what a previous run left: every record that can still
   * be read; damaged files are quarantined and reported. Then writes a fresh snapshot and preallocates
   * the journal: throws (naming the file) only when that cannot be done, e.g. a full disk.
   */
  static async open(path: string, onListenerError: (err: unknown) => void = () => undefined, opts: TableOptions = {}): Promise<ConnectionTable> {
    const table = new ConnectionTable(path, onListenerError, opts.journalBytes)
    const file = table.file as Journal<PersistedEntry>
    const report = opts.onDamage ?? (() => undefined)
    const loaded = await file.load()

    let snapshotDamage = loaded.snapshotDamage
    const stored = loaded.snapshot as Partial<PersistedTable> | null | undefined
    if (stored !== undefined) {
      if (stored === null || typeof stored !== 'object' || stored.version !== 1 || !Array.isArray(stored.connections)) {
        snapshotDamage ??= `not a connection table of a known format (version ${String((stored as { version?: unknown } | null)?.version)})`
      } else {
        const bad = stored.connections.flatMap((c, i) => {
          const why = table.load(c)
          return why === undefined ? [] : [`connections[${i}]: ${why}`]
        })
        if (bad.length > 0) snapshotDamage = [snapshotDamage, `${bad.length} unreadable record(s) dropped (${bad.slice(0, 3).join('; ')})`].filter(Boolean).join('; ')
      }
    }
    const journalDamage = loaded.damaged.map((d) => `line ${d.line}: ${d.reason}`)
    for (const op of loaded.ops) {
      if (op.op === 'del') {
        table.drop(op.id)
        continue
      }
      const why = table.load(op.entry, op.id)
      if (why !== undefined) journalDamage.push(`a put of ${JSON.stringify(op.id)}: ${why}`)
    }

    // The damaged snapshot goes aside before the fresh one replaces it (back again if that fails).
    const snapshotAside = snapshotDamage === undefined ? undefined : await file.quarantineSnapshot()
    try {
      await file.compact()
    } catch (err) {
      if (snapshotAside !== undefined) await restoreAside(snapshotAside, path)
      throw err
    }
    if (snapshotDamage !== undefined) report({ file: path, reason: snapshotDamage, quarantined: snapshotAside })
    if (journalDamage.length > 0) {
      // What could be read is now in the fresh snapshot: the damaged journal goes aside, a fresh one is made.
      const aside = await file.quarantineJournal()
      await file.compact()
      report({ file: file.journalPath, reason: `${journalDamage.length} damaged line(s) dropped, the others kept (${journalDamage.slice(0, 3).join('; ')})`, quarantined: aside })
    }
    if (loaded.truncatedTo !== undefined) {
      report({
        file: file.journalPath,
        reason: `truncated to ${loaded.truncatedTo} bytes (a journal is ${file.segment}): connections acknowledged since the last snapshot may be missing from the table, their links left to the kernel-side sweep`,
        quarantined: undefined,
      })
    }
    return table
  }

  /** Loads one stored record; returns why it cannot be read, or undefined. */
  private load(c: unknown, id?: string): string | undefined {
    if (c === null || typeof c !== 'object') return 'not an object'
    const p = c as PersistedEntry
    if (p.connection === null || typeof p.connection !== 'object') return 'no connection'
    let connection: Connection
    try {
      connection = Connection.fromJSON(p.connection)
    } catch (err) {
      return `not a connection (${(err as Error).message})`
    }
    if (connection.id === '') return 'a connection without an id'
    if (id !== undefined && id !== connection.id) return `keyed ${JSON.stringify(id)} but its id is ${JSON.stringify(connection.id)}`
    if (p.attachment !== undefined && (p.attachment === null || typeof p.attachment !== 'object')) return 'an attachment that is not an object'
    this.put({ connection, attachment: p.attachment, ...(p.datapath === undefined ? {} : { datapath: p.datapath }) })
    return undefined
  }

  get size(): number {
    return this.entries.size
  }

  get(id: string): ConnectionEntry | undefined {
    return this.entries.get(id)
  }

  list(): ConnectionEntry[] {
    return [...this.entries.values()]
  }

  /** Connections serving attachments of a CNI network (optionally one container / one interface). */
  byAttachment(network: string, containerId?: string, ifname?: string): ConnectionEntry[] {
    const ids = containerId === undefined ? this.byNetwork.get(network) : this.byContainer.get(containerKey(network, containerId))
    const out: ConnectionEntry[] = []
    for (const id of ids ?? []) {
      const e = this.entries.get(id)
      if (e?.attachment !== undefined && (ifname === undefined || e.attachment.ifname === ifname)) out.push(e)
    }
    return out
  }

  /** Inserts or replaces a connection (keyed by its id); emits `update`. */
  async upsert(connection: Connection, attachment?: AttachmentInfo, datapath?: unknown): Promise<ConnectionEntry> {
    if (connection.id === '') throw new Error('connection table: a connection needs an id')
    const previous = this.entries.get(connection.id)
    const keep = datapath ?? previous?.datapath
    const entry: ConnectionEntry = { connection, attachment: attachment ?? previous?.attachment, ...(keep === undefined ? {} : { datapath: keep }) }
    this.put(entry)
    this.emit({ type: 'update', entry })
    await this.commit(connection.id, previous, entry, { op: 'put', id: connection.id, entry: persisted(entry) })
    return entry
  }

  /** Changes only the state (e.g. DOWN while healing); emits `update`. Undefined when the id is unknown. */
  async setState(id: string, state: State): Promise<ConnectionEntry | undefined> {
    const previous = this.entries.get(id)
    if (previous === undefined) return undefined
    return this.upsert({ ...previous.connection, state }, previous.attachment)
  }

  /** Removes a connection; emits `delete`. Undefined (and no event) when the id is unknown. */
  async delete(id: string): Promise<ConnectionEntry | undefined> {
    const entry = this.entries.get(id)
    if (entry === undefined) return undefined
    this.drop(id)
    this.emit({ type: 'delete', entry })
    await this.commit(id, entry, undefined, { op: 'del', id })
    return entry
  }

  /** Subscribes to every later mutation; returns the unsubscribe function. */
  subscribe(listener: ConnectionTableListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Resolves once everything mutated so far is on disk, as a fresh snapshot (shutdown). */
  async flush(): Promise<void> {
    await this.file?.compact()
  }

  /** Makes one mutation durable; if that fails, undoes it in memory and throws STORE_FAILURE. */
  private async commit(id: string, before: ConnectionEntry | undefined, after: ConnectionEntry | undefined, op: JournalOp<PersistedEntry>): Promise<void> {
    if (this.file === undefined) return
    const mine: Inflight = { before, after }
    const list = this.inflight.get(id) ?? []
    list.push(mine)
    this.inflight.set(id, list)
    try {
      await this.file.append(op)
    } catch (err) {
      this.undo(id, mine)
      throw new AgentError('STORE_FAILURE', err instanceof Error ? err.message : String(err), { cause: err })
    } finally {
      const i = list.indexOf(mine)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0 && this.inflight.get(id) === list) this.inflight.delete(id)
    }
  }

  /**
   * Undoes a failed mutation. When a later mutation of the same id is still in flight, the current value
   * is that one's: it inherits what to restore (failures arrive oldest first, so a failed batch unwinds
   * to the value before its first mutation). Otherwise the value before this mutation is restored.
   */
  private undo(id: string, failed: Inflight): void {
    const list = this.inflight.get(id) ?? []
    const i = list.indexOf(failed)
    if (i < 0) return
    list.splice(i, 1)
    if (list.length === 0) this.inflight.delete(id)
    const next = list[i]
    if (next !== undefined) {
      next.before = failed.before
      return
    }
    if (failed.before === undefined) {
      this.drop(id)
      if (failed.after !== undefined) this.emit({ type: 'delete', entry: failed.after })
    } else {
      this.put(failed.before)
      this.emit({ type: 'update', entry: failed.before })
    }
  }

  /** Sets an entry and keeps the attachment index in step. */
  private put(entry: ConnectionEntry): void {
    const id = entry.connection.id
    const before = this.entries.get(id)?.attachment
    this.entries.set(id, entry)
    const after = entry.attachment
    if (before?.network === after?.network && before?.containerId === after?.containerId) return
    if (before !== undefined) this.unindex(id, before)
    // (A record from an older or damaged file may lack the fields: never found by byAttachment, as before.)
    if (after !== undefined && typeof after.network === 'string' && typeof after.containerId === 'string') {
      addId(this.byNetwork, after.network, id)
      addId(this.byContainer, containerKey(after.network, after.containerId), id)
    }
  }

  private drop(id: string): void {
    const before = this.entries.get(id)?.attachment
    this.entries.delete(id)
    if (before !== undefined) this.unindex(id, before)
  }

  private unindex(id: string, a: AttachmentInfo): void {
    removeId(this.byNetwork, a.network, id)
    removeId(this.byContainer, containerKey(a.network, a.containerId), id)
  }

  private emit(event: ConnectionTableEvent): void {
    for (const l of this.listeners) {
      try {
        l(event)
      } catch (err) {
        this.onListenerError(err)
      }
    }
  }

  private toPersisted(): PersistedTable {
    return {
      version: 1,
      connections: this.list().map(persisted),
    }
  }
}

const containerKey = (network: string, containerId: string): string => `${network}\0${containerId}`

function addId(m: Map<string, Set<string>>, key: string, id: string): void {
  let s = m.get(key)
  if (s === undefined) m.set(key, (s = new Set()))
  s.add(id)
}

function removeId(m: Map<string, Set<string>>, key: string, id: string): void {
  const s = m.get(key)
  if (s === undefined) return
  s.delete(id)
  if (s.size === 0) m.delete(key)
}

function persisted(e: ConnectionEntry): PersistedEntry {
  return {
    connection: Connection.toJSON(e.connection),
    ...(e.attachment === undefined ? {} : { attachment: e.attachment }),
    ...(e.datapath === undefined ? {} : { datapath: e.datapath }),
  }
}

async function restoreAside(aside: string, path: string): Promise<void> {
  await rename(aside, path).catch(() => undefined)
}
