// agent/connections/: the agent's connection table — the one place the pipeline writes a connection's
// current state, and what MonitorConnections, CHECK, GC, status and restart recovery read.
//
// Contract: mutations update memory, notify subscribers synchronously (in mutation order), then resolve
// once the table is durable (when a file is configured): one journal line per mutation (journal.ts).
// Connections are stored as the NSM Connection message plus the CNI attachment the connection serves,
// if any, and the pipeline's datapath record.
import { Connection, State } from '../../proto/gen/networkservice/connection.js'
import type { AttachmentInfo } from '../server/handler.js'
import { Journal } from './journal.js'

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

export class ConnectionTable {
  private readonly entries = new Map<string, ConnectionEntry>()
  private readonly listeners = new Set<ConnectionTableListener>()
  private readonly file: Journal<PersistedEntry> | undefined

  private constructor(path: string | undefined, private readonly onListenerError: (err: unknown) => void) {
    this.file = path === undefined ? undefined : new Journal<PersistedEntry>(path, () => this.toPersisted())
  }

  /** An in-memory table (unit tests, or an agent without a state dir). */
  static inMemory(onListenerError: (err: unknown) => void = () => undefined): ConnectionTable {
    return new ConnectionTable(undefined, onListenerError)
  }

  /** Opens the table persisted at `path` (created on first write), loading what a previous run left. */
  static async open(path: string, onListenerError: (err: unknown) => void = () => undefined): Promise<ConnectionTable> {
    const table = new ConnectionTable(path, onListenerError)
    const loaded = await table.file?.load()
    const stored = loaded?.snapshot as PersistedTable | undefined
    if (stored !== undefined) {
      if (stored.version !== 1 || !Array.isArray(stored.connections)) {
        throw new Error(`${path}: not a connection table (version ${String(stored.version)})`)
      }
      for (const c of stored.connections) table.load(c)
    }
    for (const op of loaded?.ops ?? []) {
      if (op.op === 'put') table.load(op.entry)
      else table.entries.delete(op.id)
    }
    // Start from a fresh snapshot and an empty journal.
    await table.file?.compact()
    return table
  }

  private load(c: PersistedEntry): void {
    const connection = Connection.fromJSON(c.connection)
    this.entries.set(connection.id, { connection, attachment: c.attachment, ...(c.datapath === undefined ? {} : { datapath: c.datapath }) })
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
    return this.list().filter(
      (e) =>
        e.attachment !== undefined &&
        e.attachment.network === network &&
        (containerId === undefined || e.attachment.containerId === containerId) &&
        (ifname === undefined || e.attachment.ifname === ifname),
    )
  }

  /** Inserts or replaces a connection (keyed by its id); emits `update`. */
  async upsert(connection: Connection, attachment?: AttachmentInfo, datapath?: unknown): Promise<ConnectionEntry> {
    if (connection.id === '') throw new Error('connection table: a connection needs an id')
    const previous = this.entries.get(connection.id)
    const keep = datapath ?? previous?.datapath
    const entry: ConnectionEntry = { connection, attachment: attachment ?? previous?.attachment, ...(keep === undefined ? {} : { datapath: keep }) }
    this.entries.set(connection.id, entry)
    this.emit({ type: 'update', entry })
    await this.file?.append({ op: 'put', id: connection.id, entry: persisted(entry) })
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
    this.entries.delete(id)
    this.emit({ type: 'delete', entry })
    await this.file?.append({ op: 'del', id })
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

function persisted(e: ConnectionEntry): PersistedEntry {
  return {
    connection: Connection.toJSON(e.connection),
    ...(e.attachment === undefined ? {} : { attachment: e.attachment }),
    ...(e.datapath === undefined ? {} : { datapath: e.datapath }),
  }
}
