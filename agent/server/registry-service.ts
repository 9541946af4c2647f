// /registry.NetworkServiceRegistry/* and /registry.NetworkServiceEndpointRegistry/* over agent/registry:
// Register, Unregister, and Find, which sends every match and then, with `watch`, streams changes
// (`deleted: true` for removals and expiries) until the client cancels or the agent shuts down.
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js'
import type { Empty } from '../../proto/gen/google/protobuf/empty.js'
import type {
  NetworkService,
  NetworkServiceEndpoint,
  NetworkServiceEndpointQuery,
  NetworkServiceEndpointResponse,
  NetworkServiceQuery,
  NetworkServiceResponse,
} from '../../proto/gen/registry/registry.js'
import { Registry, type RegistryEvent } from '../registry/registry.js'
import { toServiceError } from './grpc-status.js'
import type { Logger } from './log.js'

export interface RegistryDeps {
  registry: Registry
  shutdown: AbortSignal
  log: Logger
}

function unary<Req, Res>(fn: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>): void => {
    // fn's rejection is handled in the second then-callback.
    fn(call.request).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toServiceError(err)),
    )
  }
}

/** Streams `initial`, then (when watching) every event `toResponse` maps, until cancel or shutdown. */
function findStream<Res>(
  call: ServerWritableStream<unknown, Res>,
  deps: RegistryDeps,
  initial: Res[],
  watch: boolean,
  toResponse: (ev: RegistryEvent) => Res | undefined,
): void {
  for (const r of initial) call.write(r)
  if (!watch) {
    call.end()
    return
  }
  const unsubscribe = deps.registry.subscribe((ev) => {
    const res = toResponse(ev)
    if (res !== undefined) call.write(res)
  })
  const stop = (): void => {
    unsubscribe()
    deps.shutdown.removeEventListener('abort', end)
  }
  const end = (): void => {
    stop()
    call.end()
  }
  call.on('cancelled', stop)
  call.on('error', stop)
  deps.shutdown.addEventListener('abort', end, { once: true })
}

export function serviceRegistryImpl(deps: RegistryDeps): UntypedServiceImplementation {
  return {
    register: unary((ns: NetworkService) => deps.registry.registerService(ns)),
    unregister: unary(async (ns: NetworkService): Promise<Empty> => {
      await deps.registry.unregisterService(ns.name)
      return {}
    }),
    find(call: ServerWritableStream<NetworkServiceQuery, NetworkServiceResponse>) {
      const query = call.request.networkService
      const initial = deps.registry.findServices(query).map((networkService) => ({ networkService, deleted: false }))
      findStream(call, deps, initial, call.request.watch, (ev) =>
        ev.kind === 'service' && Registry.serviceMatches(ev.service, query)
          ? { networkService: ev.service, deleted: ev.type === 'delete' }
          : undefined,
      )
    },
  }
}

export function endpointRegistryImpl(deps: RegistryDeps): UntypedServiceImplementation {
  return {
    register: unary(async (nse: NetworkServiceEndpoint) => (await deps.registry.registerEndpoint(nse)).endpoint),
    unregister: unary(async (nse: NetworkServiceEndpoint): Promise<Empty> => {
      await deps.registry.unregisterEndpoint(nse.name)
      return {}
    }),
    find(call: ServerWritableStream<NetworkServiceEndpointQuery, NetworkServiceEndpointResponse>) {
      const query = call.request.networkServiceEndpoint
      const initial = deps.registry.findEndpoints(query).map((e) => ({ networkServiceEndpoint: e.endpoint, deleted: false }))
      findStream(call, deps, initial, call.request.watch, (ev) =>
        ev.kind === 'endpoint' && Registry.endpointMatches(ev.endpoint, query)
          ? { networkServiceEndpoint: ev.endpoint, deleted: ev.type === 'delete' }
          : undefined,
      )
    },
  }
}
