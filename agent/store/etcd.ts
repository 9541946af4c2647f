// The etcd backend of the store contract (kv.ts), on the maintained `etcd3` client. Nothing of etcd3 leaves
// this file and etcd-watch.ts: its errors become KvUnavailable / KvConflict, its key-values KvEntry.
//
// - Keys `<prefix>/<kind>/<name>`, values JSON text. An entry's revision is its key's mod_revision; a
//   list's is the response header's revision (the whole store's).
// - create = one transaction `create_revision == 0 → put`; put/delete with a revision = one transaction
//   `mod_revision == revision → put/delete` (a key that is gone has mod_revision 0: a conflict too).
// - ttlMs = a lease granted for that write (whole seconds, at least 1, rounded up: etcd's granularity).
//   Once the write is in, the entry's previous lease is revoked: the key is attached to the new lease (or to
//   none) by then, so the revoke takes nothing with it and no orphan lease is left to expire. An entry
//   written without ttl keeps no expiry. Nobody keeps leases alive: a writer that dies leaves its entries
//   to expire, which is the point.
// - watch: etcd-watch.ts (EtcdWatch), over watcher() and compacted() of EtcdKv.
// - Every call is bounded by timeoutMs: a gRPC deadline and, for what happens before the call reaches
//   gRPC, a timer of ours. etcd3's default fault handling (three retries, a circuit breaker) is replaced:
//   a write retried after its first attempt may have been applied would report a false conflict, and a
//   retry after the caller was told KvUnavailable would apply it behind the caller's back. A call is tried
//   again only on another endpoint, and only when the first one could not even connect.
// - An entry whose value is not JSON (written by something else) is treated as absent.
import { readFile } from 'node:fs/promises'
import type { CallOptions } from '@grpc/grpc-js'
import { Etcd3, GRPCUnavailableError } from 'etcd3'
import type { IKeyValue, IOptions, Watcher } from 'etcd3'
import { EtcdWatch } from './etcd-watch.js'
import { checkKvName, checkKvTtl, KV_KINDS, KvConflict, KvUnavailable } from './kv.js'
import type { Kv, KvCasOptions, KvEntry, KvKind, KvList, KvWatchHandlers, KvWriteOptions } from './kv.js'

export interface EtcdKvOptions {
  /** Client URLs: http://host:port, or https://host:port with `tls`. */
  readonly endpoints: readonly string[]
  /** Key prefix of everything this store keeps (default '/nsm'). */
  readonly prefix?: string
  /** PEM files, read once at open: the CA that signed etcd's certificate, and our client certificate. */
  readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string }
  /** Bound of every call (default 3000 ms): past it the call rejects with KvUnavailable. */
  readonly timeoutMs?: number
  /** Entries per range request when listing (default 500). */
  readonly pageSize?: number
}

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>

/** The request never reached etcd: trying it on another endpoint cannot apply it twice. */
function neverSent(err: unknown): boolean {
  return err instanceof GRPCUnavailableError && /No connection established|ECONNREFUSED/.test(err.message)
}

/** An etcd3 fault-handling policy running each call once, or again on another endpoint when it never left. */
function attempts(extra: number): Policy {
  return {
    // A member of cockatiel's interface that exists only for its type checker; etcd3 never reads it.
    _altReturn: undefined as never,
    onSuccess: () => ({ dispose: () => undefined }),
    onFailure: () => ({ dispose: () => undefined }),
    async execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
      const context = { signal: signal ?? new AbortController().signal }
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn(context)
        } catch (err) {
          if (attempt >= extra || !neverSent(err)) throw err
        }
      }
    },
  }
}

type Backoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>
const RECONNECT: Backoff = { duration: 200, next: () => RECONNECT }

