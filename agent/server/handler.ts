// The seam between the gRPC server (agent/server/) and the request pipeline (agent/pipeline/, the lead's):
// the server decodes a call, builds a CallContext and delegates to a NetworkServiceHandler; whatever the
// handler throws is mapped to a gRPC status once, in grpc-status.ts.
//
// The default handler here only records connections in the table (no datapath): it exists so the API can
// be served and tested before the pipeline is plugged in, and agent/main.ts replaces it.
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import type { ConnectionTable } from '../connections/table.js'
import { AgentError } from '../errors.js'

/** The CNI attachment a call is made for (agent/cni sets it; NSM API calls have none). */
export interface AttachmentInfo {
  /** CNI network name (netconf `name`). */
  network: string
  containerId: string
  ifname: string
  /** CNI_NETNS as given by the runtime. */
  netns: string
}

export interface CallContext {
  /** Aborted when the client cancels, the deadline passes, or the agent shuts down. */
  readonly signal: AbortSignal
  /** Request metadata, lower-case keys, first value of each (binary `-bin` keys left out). */
  readonly metadata: ReadonlyMap<string, string>
  /** The CNI attachment, for calls agent/cni makes; undefined for NSM API calls. */
  readonly attachment: AttachmentInfo | undefined
}

export interface NetworkServiceHandler {
  /** Builds (or refreshes, same connection id) a connection; resolves with it in state UP. */
  request(req: NetworkServiceRequest, ctx: CallContext): Promise<Connection>
  /** Tears a connection down; idempotent (an unknown id resolves). */
  close(conn: Connection, ctx: CallContext): Promise<void>
}

/**
 * Records the request's connection in the table as UP, without touching the kernel. Validates only what
 * every pipeline needs (id, network_service). Replaced by the pipeline in agent/main.ts.
 */
export function recordOnlyHandler(table: ConnectionTable): NetworkServiceHandler {
  return {
    async request(req, ctx) {
      const conn = req.connection
      if (conn === undefined) throw AgentError.invalid('connection', 'is required')
      if (conn.id === '') throw AgentError.invalid('connection.id', 'is required')
      if (conn.networkService === '') throw AgentError.invalid('connection.network_service', 'is required')
      const mechanism = conn.mechanism ?? req.mechanismPreferences[0]
      const out: Connection = { ...conn, state: State.UP, ...(mechanism === undefined ? {} : { mechanism }) }
      await table.upsert(out, ctx.attachment)
      return out
    },
    async close(conn) {
      if (conn.id === '') throw AgentError.invalid('id', 'is required')
      await table.delete(conn.id)
    },
  }
}
