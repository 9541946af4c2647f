// select — chooses the endpoint (ARCHITECTURE §6) and tries the winners in order: when building towards one
// fails for a reason that lies with that endpoint (its netns is gone, its pool is exhausted, the kernel
// refused its side), the next one is tried; the error of the last one is returned when all fail. On a
// re-request the endpoint the connection already uses comes first, so a refresh does not move it.
// Needs: clientLabels, previous. Provides: service, endpoint. Undoes: nothing (the round-robin cursor
// moving on is intended).
import type { NetworkService } from '../../conf/networkservice.js'
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

/** Errors that say "this endpoint cannot serve", so another may. */
function endpointAtFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'POOL_EXHAUSTED' || code === 'BAD_NETNS' || code === 'NO_SUCH_DEVICE' || code === 'KERNEL' || code === 'NOT_FOUND'
}

export function select(opts: SelectOptions): Element {
  return {
    name: 'select',
    needs: ['clientLabels'],
    provides: ['service', 'endpoint'],
    wrap: (next) => ({
      async request(r) {
        const name = r.connection.networkService
        const service = opts.service(name)
        if (service === undefined) throw new AgentError('NO_ENDPOINT', `network service ${name} is not registered`)
        let order: EndpointInfo[]
        try {
          order = selectEndpoints({
            service,
            candidates: opts.endpoints(),
            clientLabels: r.state.clientLabels ?? {},
            now: opts.now(),
            roundRobin: opts.roundRobin,
            exclude: opts.exclude?.(r.connection.id) ?? [],
          })
        } catch (err) {
          if (err instanceof SelectError) throw new AgentError('NO_ENDPOINT', err.message, { cause: err })
          throw err
        }
        const sticky = r.state.previous?.endpointName
        if (sticky !== undefined) {
          const i = order.findIndex((e) => e.name === sticky)
          if (i > 0) order = [order[i] as EndpointInfo, ...order.slice(0, i), ...order.slice(i + 1)]
        }
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