/** The first key after every key that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] !== 0xff) {
      end[i] = (end[i] ?? 0) + 1
      return end.subarray(0, i + 1)
    }
  }
  return Buffer.from([0])
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

export class EtcdKv implements Kv {
  readonly backend = 'etcd'
  private closed = false
  private readonly watches = new Set<EtcdWatch>()

  private constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    readonly timeoutMs: number,
    private readonly pageSize: number,
    private readonly where: string,
  ) {}

  /** A client of the etcd at `endpoints`; connects on first use (open does not need etcd up). */
  static async open(opts: EtcdKvOptions): Promise<EtcdKv> {
    const endpoints = [...opts.endpoints]
    if (endpoints.length === 0) throw new TypeError('etcd: no endpoints')
    for (const e of endpoints) {
      if (!/^(https?:\/\/)?[^/\s]+:\d+\/?$/.test(e)) throw new TypeError(`etcd: endpoint ${JSON.stringify(e)} is not [http(s)://]host:port`)
      if (opts.tls !== undefined && e.startsWith('http://')) throw new TypeError(`etcd: endpoint ${e} is http:// but TLS files were given`)
    }
    const prefix = opts.prefix ?? '/nsm'
    if (!/^\/[\x21-\x7e]*$/.test(prefix) || prefix.endsWith('/')) throw new TypeError(`etcd: prefix ${JSON.stringify(prefix)} must start with '/' and not end with one`)
    const timeoutMs = opts.timeoutMs ?? 3000
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new TypeError(`etcd: timeoutMs ${timeoutMs} is not a positive number`)
    const pageSize = opts.pageSize ?? 500
    if (!(Number.isInteger(pageSize) && pageSize > 0)) throw new TypeError(`etcd: pageSize ${pageSize} is not a positive whole number`)
    const tls = opts.tls
    if (tls !== undefined && (tls.cert === undefined) !== (tls.key === undefined)) throw new TypeError('etcd: a client certificate needs its key, and a key its certificate')
    let credentials: IOptions['credentials']
    if (tls !== undefined) {
      const [rootCertificate, certChain, privateKey] = await Promise.all([readFile(tls.ca), tls.cert === undefined ? undefined : readFile(tls.cert), tls.key === undefined ? undefined : readFile(tls.key)])
      credentials = { rootCertificate, ...(certChain && privateKey ? { certChain, privateKey } : {}) }
    }
    const client = new Etcd3({
      hosts: endpoints,
      ...(credentials ? { credentials } : {}),
      grpcOptions: {
        // Our own connections: another gRPC client in the process must not share (or slow) their backoff.
        'grpc.use_local_subchannel_pool': 1,
        // etcd coming back is noticed within a second, not after gRPC's default backoff of up to 2 minutes.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        // A watch stream to an etcd that stopped answering (not closed: hung, or the network gone) is
        // found dead by pings; etcd refuses pings more often than every 5 s.
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': timeoutMs,
      },
      faultHandling: {
        host: () => attempts(0),
        global: attempts(endpoints.length - 1),
        // Our watches replace a lost etcd3 watcher themselves (EtcdWatch): etcd3's own reconnect timer,
        // exponential up to 30 s by default, would only keep a closed client's process alive.
        watchBackoff: RECONNECT,
      },
    })
    return new EtcdKv(client, prefix, timeoutMs, pageSize, endpoints.join(','))
  }

  key(kind: KvKind, name: string): Buffer {
    return Buffer.from(`${this.prefix}/${kind}/${name}`)
  }

  kindRange(kind: KvKind): { start: Buffer; end: Buffer } {
    const start = Buffer.from(`${this.prefix}/${kind}/`)
    return { start, end: prefixEnd(start) }
  }

  /** The entry a key-value holds, or undefined when its value is not JSON (treated as absent). */
  entryOf(kind: KvKind, kv: IKeyValue): KvEntry | undefined {
    const name = kv.key.toString('utf8').slice(this.kindRange(kind).start.length)
    try {
      return { kind, name, value: JSON.parse(kv.value.toString('utf8')) as unknown, revision: kv.mod_revision }
    } catch {
      return undefined
    }
  }

  async get(kind: KvKind, name: string): Promise<KvEntry | undefined> {
    check(kind, name)
    const res = await this.call(`get ${kind}/${name}`, (o) => this.client.kv.range({ key: this.key(kind, name) }, o))
    const kv = res.kvs[0]
    return kv === undefined ? undefined : this.entryOf(kind, kv)
  }

  async list(kind: KvKind): Promise<KvList> {
    check(kind)
    const { start, end } = this.kindRange(kind)
    return this.call(`list ${kind}`, async (o) => {
      // Pages of one snapshot (the first page's revision); a compaction in between starts the list over.
      for (let attempt = 1; ; attempt++) {
        const entries: KvEntry[] = []
        let revision: string | undefined
        let from = start
        try {
          for (;;) {
            const res = await this.client.kv.range({ key: from, range_end: end, limit: this.pageSize, ...(revision === undefined ? {} : { revision }) }, o)
            revision ??= res.header.revision
            for (const kv of res.kvs) {
              const e = this.entryOf(kind, kv)
              if (e !== undefined) entries.push(e)
            }
            const last = res.kvs.at(-1)
            if (!res.more || last === undefined) return { entries, revision }
            from = Buffer.concat([last.key, Buffer.from([0])])
          }
        } catch (err) {
          if (attempt >= 3 || !/compacted/.test(message(err))) throw err
        }
      }
    })
  }

  async create(kind: KvKind, name: string, value: unknown, opts: KvWriteOptions = {}): Promise<KvEntry> {
    const json = encode(kind, name, value, opts)
    const key = this.key(kind, name)
    return this.call(`create ${kind}/${name}`, async (o) => {
      const lease = await this.grant(opts.ttlMs, o)
      const res = await this.client.kv.txn(
        { compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }], success: [{ request_put: { key, value: json, lease } }] },
        o,
      )
      if (!res.succeeded) {
        await this.revoke(lease, o)
        throw new KvConflict(kind, name, `store ${kind}/${name}: already exists`)
      }
      return { kind, name, value: JSON.parse(json.toString('utf8')) as unknown, revision: res.header.revision }
    })
  }

  async put(kind: KvKind, name: string, value: unknown, opts: KvCasOptions = {}): Promise<KvEntry> {
    const json = encode(kind, name, value, opts)
    const key = this.key(kind, name)
    const { revision } = opts
    if (revision !== undefined && !/^[1-9]\d*$/.test(revision)) throw new KvConflict(kind, name, `store ${kind}/${name}: ${JSON.stringify(revision)} is no etcd revision`)
    return this.call(`put ${kind}/${name}`, async (o) => {
      const lease = await this.grant(opts.ttlMs, o)
      const res = await this.client.kv.txn(
        {
          compare: revision === undefined ? [] : [{ key, target: 'Mod', result: 'Equal', mod_revision: revision }],
          success: [{ request_put: { key, value: json, lease, prev_kv: true } }],
        },
        o,
      )
      if (!res.succeeded) {
        await this.revoke(lease, o)
        throw new KvConflict(kind, name, `store ${kind}/${name}: not at revision ${revision} (changed or gone)`)
      }
      const previous = res.responses[0]?.response_put?.prev_kv?.lease
      if (previous !== undefined && previous !== lease) await this.revoke(previous, o)
      return { kind, name, value: JSON.parse(json.toString('utf8')) as unknown, revision: res.header.revision }
    })
  }

  async delete(kind: KvKind, name: string, opts: { readonly revision?: string } = {}): Promise<boolean> {
    check(kind, name)
    const key = this.key(kind, name)
    const { revision } = opts
    if (revision !== undefined && !/^[1-9]\d*$/.test(revision)) throw new KvConflict(kind, name, `store ${kind}/${name}: ${JSON.stringify(revision)} is no etcd revision`)
    return this.call(`delete ${kind}/${name}`, async (o) => {
      const res = await this.client.kv.txn(
        {
          compare: revision === undefined ? [] : [{ key, target: 'Mod', result: 'Equal', mod_revision: revision }],
          success: [{ request_delete_range: { key, prev_kv: true } }],
        },
        o,
      )
      if (!res.succeeded) throw new KvConflict(kind, name, `store ${kind}/${name}: not at revision ${revision} (changed or gone)`)
      const deleted = res.responses[0]?.response_delete_range
      const previous = deleted?.prev_kvs[0]?.lease
      if (previous !== undefined) await this.revoke(previous, o)
      return deleted !== undefined && deleted.deleted !== '0'
    })
  }

  watch(kind: KvKind, fromRevision: string, handlers: KvWatchHandlers): () => void {
    check(kind)
    if (!/^\d+$/.test(fromRevision)) throw new TypeError(`store: ${JSON.stringify(fromRevision)} is no etcd revision`)
    if (this.closed) throw new KvUnavailable(this.backend, 'etcd client is closed')
    const w = new EtcdWatch(this, kind, Number(fromRevision), handlers)
    this.watches.add(w)
    w.open()
    return () => {
      w.stop()
      this.watches.delete(w)
    }
  }

  async health(): Promise<void> {
    // A linearizable read: answered only by a member that has a leader.
    await this.call('health', (o) => this.client.kv.range({ key: Buffer.from(`${this.prefix}/`), count_only: true }, o))
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const w of this.watches) w.stop()
    this.watches.clear()
    this.client.close()
  }

  /** A watcher of etcd3 over the kind's keys from `revision` (for EtcdWatch). */
  watcher(kind: KvKind, revision: number): Watcher {
    const { start, end } = this.kindRange(kind)
    return this.client.watch().inRange({ start, end }).startRevision(String(revision)).watcher()
  }

  /** Whether a watch from `revision` is refused because etcd compacted it (for EtcdWatch). */
  async compacted(revision: number): Promise<boolean> {
    try {
      await this.call('compaction check', (o) => this.client.kv.range({ key: Buffer.from(`${this.prefix}/`), count_only: true, revision }, o))
      return false
    } catch (err) {
      const text = `${message(err)} ${err instanceof Error ? message(err.cause) : ''}`
      if (/compacted/.test(text)) return true
      if (/future revision/.test(text)) return false
      throw err
    }
  }

  /** A lease of `ttlMs` rounded up to whole seconds, or '0' (no lease) without ttl. */
  private async grant(ttlMs: number | undefined, o: CallOptions): Promise<string> {
    if (ttlMs === undefined) return '0'
    const res = await this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)), ID: 0 }, o)
    return res.ID
  }

  /** Revokes a lease no key needs any more; a failure only leaves it to expire on its own. */
  private async revoke(lease: string, o: CallOptions): Promise<void> {
    if (lease === '0') return
    await this.client.leaseClient.leaseRevoke({ ID: lease }, o).catch(() => undefined)
  }

  /** Runs one store call within timeoutMs; every failure of etcd or the way to it is KvUnavailable. */
  private async call<T>(what: string, fn: (o: CallOptions) => Promise<T>): Promise<T> {
    if (this.closed) throw new KvUnavailable(this.backend, `etcd ${what}: the client is closed`)
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KvUnavailable(this.backend, `etcd ${what} at ${this.where}: no answer within ${this.timeoutMs} ms`)), this.timeoutMs)
    })
    try {
      return await Promise.race([fn({ deadline: Date.now() + this.timeoutMs }), late])
    } catch (err) {
      if (err instanceof KvConflict || err instanceof KvUnavailable) throw err
      throw new KvUnavailable(this.backend, `etcd ${what} at ${this.where}: ${message(err)}`, { cause: err })
    } finally {
      clearTimeout(timer)
    }
  }
}

function check(kind: KvKind, name?: string): void {
  if (!KV_KINDS.includes(kind)) throw new TypeError(`store: unknown kind ${JSON.stringify(kind)}`)
  if (name !== undefined) checkKvName(kind, name)
}

function encode(kind: KvKind, name: string, value: unknown, opts: KvWriteOptions): Buffer {
  check(kind, name)
  checkKvTtl(opts.ttlMs)
  const json = JSON.stringify(value) as string | undefined
  if (json === undefined) throw new TypeError(`store ${kind}/${name}: the value is not JSON`)
  return Buffer.from(json, 'utf8')
}
