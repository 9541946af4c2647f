// List-then-watch of one kind (the Kv contract, ./kv.ts): a caller's own view of the kind, fed by a list and
// then by the watch from that list's revision; a reset empties the view and learns the fresh list. Used by
// the address claims (./claims.ts) and the VNI claims (./vni-claims.ts), which share the 'claims' kind.
import type { Kv, KvEntry, KvKind, KvList } from './kv.js'

/** What a caller keeps of a kind: entries learned, names forgotten, everything cleared on a reset. */
export interface KindView {
  /** An entry listed, put, or in a reset's fresh list. */
  learn(entry: KvEntry): void
  /** An entry deleted. */
  forget(name: string): void
  /** A reset: called before the fresh list's entries are learned. */
  clear(): void
}

export interface ListThenWatchOptions {
  /** Runs the list call (to map its errors, say); default: the call itself. */
  readonly call?: (list: () => Promise<KvList>) => Promise<KvList>
  /** Each listed entry, just after `view.learn` of it and before the watch starts. */
  readonly listed?: (entry: KvEntry) => void
  /** The watch lost the store ('down') or resumed ('up'). */
  readonly onState?: (state: 'down' | 'up', reason?: string) => void
}

/** Lists `kind` into `view`, then watches it from the list's revision; resolves with the stop function. */
export async function listThenWatch(kv: Kv, kind: KvKind, view: KindView, opts: ListThenWatchOptions = {}): Promise<() => void> {
  const list = (): Promise<KvList> => kv.list(kind)
  const listed = await (opts.call === undefined ? list() : opts.call(list))
  for (const e of listed.entries) {
    view.learn(e)
    opts.listed?.(e)
  }
  const { onState } = opts
  return kv.watch(kind, listed.revision, {
    onEvent: (ev) => (ev.type === 'delete' ? view.forget(ev.name) : view.learn(ev.entry)),
    onReset: (entries) => {
      view.clear()
      for (const e of entries) view.learn(e)
    },
    ...(onState === undefined ? {} : { onState }),
  })
}
