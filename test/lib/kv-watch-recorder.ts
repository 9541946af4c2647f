// A recorder for a store watch (agent/store/kv.ts's KvWatchHandlers): keeps every event, reset and state
// change it is given and the view a caller would build from them, and waits until something is seen.
// Used by the conformance suite (kv-conformance.ts) and the stores' own tests.
import type { KvEntry, KvEvent, KvWatchHandlers } from '../../agent/store/kv.js'

/** How long a watcher may take to see something before the test reports it as never seen. */
const SEEN_WITHIN_MS = 30_000

type Logged =
  | { readonly type: 'event'; readonly event: KvEvent }
  | { readonly type: 'reset'; readonly entries: readonly KvEntry[]; readonly revision: string }
  | { readonly type: 'state'; readonly state: 'down' | 'up'; readonly reason: string | undefined }

/** Records what a watch delivers and keeps the view a caller would build from it. */
export class WatchRecorder {
  readonly log: Logged[] = []
  /** name → entry, as list + events (+ resets) make it. */
  readonly view = new Map<string, KvEntry>()
  private readonly waiters = new Set<() => void>()
  readonly handlers: KvWatchHandlers = {
    onEvent: (event) => {
      this.log.push({ type: 'event', event })
      if (event.type === 'put') this.view.set(event.entry.name, event.entry)
      else this.view.delete(event.name)
      this.wake()
    },
    onReset: (entries, revision) => {
      this.log.push({ type: 'reset', entries, revision })
      this.view.clear()
      for (const e of entries) this.view.set(e.name, e)
      this.wake()
    },
    onState: (state, reason) => {
      this.log.push({ type: 'state', state, reason })
      this.wake()
    },
  }

  /** Starts from a list (as a caller does): the view begins with its entries. */
  seed(entries: readonly KvEntry[]): this {
    for (const e of entries) this.view.set(e.name, e)
    return this
  }

  events(names?: (name: string) => boolean): KvEvent[] {
    const out: KvEvent[] = []
    for (const l of this.log) if (l.type === 'event' && (names === undefined || names(eventName(l.event)))) out.push(l.event)
    return out
  }

  resets(): number {
    return this.log.filter((l) => l.type === 'reset').length
  }

  states(): Array<'down' | 'up'> {
    return this.log.flatMap((l) => (l.type === 'state' ? [l.state] : []))
  }

  /** Resolves once `seen()` holds; rejects with the log when it does not within SEEN_WITHIN_MS. */
  until(what: string, seen: () => boolean, withinMs = SEEN_WITHIN_MS): Promise<void> {
    if (seen()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!seen()) return
        clearTimeout(guard)
        this.waiters.delete(check)
        resolve()
      }
      const guard = setTimeout(() => {
        this.waiters.delete(check)
        reject(new Error(`watch: ${what}: not seen within ${withinMs} ms; delivered: ${JSON.stringify(this.log)}`))
      }, withinMs)
      this.waiters.add(check)
    })
  }

  private wake(): void {
    for (const w of [...this.waiters]) w()
  }
}

export function eventName(e: KvEvent): string {
  return e.type === 'put' ? e.entry.name : e.name
}
