// Node records in a shared store (ARCHITECTURE §12): each agent writes its own — name, underlay address,
// peer URL, last seen — with a lifetime, and rewrites it well before that runs out; every agent watches
// all of them. An agent that dies stops rewriting and its record expires in the engine (etcd lease,
// Kubernetes expiry annotation), which every other agent sees as a delete. A clean stop deletes it.
import type { Kv } from './kv.js'

export interface NodeRecord {
  readonly name: string
  readonly underlayAddress: string
  readonly peerUrl: string
  /** RFC 3339, when the record was last written. */
  readonly lastSeen: string
  /** RFC 3339, when its agent started (a new one is a restarted agent: peers dial it anew). */
  readonly startedAt?: string
}

export interface NodeRecordsOptions {
  /** The record's lifetime in the engine (default 30 s); it is rewritten every third of it. */
  readonly ttlMs?: number
  readonly now?: () => number
  /** A rewrite failed (the store is away) or the watch lost the engine. */
  readonly onError?: (msg: string, fields: Record<string, unknown>) => void
}

function decode(v: unknown): NodeRecord | undefined {
  if (v === null || typeof v !== 'object') return undefined
  const o = v as Record<string, unknown>
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined)
  const name = str('name')
  if (name === undefined) return undefined
  const startedAt = str('startedAt')
  return { name, underlayAddress: str('underlayAddress') ?? '', peerUrl: str('peerUrl') ?? '', lastSeen: str('lastSeen') ?? '', ...(startedAt === undefined ? {} : { startedAt }) }
}

export class NodeRecords {
  private readonly nodes = new Map<string, NodeRecord>()
  private timer: NodeJS.Timeout | undefined
  private unwatch: (() => void) | undefined
  private readonly ttlMs: number
  private readonly now: () => number

  private constructor(
    private readonly kv: Kv,
    private self: Omit<NodeRecord, 'lastSeen'>,
    private readonly opts: NodeRecordsOptions,
  ) {
    this.ttlMs = opts.ttlMs ?? 30_000
    this.now = opts.now ?? Date.now
    this.self = { startedAt: new Date(this.now()).toISOString(), ...self }
  }

  /** Writes this node's record (rejects when the store cannot take it) and starts watching all. */
  static async start(kv: Kv, self: Omit<NodeRecord, 'lastSeen'>, opts: NodeRecordsOptions = {}): Promise<NodeRecords> {
    const r = new NodeRecords(kv, self, opts)
    await r.write()
    const listed = await kv.list('nodes')
    for (const e of listed.entries) {
      const n = decode(e.value)
      if (n !== undefined) r.nodes.set(e.name, n)
    }
    r.unwatch = kv.watch('nodes', listed.revision, {
      onEvent: (ev) => {
        if (ev.type === 'delete') {
          r.nodes.delete(ev.name)
          return
        }
        const n = decode(ev.entry.value)
        if (n !== undefined) r.nodes.set(ev.entry.name, n)
      },
      onReset: (entries) => {
        r.nodes.clear()
        for (const e of entries) {
          const n = decode(e.value)
          if (n !== undefined) r.nodes.set(e.name, n)
        }
      },
      onState: (state, reason) => {
        if (state === 'down') opts.onError?.('node records: the store is unreachable', { reason })
      },
    })
    r.arm()
    return r
  }

  /** Every node with a live record, by name. */
  list(): NodeRecord[] {
    return [...this.nodes.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  /**
   * Sets this node's peer URL (known only once the peer listener is bound, after the record was first
   * written) and rewrites the record now; when that write fails, the next periodic rewrite carries it.
   */
  async setPeerUrl(peerUrl: string): Promise<void> {
    this.self = { ...this.self, peerUrl }
    await this.write()
  }

  /** Stops rewriting and watching; deletes this node's record (best effort: else it expires). */
  async stop(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.unwatch?.()
    this.unwatch = undefined
    await this.kv.delete('nodes', this.self.name).catch(() => false)
  }

  private async write(): Promise<void> {
    const record: NodeRecord = { ...this.self, lastSeen: new Date(this.now()).toISOString() }
    await this.kv.put('nodes', this.self.name, record, { ttlMs: this.ttlMs })
    this.nodes.set(this.self.name, record)
  }

  /** The next rewrite; none once stopped (unwatch cleared). */
  private arm(): void {
    if (this.unwatch === undefined) return
    this.timer = setTimeout(() => {
      this.write().then(
        () => this.arm(),
        (err: unknown) => {
          this.opts.onError?.('node record: rewrite failed, retrying', { node: this.self.name, error: (err as Error).message })
          this.arm()
        },
      )
    }, this.ttlMs / 3)
    this.timer.unref()
  }
}
