// /networkservice.NetworkService/{Request,Close} delegating to the installed NetworkServiceHandler, and
// /connection.MonitorConnection/MonitorConnections over the connection table: one INITIAL_STATE_TRANSFER
// event with every connection in scope (MonitorScopeSelector: path segments and network services), then
// UPDATE / DELETE events as the table changes.
import type { ServerUnaryCall, ServerWritableStream, sendUnaryData, UntypedServiceImplementation } from '@grpc/grpc-js'
import {
  type Connection,
  type ConnectionEvent,
  ConnectionEventType,
  type MonitorScopeSelector,
} from '../../proto/gen/networkservice/connection.js'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import type { Empty } from '../../proto/gen/google/protobuf/empty.js'
import type { ConnectionTable } from '../connections/table.js'
import { withCallContext } from './call-context.js'
import type { NetworkServiceHandler } from './handler.js'
import { toServiceError } from './grpc-status.js'
import type { Logger } from './log.js'

export interface NetworkServiceDeps {
  /** Read on every call, so the pipeline can be swapped after the server starts. */
  handler: () => NetworkServiceHandler
  table: ConnectionTable
  shutdown: AbortSignal
  log: Logger
}

export function networkServiceImpl(deps: NetworkServiceDeps): UntypedServiceImplementation {
  return {
    request(call: ServerUnaryCall<NetworkServiceRequest, Connection>, cb: sendUnaryData<Connection>) {
      withCallContext(call, deps.shutdown, (ctx) => deps.handler().request(call.request, ctx)).then(
        (conn) => cb(null, conn),
        (err: unknown) => {
          deps.log.debug('request failed', { id: call.request.connection?.id, err })
          cb(toServiceError(err))
        },
      )
    },
    close(call: ServerUnaryCall<Connection, Empty>, cb: sendUnaryData<Empty>) {
      withCallContext(call, deps.shutdown, (ctx) => deps.handler().close(call.request, ctx)).then(
        () => cb(null, {}),
        (err: unknown) => {
          deps.log.debug('close failed', { id: call.request.id, err })
          cb(toServiceError(err))
        },
      )
    },
  }
}

/**
 * True when the connection is in the selector's scope: one of its path segments matches one of
 * `path_segments` (by id and/or name), and its network service is one of `network_services`; an empty list
 * does not narrow.
 */
export function inScope(conn: Connection, selector: MonitorScopeSelector): boolean {
  const services = selector.networkServices
  if (services.length > 0 && !services.includes(conn.networkService)) return false
  if (selector.pathSegments.length === 0) return true
  const segments = conn.path?.pathSegments ?? []
  return selector.pathSegments.some((want) =>
    segments.some((s) => (want.id === '' || want.id === s.id) && (want.name === '' || want.name === s.name)),
  )
}

export function monitorImpl(deps: NetworkServiceDeps): UntypedServiceImplementation {
  return {
    monitorConnections(call: ServerWritableStream<MonitorScopeSelector, ConnectionEvent>) {
      const selector = call.request
      const initial: Record<string, Connection> = {}
      for (const e of deps.table.list()) if (inScope(e.connection, selector)) initial[e.connection.id] = e.connection
      // Subscribing before the first write keeps events in table order with no gap after the snapshot.
      const unsubscribe = deps.table.subscribe((ev) => {
        if (!inScope(ev.entry.connection, selector)) return
        call.write({
          type: ev.type === 'update' ? ConnectionEventType.UPDATE : ConnectionEventType.DELETE,
          connections: { [ev.entry.connection.id]: ev.entry.connection },
        })
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
      call.write({ type: ConnectionEventType.INITIAL_STATE_TRANSFER, connections: initial })
    },
  }
}
