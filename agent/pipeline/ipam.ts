// ipam/point-to-point — allocates the client's (src) and the endpoint's (dst) addresses from the chosen
// endpoint's pools (ARCHITECTURE §7, the pure allocator in ipam/p2p): the lowest free pair not in
// excluded_prefixes, never overlapping the same client's other connections (nor the endpoint's); the same
// pair again on a re-request, and on a heal to another endpoint where its pools allow. The routes of both
// sides are computed here, once, with the addresses (./ip-context.ts: the allocator's routes, plus the
// composition routes when the client is itself an endpoint): `addresses` is the whole IP context the
// mechanism installs.
// A pair the kernel shows in use (the mechanism reports ADDRESS_UNAVAILABLE: an address or route of it is
// already in one of the namespaces, e.g. held by a leftover datapath nobody journaled) is blocked for both
// parties until the next orphan sweep (heal.ts) and the next free pair is tried, a few times: a failure
// never hands out the same pair again.
// Addresses the forward element already has (a remote agent's or an NSM endpoint's answer) are used as given.
// Needs: endpoint, clientNetns. Provides: addresses.
// Undoes: puts the allocator state back as it was before this request when a later element fails.
import { P2PError, PointToPointPool, type P2PPair, type P2PRecord, type P2PState } from '../../ipam/p2p/index.js'
import { AgentError } from '../errors.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { withUndo, type Element, type Handler, type PipelineRequest } from './chain.js'
import { ipContextOf } from './ip-context.js'

/**
 * The allocator's state lives in memory (ipam/p2p PointToPointPool) and is persisted inside each
 * connection's record (DatapathRecord.p2p); at start it is rebuilt from the records, so no separate file
 * is written per request. Allocation is synchronous: a pair is taken before any other request runs.
 */
export class P2PPool extends PointToPointPool {
  static fromRecords(records: Iterable<P2PRecord>): P2PPool {
    const connections: P2PState['connections'] = {}
    for (const r of records) connections[r.connectionId] = r
    return new P2PPool({ version: 1, connections })
  }

  allRecords(): P2PRecord[] {
    return Object.values(this.snapshot().connections)
  }
}

/** Cluster-wide address claims (agent/store/claims.ts) when the agent runs on a shared store. */
export interface IpamClaims {
  heldElsewhere(pools: readonly string[]): Record<4 | 6, bigint[]>
  /** Rejects with an error named ClaimConflict (its `addresses` taken) when another holds one. */
  claim(connectionId: string, pairs: readonly P2PPair[]): Promise<void>
  release(connectionId: string, pairs: readonly P2PPair[]): Promise<void>
}

export interface IpamOptions {
  pool: P2PPool
  claims?: IpamClaims
  /** Extra excluded prefixes of an endpoint (from its registration). */
  endpointExcluded(endpoint: string): readonly string[]
  /**
   * For a client netns that is itself an endpoint's netns (composition): that endpoint's pools. A remote
   * client (netns '', the endpoint's half of a cross-connect) sends them as its request's dst_routes.
   */
  composedPools(clientNetns: string, connection: Connection): readonly string[]
  onUndoError(err: unknown): void
  /** A pair the kernel showed in use was blocked (logged by the caller). */
  onAddressInUse?(connectionId: string, addresses: readonly string[]): void
}

/** Pairs tried per request when the kernel shows the previous one in use. */
const ADDRESS_ATTEMPTS = 4
/** Pairs tried per request when another agent's claim won the race for the previous one. */
const CLAIM_ATTEMPTS = 64

