// ipam/point-to-point — allocates the client's (src) and the endpoint's (dst) addresses from the chosen
// endpoint's pools (DESIGN §7, the pure allocator in ipam/p2p): the lowest free pair not in
// excluded_prefixes, never overlapping the same client's other connections (nor the endpoint's); the same
// pair again on a re-request, and on a heal to another endpoint where its pools allow.
// Needs: endpoint, clientNetns. Provides: addresses.
// Undoes: puts the allocator state back as it was before this request when a later element fails.
import { allocateP2P, emptyP2PState, P2PError, releaseP2P, type P2PRecord, type P2PRequest, type P2PState } from '../../ipam/p2p/index.js'
import { AgentError } from '../server/agent-error.js'
import { withUndo, type Element } from './chain.js'

/**
 * The allocator's state, in memory. It is persisted inside each connection's record (DatapathRecord.p2p)
 * and rebuilt from the records at start, so no separate file has to be written per request.
 * Allocation is synchronous: a pair is taken before any other request can run.
 */
export class P2PPool {
  private state: P2PState = emptyP2PState()

  static fromRecords(records: Iterable<P2PRecord>): P2PPool {
    const pool = new P2PPool()
    const connections: Record<string, P2PRecord> = {}
    for (const r of records) connections[r.connectionId] = r
    pool.state = { version: 1, connections }
    return pool
  }

  get snapshot(): P2PState {
    return this.state
  }

  restore(state: P2PState): void {
    this.state = state
  }

  allocate(req: P2PRequest): P2PRecord {
    const { state } = allocateP2P(this.state, req)
    this.state = state
    return state.connections[req.connectionId] as P2PRecord
  }

  release(connectionId: string): void {
    this.state = releaseP2P(this.state, connectionId).state
  }

  held(): P2PRecord[] {
    return Object.values(this.state.connections)
  }
}

export interface IpamOptions {
  pool: P2PPool
  /** Extra excluded prefixes of an endpoint (from its registration). */
  endpointExcluded(endpoint: string): readonly string[]
  onUndoError(err: unknown): void
}

const toCidr = (ip: string): string => `${ip}/${ip.includes(':') ? 128 : 32}`

export function pointToPointIpam(opts: IpamOptions): Element {
  return {
    name: 'ipam',
    needs: ['endpoint', 'clientNetns'],
    provides: ['addresses'],
    wrap: (next) => ({
      async request(r) {
        const { endpoint, clientNetns } = r.state
        if (endpoint === undefined || clientNetns === undefined) throw new AgentError('INTERNAL', 'ipam: no endpoint chosen')
        const before = opts.pool.snapshot
        let record: P2PRecord
        try {
          record = opts.pool.allocate({
            connectionId: r.connection.id,
            // Parties are namespaces: a composed endpoint that is also a client is one party in both roles.
            clientId: clientNetns,
            endpointId: endpoint.netns,
            pools: endpoint.pools,
            routes: endpoint.routes,
            excludedPrefixes: [...(r.connection.context?.ipContext?.excludedPrefixes ?? []), ...opts.endpointExcluded(endpoint.name)],
          })
        } catch (err) {
          if (err instanceof P2PError) {
            const code = err.code === 'POOL_EXHAUSTED' || err.code === 'NO_POOL' ? 'POOL_EXHAUSTED' : 'INVALID_ARGUMENT'
            throw new AgentError(code, err.message, { cause: err, ...(code === 'INVALID_ARGUMENT' ? { field: 'connection.context.ip_context.excluded_prefixes' } : {}) })
          }
          throw err
        }
        r.state.addresses = { src: record.pairs.map((p) => toCidr(p.src)), dst: record.pairs.map((p) => toCidr(p.dst)), record }
        return withUndo(
          () => next.request(r),
          async () => {
            // Back to the state before this request: a fresh reservation is dropped, a re-request's old pair stays.
            const prior = before.connections[r.connection.id]
            opts.pool.release(r.connection.id)
            if (prior !== undefined) opts.pool.restore({ version: 1, connections: { ...opts.pool.snapshot.connections, [prior.connectionId]: prior } })
          },
          opts.onUndoError,
        )
      },
      async close(c) {
        await next.close(c)
        opts.pool.release(c.connection.id)
      },
    }),
  }
}
