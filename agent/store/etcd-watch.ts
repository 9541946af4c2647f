// One watch of the etcd backend of the cluster store (etcd.ts):
// watch = the client's watcher from revision + 1, over the kind's key range. We keep the revision of the
// last event delivered ourselves and, when the stream is lost, start a new watcher from it (etcd3's own
// resume point can run ahead of what was delivered). A watch the server cancels because its revision was
// compacted is answered with a fresh list (onReset) and continues from the list's revision.
import type { IWatchResponse, Watcher } from 'etcd3'
import type { EtcdKv } from './etcd.js'
import type { KvEvent, KvKind, KvWatchHandlers } from './kv.js'

/** One watch of one kind: an etcd3 watcher at a time, replaced from our last revision when lost. */
export class EtcdWatch {
  private watcher: Watcher | undefined
  /** Bumped whenever a watcher is let go: what an old one still emits is ignored. */
  private generation = 0
  private down = false
  private stopped = false
  private retry: NodeJS.Timeout | undefined
  private connecting: NodeJS.Timeout | undefined
  private backoffMs = 0
  private connectedAt: number | undefined

  constructor(
    private readonly kv: EtcdKv,
    private readonly kind: KvKind,
    /** The revision of the last change delivered (or listed). */
    private last: number,
    private readonly handlers: KvWatchHandlers,
  ) {}

  open(): void {
    if (this.stopped) return
    const generation = ++this.generation
    const current = (): boolean => generation === this.generation && !this.stopped
    const w = this.kv.watcher(this.kind, this.last + 1)
    this.watcher = w
    // A watch that etcd neither accepts nor refuses (a member that hangs) counts as lost.
    this.connecting = setTimeout(() => {
      if (current()) this.lost(`no answer within ${this.kv.timeoutMs} ms`)
    }, this.kv.timeoutMs)
    w.on('connected', () => {
      if (!current()) return
      clearTimeout(this.connecting)
      this.connectedAt = Date.now()
      if (this.down) {
        this.down = false
        this.handlers.onState?.('up')
      }
    })
    w.on('data', (res: IWatchResponse) => {
      if (current()) this.deliver(res)
    })
    w.on('disconnected', (err: Error) => {
      if (current()) this.lost(err.message)
    })
    // Also the listener that keeps an old watcher's late error from being thrown.
    w.on('error', (err: Error) => {
      if (current()) this.canceled(err)
    })
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retry)
    this.release()
  }

  private deliver(res: IWatchResponse): void {
    for (const ev of res.events) {
      const revision = Number(ev.kv.mod_revision)
      if (revision <= this.last) continue
      this.last = revision
      const entry = ev.type === 'Put' ? this.kv.entryOf(this.kind, ev.kv) : undefined
      const event: KvEvent =
        entry !== undefined
          ? { type: 'put', entry }
          : { type: 'delete', kind: this.kind, name: ev.kv.key.toString('utf8').slice(this.kv.kindRange(this.kind).start.length), revision: ev.kv.mod_revision }
      this.handlers.onEvent(event)
    }
  }

  /** Lets the current watcher go (etcd3 forgets it; its late events are ignored). */
  private release(): void {
    this.generation++
    clearTimeout(this.connecting)
    const w = this.watcher
    this.watcher = undefined
    w?.cancel().catch(() => undefined)
  }

  private lost(reason: string): void {
    this.release()
    if (!this.down) {
      this.down = true
      this.handlers.onState?.('down', `etcd watch of ${this.kind}: ${reason}`)
    }
    this.later(() => this.open())
  }

  /** etcd ended the watch: when its revision was compacted, a fresh list resets the caller. */
  private canceled(err: Error): void {
    this.release()
    const generation = this.generation
    const settle = async (): Promise<void> => {
      if (!(await this.kv.compacted(this.last + 1))) throw err
      const { entries, revision } = await this.kv.list(this.kind)
      if (this.stopped || generation !== this.generation) return
      this.last = Number(revision)
      this.handlers.onReset(entries, revision)
      this.open()
    }
    settle().catch((e: unknown) => {
      if (!this.stopped && generation === this.generation) this.lost(`canceled: ${e instanceof Error ? e.message : String(e)}`)
    })
  }

  /** Runs `fn` after a backoff: 200 ms doubling to 5 s, from 200 ms again after a connection that held. */
  private later(fn: () => void): void {
    clearTimeout(this.retry)
    // A watch etcd accepts and then cancels at once (a permanent refusal) must not spin at the shortest delay.
    if (this.connectedAt !== undefined && Date.now() - this.connectedAt > 5000) this.backoffMs = 0
    this.connectedAt = undefined
    this.backoffMs = Math.min(Math.max(200, this.backoffMs * 2), 5000)
    this.retry = setTimeout(fn, this.backoffMs)
  }
}