export function pointToPointIpam(opts: IpamOptions): Element {
  return {
    name: 'ipam',
    needs: ['endpoint', 'clientNetns'],
    provides: ['addresses'],
    wrap: (next) => ({
      async request(r) {
        // Addresses from elsewhere (the forward element: the remote agent's or an NSM endpoint's answer):
        // nothing to allocate here; a pair this connection held from a local endpoint is released once the
        // new datapath stands.
        const given = r.state.addresses
        if (given !== undefined) {
          const connection = await next.request(r)
          const released = opts.pool.release(r.connection.id)
          if (released !== undefined && released.pairs.length > 0) await opts.claims?.release(r.connection.id, released.pairs).catch(opts.onUndoError)
          return connection
        }
        const { endpoint, clientNetns } = r.state
        // Blocked for both parties until the next orphan sweep; then the next free pair is tried.
        const block = (addrs: readonly string[]): void => {
          if (endpoint !== undefined) opts.pool.block(endpoint.netns, addrs)
          if (clientNetns !== undefined) opts.pool.block(clientNetns, addrs)
        }
        for (let attempt = 1, lost = 0; ; ) {
          try {
            return await allocateAndContinue(opts, next, r)
          } catch (err) {
            if (isClaimConflict(err) && ++lost < CLAIM_ATTEMPTS) {
              block(err.addresses)
              continue
            }
            const taken = AgentError.is(err, 'ADDRESS_UNAVAILABLE') ? r.state.addresses : undefined
            if (taken === undefined || ++attempt > ADDRESS_ATTEMPTS) throw isClaimConflict(err) ? new AgentError('POOL_EXHAUSTED', `${err.message} (and ${CLAIM_ATTEMPTS} other pairs were taken by other agents first)`, { cause: err }) : err
            const addrs = [...taken.src, ...taken.dst]
            block(addrs)
            opts.onAddressInUse?.(r.connection.id, addrs)
          }
        }
      },
      async close(c) {
        await next.close(c)
        const released = opts.pool.release(c.connection.id)
        if (released !== undefined) await opts.claims?.release(c.connection.id, released.pairs).catch(opts.onUndoError)
      },
    }),
  }
}

/** One allocation and the rest of the chain over it; the allocation is undone when the rest fails. */
async function allocateAndContinue(opts: IpamOptions, next: Handler, r: PipelineRequest): Promise<Connection> {
  const { endpoint, clientNetns } = r.state
  if (endpoint === undefined || clientNetns === undefined) throw new AgentError('INTERNAL', 'ipam: no endpoint chosen')
  let result: ReturnType<P2PPool['allocate']>
  const before = opts.pool.get(r.connection.id)
  try {
    result = opts.pool.allocate({
      ...(opts.claims === undefined ? {} : { heldElsewhere: opts.claims.heldElsewhere(endpoint.pools) }),
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
  try {
    r.state.addresses = { ...ipContextOf(result, opts.composedPools(clientNetns, r.connection)), record: result.record }
    // On a shared store the pair is claimed cluster-wide before anything is built with it.
    await opts.claims?.claim(r.connection.id, result.record.pairs)
  } catch (err) {
    result.undo()
    throw err
  }
  // Claims of pairs this request took and the state before it did not hold: dropped on undo; the pairs
  // the connection held before and no longer does: dropped after success.
  const added = result.record.pairs.filter((p) => !(before?.pairs ?? []).some((q) => samePair(p, q)))
  const dropped = (before?.pairs ?? []).filter((q) => !result.record.pairs.some((p) => samePair(p, q)))
  const connection = await withUndo(
    () => next.request(r),
    // Back to the state before this request: a fresh reservation is dropped, a re-request's old pair stays.
    async () => {
      result.undo()
      if (added.length > 0) await opts.claims?.release(r.connection.id, added)
    },
    opts.onUndoError,
  )
  if (dropped.length > 0) await opts.claims?.release(r.connection.id, dropped).catch(opts.onUndoError)
  return connection
}

const samePair = (a: P2PPair, b: P2PPair): boolean => a.pool === b.pool && a.src === b.src && a.dst === b.dst

function isClaimConflict(err: unknown): err is Error & { addresses: readonly string[] } {
  return err instanceof Error && err.name === 'ClaimConflict' && Array.isArray((err as { addresses?: unknown }).addresses)
}
