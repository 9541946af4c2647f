// What healing watches (./heal.ts), indexed as the connection table changes, so that neither a poll nor
// a registry event walks the table (issue 10: a poll that read and stat'ed every connection five times a
// second took the event loop from the Requests, p50 +29 % at 1,000 connections).
//
// Fed by the table's events (and `set` for each entry at start); each event costs O(1): one record decoded,
// one stat of its endpoint-side namespace when it goes UP. Kept per connection: its record, its state, and
// the identity (dev:inode) of its endpoint side's namespace when it went UP. Indexed by:
//   - endpoint name: the connections to heal when that endpoint goes away;
//   - endpoint-side namespace → endpoint name → identity when UP (UP connections only): a poll stats each
//     namespace once and looks each name up once, whatever the number of connections behind them, and
//     visits connections only when their group is stale (they all need rebuilding then);
//   - client namespace (every state): checked for disappearance a bounded number at a time, round robin
//     (`nextClientNamespaces`);
//   - DOWN: the connections to retry.
// Needs: the mechanisms (which namespace of a record is the endpoint side) and a stat (pkg/netns netnsKey).
import { State } from '../../proto/gen/networkservice/connection.js'
import type { ConnectionEntry, ConnectionTableEvent } from '../connections/table.js'
import { decodeDatapathRecord } from '../mechanisms/record.js'
import type { DatapathRecord } from './types.js'

interface Watched {
  readonly rec: DatapathRecord
  readonly state: State
  /** The endpoint side's namespace (the mechanism's second one), undefined when it has none. */
  readonly endpointNetns: string | undefined
  /** That namespace's identity when the connection went UP ('' when unknown: never judged replaced). */
  readonly endpointKey: string
}

/** UP connections of one endpoint-side namespace: endpoint name → identity when UP → connection ids. */
export type EndpointSideGroup = Map<string, Map<string, Set<string>>>

export interface HealIndexDeps {
  /** The namespaces of a record's datapath, client first (the mechanism's `namespaces`). */
  namespacesOf(rec: DatapathRecord): readonly string[] | undefined
  /** dev:inode of a namespace path, undefined when it is gone. */
  netnsKey(path: string): string | undefined
}

export class HealIndex {
  private readonly byId = new Map<string, Watched>()
  private readonly byEndpoint = new Map<string, Set<string>>()
  private readonly upByEndpointNetns = new Map<string, EndpointSideGroup>()
  private readonly byClientNetns = new Map<string, Set<string>>()
  private readonly downIds = new Set<string>()
  /** Round-robin position over the client namespaces (a live Map iterator: it sees later changes). */
  private clientCursor: Iterator<string> | undefined

  constructor(private readonly deps: HealIndexDeps) {}

  get size(): number {
    return this.byId.size
  }

  /** Follows one table event. */
  apply(ev: ConnectionTableEvent): void {
    if (ev.type === 'delete') this.delete(ev.entry.connection.id)
    else this.set(ev.entry)
  }

  /** Indexes (or re-indexes) one entry; an entry without a readable datapath record is not watched. */
  set(entry: ConnectionEntry): void {
    const id = entry.connection.id
    const rec = decodeDatapathRecord(entry.datapath)
    const previous = this.byId.get(id)
    if (rec === undefined) {
      this.delete(id)
      return
    }
    const state = entry.connection.state
    const endpointNetns = this.deps.namespacesOf(rec)?.[1]
    // Remembered on every UP (a refresh or heal may have rebuilt it in a namespace now at that path).
    const endpointKey = state === State.UP ? (endpointNetns === undefined ? '' : (this.deps.netnsKey(endpointNetns) ?? '')) : (previous?.endpointKey ?? '')
    if (previous !== undefined) this.unindex(id, previous)
    const w: Watched = { rec, state, endpointNetns, endpointKey }
    this.byId.set(id, w)
    this.index(id, w)
  }

  delete(id: string): void {
    const w = this.byId.get(id)
    if (w === undefined) return
    this.unindex(id, w)
    this.byId.delete(id)
  }

  record(id: string): DatapathRecord | undefined {
    return this.byId.get(id)?.rec
  }

  state(id: string): State | undefined {
    return this.byId.get(id)?.state
  }

  /** Every connection (any state) an endpoint serves. */
  ofEndpoint(name: string): DatapathRecord[] {
    return [...(this.byEndpoint.get(name) ?? [])].flatMap((id) => this.byId.get(id)?.rec ?? [])
  }

  /** The DOWN connections. */
  down(): DatapathRecord[] {
    return [...this.downIds].flatMap((id) => this.byId.get(id)?.rec ?? [])
  }

  /** UP connections grouped by endpoint-side namespace (see EndpointSideGroup). */
  endpointSides(): IterableIterator<[string, EndpointSideGroup]> {
    return this.upByEndpointNetns.entries()
  }

  /**
   * The next `budget` client namespaces in round-robin order (each at most once per call), with the ids of
   * the connections they hold: a poll checks these, so every namespace is checked once per
   * (namespaces / budget) polls and no poll costs more than `budget` stats.
   */
  nextClientNamespaces(budget: number): Array<[string, string[]]> {
    const out: Array<[string, string[]]> = []
    const seen = new Set<string>()
    let restarted = false
    while (out.length < budget && this.byClientNetns.size > 0) {
      this.clientCursor ??= this.byClientNetns.keys()
      const next = this.clientCursor.next()
      if (next.done === true) {
        this.clientCursor = undefined
        if (restarted) break
        restarted = true
        continue
      }
      if (seen.has(next.value)) break
      seen.add(next.value)
      out.push([next.value, [...(this.byClientNetns.get(next.value) ?? [])]])
    }
    return out
  }

  private index(id: string, w: Watched): void {
    addTo(this.byEndpoint, w.rec.endpointName, id)
    // '' = a remote client (the endpoint's half of a cross-connect): its own node's agent watches it.
    if (w.rec.clientNetns !== '') addTo(this.byClientNetns, w.rec.clientNetns, id)
    if (w.state === State.DOWN) this.downIds.add(id)
    if (w.state === State.UP && w.endpointNetns !== undefined) {
      let group = this.upByEndpointNetns.get(w.endpointNetns)
      if (group === undefined) this.upByEndpointNetns.set(w.endpointNetns, (group = new Map()))
      let byKey = group.get(w.rec.endpointName)
      if (byKey === undefined) group.set(w.rec.endpointName, (byKey = new Map()))
      addTo(byKey, w.endpointKey, id)
    }
  }

  private unindex(id: string, w: Watched): void {
    removeFrom(this.byEndpoint, w.rec.endpointName, id)
    if (w.rec.clientNetns !== '') removeFrom(this.byClientNetns, w.rec.clientNetns, id)
    this.downIds.delete(id)
    if (w.state === State.UP && w.endpointNetns !== undefined) {
      const group = this.upByEndpointNetns.get(w.endpointNetns)
      const byKey = group?.get(w.rec.endpointName)
      if (group === undefined || byKey === undefined) return
      removeFrom(byKey, w.endpointKey, id)
      if (byKey.size === 0) group.delete(w.rec.endpointName)
      if (group.size === 0) this.upByEndpointNetns.delete(w.endpointNetns)
    }
  }
}

function addTo<K>(m: Map<K, Set<string>>, key: K, id: string): void {
  let s = m.get(key)
  if (s === undefined) m.set(key, (s = new Set()))
  s.add(id)
}

function removeFrom<K>(m: Map<K, Set<string>>, key: K, id: string): void {
  const s = m.get(key)
  if (s === undefined) return
  s.delete(id)
  if (s.size === 0) m.delete(key)
}
