// The orphan sweep (ARCHITECTURE §10): links a mechanism tagged for a connection that is neither journaled
// nor being built are deleted — what an agent killed between building a datapath and journaling it
// leaves behind, and what would otherwise hold interface names and addresses forever. Run by restart
// reconciliation (before the records are judged) and by healing's poll, at most every `minIntervalMs`.
//
// Where it looks: the namespaces of every record (both sides), of every registered endpoint (an orphan
// veth always has an end there), and, when `scanDirs` is set, every namespace under the netns policy's
// directory patterns (/var/run/netns/*, /run/netns/*). The directory scan assumes this agent alone tags
// links with our prefix on the node (one agent per node); it is off unless asked for, because several
// agents sharing one host's /var/run/netns (tests, development) would sweep each other's connections.
//
// After a sweep the allocator's blocks (pairs the kernel showed in use: ./ipam.ts) are lifted.
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { NetnsPolicy } from '../../pkg/netns-policy.js'
import type { MechanismRegistry } from '../mechanisms/registry.js'
import type { SweptLink } from '../mechanisms/types.js'
import type { Logger } from '../server/log.js'
import type { KeyedMutex } from './handler.js'
import type { P2PPool } from './ipam.js'
import type { TableRecords } from './records.js'

export interface OrphanSweeperOptions {
  records: TableRecords
  mechanisms: MechanismRegistry
  /** Netns paths of the registered endpoints. */
  endpointNamespaces(): Iterable<string>
  /** The per-connection-id locks: an id with work queued or running is being built. */
  locks: KeyedMutex
  pool: P2PPool
  policy: NetnsPolicy
  log: Logger
  /** Also scan the policy's directories (see above). */
  scanDirs: boolean
  /** The periodic pass runs at most this often. */
  minIntervalMs: number
  now?: () => number
}

export class OrphanSweeper {
  private last = -Infinity
  private readonly now: () => number

  constructor(private readonly opts: OrphanSweeperOptions) {
    this.now = opts.now ?? Date.now
  }

  /** The periodic pass: sweeps when the last sweep is at least `minIntervalMs` ago. */
  async maybeSweep(): Promise<SweptLink[]> {
    if (this.now() - this.last < this.opts.minIntervalMs) return []
    return this.sweep()
  }

  async sweep(): Promise<SweptLink[]> {
    this.last = this.now()
    const o = this.opts
    const namespaces = new Set<string>()
    for (const rec of o.records.all()) {
      const m = o.mechanisms.get(rec.mechanism.type)
      for (const ns of m?.namespaces(rec) ?? [rec.clientNetns]) if (ns !== '') namespaces.add(ns)
    }
    for (const ns of o.endpointNamespaces()) namespaces.add(ns)
    if (o.scanDirs) for (const ns of this.dirNamespaces()) namespaces.add(ns)
    const live = (): ReadonlySet<string> => new Set([...o.records.all().map((r) => r.connectionId), ...o.locks.keys()])
    const swept: SweptLink[] = []
    for (const type of o.mechanisms.types()) {
      const m = o.mechanisms.get(type)
      if (m === undefined) continue
      try {
        swept.push(...(await m.sweep({ namespaces, live })))
      } catch (err) {
        o.log.error('orphan sweep failed', { mechanism: type, err })
      }
    }
    for (const s of swept) o.log.warn('deleted a link no connection owns (orphan)', { netns: s.netns, ifname: s.ifname, tag: s.tag })
    o.pool.unblock()
    return swept
  }

  private dirNamespaces(): string[] {
    const out: string[] = []
    for (const p of this.opts.policy.patterns) {
      if (p.kind !== 'dir') continue
      let names: string[]
      try {
        names = readdirSync(p.dir)
      } catch {
        continue
      }
      for (const n of names) out.push(join(p.dir, n))
    }
    return out
  }
}
