// select — chooses the endpoint (ARCHITECTURE §6) and tries the winners in order: when building towards one
// fails for a reason that lies with that endpoint (its netns is gone, its pool is exhausted, the kernel
// refused its side), the next one is tried; the error of the last one is returned when all fail. On a
// re-request the endpoint the connection already uses comes first, so a refresh does not move it.
//
// What the client's connection says (NSM v1):
//  - `network_service_endpoint_name` set: that endpoint or nothing. Candidates are restricted to it (the
//    service's matches still apply to it); not registered, not offering the service, expired, or not chosen
//    by the matches fails with NO_ENDPOINT naming it and the service, never another endpoint. A client
//    re-sending the agent's own answer (which names the endpoint it picked) is pinned to where it already
//    is. Ignored when healing excludes that endpoint for this connection (a heal away from it), and on a
//    RESELECT_REQUESTED when it names the endpoint being left (the client echoing the old answer).
//  - `state` RESELECT_REQUESTED on a re-request: no stickiness; the previous endpoint is tried last, so it
//    is chosen again only when no other candidate can serve. The mechanism element replaces the previous
//    datapath, as for any re-request whose datapath differs.
// Needs: clientLabels, previous. Provides: service, endpoint. Undoes: nothing (the round-robin cursor
// moving on is intended).
import type { NetworkService } from '../../conf/networkservice.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import { RoundRobin, SelectError, selectEndpoints } from '../select/index.js'
import { AgentError } from '../errors.js'
import type { Element } from './chain.js'
import type { EndpointInfo } from './types.js'

export interface SelectOptions {
  service(name: string): NetworkService | undefined
  /** Registered endpoints (expired ones may be included: selection drops them). */
  endpoints(): EndpointInfo[]
  roundRobin: RoundRobin
  now(): number
  /** Endpoints never to choose for this request (healing away from a failed one). */
  exclude?: (connectionId: string) => Iterable<string>
}

const PIN_FIELD = 'connection.network_service_endpoint_name'

/** Errors that say "this endpoint cannot serve", so another may. */
function endpointAtFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  // UNAVAILABLE: the endpoint's node agent (a remote endpoint) or the endpoint itself (one serving the NSM
  // API) cannot be reached.
  return code === 'POOL_EXHAUSTED' || code === 'BAD_NETNS' || code === 'NO_SUCH_DEVICE' || code === 'KERNEL' || code === 'NOT_FOUND' || code === 'UNAVAILABLE'
}

/** The named endpoint if it may serve `service` now, else NO_ENDPOINT saying why (naming both). */
function pinnedCandidate(name: string, service: string, all: readonly EndpointInfo[], now: number): EndpointInfo {
  const refuse = (why: string): never => {
    throw new AgentError('NO_ENDPOINT', `${PIN_FIELD}: endpoint ${name} ${why} (network service ${service}); no other endpoint is chosen for a request that names one`, { field: PIN_FIELD })
  }
  const e = all.find((x) => x.name === name)
  if (e === undefined) return refuse('is not registered')
  if (!e.networkServiceNames.includes(service)) return refuse(`does not offer this service (it offers ${e.networkServiceNames.join(', ') || 'none'})`)
  if (e.expiresAt !== undefined && e.expiresAt <= now) return refuse(`expired at ${new Date(e.expiresAt).toISOString()}`)
  return e
}

/** `order` with `name` moved to the front (first: true) or the back. */
function moved(order: EndpointInfo[], name: string | undefined, first: boolean): EndpointInfo[] {
  const i = name === undefined ? -1 : order.findIndex((e) => e.name === name)
  if (i < 0) return order
  const e = order[i] as EndpointInfo
  const rest = [...order.slice(0, i), ...order.slice(i + 1)]
  return first ? [e, ...rest] : [...rest, e]
}

export function select(opts: SelectOptions): Element {
  return {
    name: 'select',
    needs: ['clientLabels'],
    provides: ['service', 'endpoint'],
    // Its close only hands the call on: no span, no timing of its own (chain.ts `observed`).
    observed: { close: false },
    wrap: (next) => ({
      async request(r) {
        const c = r.connection
        const name = c.networkService
        const service = opts.service(name)
        if (service === undefined) throw new AgentError('NO_ENDPOINT', `network service ${name} is not registered`)
        const exclude = new Set(opts.exclude?.(c.id) ?? [])
        const previous = r.state.previous?.endpointName
        const reselect = previous !== undefined && c.state === State.RESELECT_REQUESTED
        let pin = c.networkServiceEndpointName
        if (exclude.has(pin) || (reselect && pin === previous)) pin = ''
        const now = opts.now()
        const all = opts.endpoints()
        let order: EndpointInfo[]
        try {
          order = selectEndpoints({
            service,
            candidates: pin === '' ? all : [pinnedCandidate(pin, name, all, now)],
            clientLabels: r.state.clientLabels ?? {},
            now,
            // A pinned request takes no turn: the service's rotation stays where the others left it.
            ...(pin === '' ? { roundRobin: opts.roundRobin } : {}),
            exclude,
          })
        } catch (err) {
          if (!(err instanceof SelectError)) throw err
          if (pin !== '') throw new AgentError('NO_ENDPOINT', `${PIN_FIELD}: endpoint ${pin} is not chosen by network service ${name}: ${err.explanation.summary}`, { field: PIN_FIELD, cause: err })
          throw new AgentError('NO_ENDPOINT', err.message, { cause: err })
        }
        // Sticky to the endpoint it has; on RESELECT_REQUESTED that one is the last resort instead.
        order = moved(order, previous, !reselect)
        r.state.service = service
        let last: unknown
        for (const endpoint of order) {
          r.state.endpoint = endpoint
          try {
            return await next.request(r)
          } catch (err) {
            if (!endpointAtFault(err)) throw err
            last = err
          }
        }
        throw last
      },
      close: (c) => next.close(c),
    }),
  }
}
