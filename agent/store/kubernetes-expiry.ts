// Expiry for the Kubernetes backend of the cluster store (kubernetes.ts), which has no leases:
// - ttlMs: the annotation `nsm-cni.io/expires-at` (RFC 3339, ms). get/list never return an entry past it;
//   a collector (one per kind, in every instance that saw such an object through a watch, list, get or its
//   own write) deletes it with a resourceVersion precondition (a concurrent refresh wins), driven by one
//   timer armed for the earliest expiry it knows: no polling. Watchers see the collection as a delete.
import { expiresAt, type KObject } from './kubernetes-objects.js'
import type { KvKind } from './kv.js'

export interface CollectorDeps {
  now(): number
  retryMs(): number
  isClosed(): boolean
  /** Deletes `name` if still at `revision`: 'done' (deleted, or gone already) or 'changed' (re-observed). */
  collect(name: string, revision: string): Promise<'done' | 'changed'>
  log(msg: string, fields: Record<string, unknown>): void
}

/**
 * Deletes the objects of one kind whose `nsm-cni.io/expires-at` has passed, for whoever wrote them (they may
 * be dead). It knows what its instance saw (watch events, lists, gets, own writes) and keeps one timer, for
 * the earliest expiry; what it saw may be stale, which the revision precondition makes harmless. The timer
 * is brought forward by an earlier expiry at once, and recomputed over everything when it fires (so a
 * forgotten or refreshed entry costs nothing until then).
 */
export class ExpiryCollector {
  /** name -> the revision it was seen at, its expiry, and when to (re)try to delete it. */
  private readonly due = new Map<string, { revision: string; expiresAt: number; at: number }>()
  private timer: NodeJS.Timeout | undefined
  private timerAt = Infinity
  private sweeping = false

  constructor(
    private readonly kind: KvKind,
    private readonly deps: CollectorDeps,
  ) {}

  observe(obj: KObject): void {
    const at = expiresAt(obj)
    if (at === undefined) return this.forget(obj.metadata.name)
    this.due.set(obj.metadata.name, { revision: obj.metadata.resourceVersion, expiresAt: at, at })
    if (at < this.timerAt) this.schedule(at)
  }

  /** Whether this instance knows `name` at `revision` to be past its expiry (gone, for the contract). */
  expired(name: string, revision: string): boolean {
    const e = this.due.get(name)
    return e !== undefined && e.revision === revision && e.expiresAt <= this.deps.now()
  }

  forget(name: string): void {
    this.due.delete(name)
  }

  close(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.timerAt = -Infinity // nothing is scheduled any more
    this.due.clear()
  }

  private schedule(at: number): void {
    if (this.deps.isClosed()) return
    clearTimeout(this.timer)
    this.timerAt = at
    // setTimeout's range ends at 2^31-1 ms; a later expiry is rescheduled when that fires.
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.timerAt = Infinity
      if (this.sweeping) return // the running sweep reschedules when it ends
      this.sweep().catch((err: unknown) => this.deps.log('expiry collector failed', { kind: this.kind, error: String(err) }))
    }, Math.min(Math.max(0, at - this.deps.now()), 0x7fffffff))
    this.timer.unref()
  }

  private async sweep(): Promise<void> {
    this.sweeping = true
    try {
      const now = this.deps.now()
      for (const [name, { at, revision }] of [...this.due]) {
        if (at > now || this.deps.isClosed()) continue
        try {
          if ((await this.deps.collect(name, revision)) === 'done' && this.due.get(name)?.revision === revision) this.due.delete(name)
        } catch (err) {
          if (this.deps.isClosed()) return
          // The store is unreachable: try again later; the expiry itself stays what the object says.
          const later = this.deps.now() + this.deps.retryMs()
          for (const entry of this.due.values()) if (entry.at <= now) entry.at = later
          this.deps.log('expiry collector: cannot delete now, retrying', { kind: this.kind, name, error: err instanceof Error ? err.message : String(err) })
          break
        }
      }
    } finally {
      this.sweeping = false
      let next = Infinity
      for (const { at } of this.due.values()) next = Math.min(next, at)
      clearTimeout(this.timer)
      this.timer = undefined
      this.timerAt = Infinity
      if (next !== Infinity) this.schedule(next)
    }
  }
}
