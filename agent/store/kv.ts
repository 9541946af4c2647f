// agent/store/: the cluster-wide state every agent shares (ARCHITECTURE §12): network services, endpoints
// (with the project's extension data), endpoint address claims and node records, kept in one of three
// backends behind this one contract:
//   memory.ts      in-process (unit tests, and the reference the conformance suite pins the others to)
//   etcd.ts        a real etcd through the `etcd3` client: leases for expiry, transactions for claims,
//                  watches for changes
//   kubernetes.ts  the Kubernetes API through `@kubernetes/client-node`: the custom resources of
//                  deploy/crds, resourceVersion for optimistic concurrency, watches with bookmarks
// (The single-node file store stays in agent/registry/store.ts.)
//
// Contract every backend keeps (test/lib/kv-conformance.ts checks it against each):
// - Entries are JSON values under (kind, name). `name` is a DNS-1123-ish token the callers choose
//   (endpoint and service names, `<pool>.<address>` for claims, node names); a backend may map it to its
//   own key form but must give it back unchanged.
// - Every entry carries a `revision`: an opaque string that changes on every write of that entry
//   (etcd mod_revision, Kubernetes metadata.resourceVersion). `update` and `delete` with a revision
//   succeed only if the entry still has it (KvConflict otherwise): no lost updates.
// - `create` fails with KvConflict when the entry exists: of many concurrent creates of one (kind, name)
//   from any agent, exactly one succeeds. Address claims are built on this.
// - `ttlMs` on create/update: the entry disappears on its own about ttlMs after that write unless
//   written again, even if the writer died (etcd: a lease; Kubernetes: an expiry field any agent's
//   collector deletes). Watchers see the disappearance as a delete.
// - `list` gives every entry of a kind and the revision of the whole store at that moment; `watch` from
//   that revision gives every later change in order, exactly once. When the backend cannot resume from
//   the revision (etcd compaction, Kubernetes 410 Gone), the watcher's `onReset` gets a fresh full list
//   and events continue after it.
// - The engine unreachable: calls reject with KvUnavailable within `timeoutMs` (never hang, never retry
//   forever); watches keep trying to resume in the background and report `onState('down' | 'up')`.
// - Nothing here caches: callers keep their own view (the registry's maps), fed by list + watch.

/** The kinds of entry the agents share. */
export type KvKind = 'services' | 'endpoints' | 'claims' | 'nodes'

export const KV_KINDS: readonly KvKind[] = ['services', 'endpoints', 'claims', 'nodes']

export interface KvEntry {
  readonly kind: KvKind
  readonly name: string
  readonly value: unknown
  /** Changes on every write of this entry; compare only for equality. */
  readonly revision: string
}

export interface KvWriteOptions {
  /** The entry expires this long after the write unless written again. */
  readonly ttlMs?: number
}

export interface KvCasOptions extends KvWriteOptions {
  /** Succeed only if the entry still has this revision (KvConflict otherwise). */
  readonly revision?: string
}

export type KvEvent =
  | { readonly type: 'put'; readonly entry: KvEntry }
  | { readonly type: 'delete'; readonly kind: KvKind; readonly name: string; readonly revision: string }

export interface KvWatchHandlers {
  /** Every change after the starting revision, in order. */
  onEvent(event: KvEvent): void
  /** The watch could not resume from its revision: here is everything now; events continue after it. */
  onReset(entries: readonly KvEntry[], revision: string): void
  /** The engine was lost ('down') or the watch resumed ('up'). */
  onState?(state: 'down' | 'up', reason?: string): void
}

export interface KvList {
  readonly entries: readonly KvEntry[]
  /** The store's revision at the moment of the list: start a watch from it. */
  readonly revision: string
}

export interface Kv {
  /** A short name for logs and errors: 'memory', 'etcd', 'kubernetes'. */
  readonly backend: string
  get(kind: KvKind, name: string): Promise<KvEntry | undefined>
  list(kind: KvKind): Promise<KvList>
  /** Creates the entry; KvConflict when it exists. */
  create(kind: KvKind, name: string, value: unknown, opts?: KvWriteOptions): Promise<KvEntry>
  /** Creates or replaces; with `revision`, replaces only that revision (KvConflict otherwise, also when gone). */
  put(kind: KvKind, name: string, value: unknown, opts?: KvCasOptions): Promise<KvEntry>
  /** False when there was no such entry; with `revision`, deletes only that revision (KvConflict otherwise). */
  delete(kind: KvKind, name: string, opts?: { readonly revision?: string }): Promise<boolean>
  /** Changes of `kind` after `fromRevision` (from list()); the returned function stops the watch. */
  watch(kind: KvKind, fromRevision: string, handlers: KvWatchHandlers): () => void
  /** Throws KvUnavailable when the engine cannot be reached now. */
  health(): Promise<void>
  close(): Promise<void>
}

/** The entry changed (or appeared, or went) since the revision the caller had. */
export class KvConflict extends Error {
  override readonly name = 'KvConflict'
  constructor(
    readonly kind: KvKind,
    readonly key: string,
    message: string,
  ) {
    super(message)
  }
}

/** The engine cannot be reached (or did not answer in time). */
export class KvUnavailable extends Error {
  override readonly name = 'KvUnavailable'
  constructor(
    readonly backend: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
  }
}

/** Names the callers use: lowercase letters, digits, '-', '.', at most 253 characters. */
export function checkKvName(kind: KvKind, name: string): void {
  if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(name)) {
    throw new TypeError(`store ${kind} name ${JSON.stringify(name)}: lowercase letters, digits, '-' and '.', at most 253 characters`)
  }
}

/** A ttl is a positive, finite number of milliseconds. */
export function checkKvTtl(ttlMs: number | undefined): void {
  if (ttlMs !== undefined && !(Number.isFinite(ttlMs) && ttlMs > 0)) throw new TypeError(`store: ttlMs ${ttlMs} is not a positive number of milliseconds`)
}
