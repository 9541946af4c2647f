// Unary gRPC over h2c.ts with the plugin's own message codecs (messages.ts). agent/client/grpc-http2.ts
// stays the client for nsmctl and tests; this one exists for the plugin's start-up cost (see h2c.ts and
// messages.ts). Failures reject with AgentCallError carrying
// the gRPC status, the agent's stable code (`nsmcni-error` trailer or `[CODE]` message prefix) and the
// CNI code the agent suggests; `unreachable` says the socket could not be reached at all.
import { cniCodeFor, ERROR_CODE_KEY, GrpcStatus, parseStatusMessage, type AgentErrorCode } from '../../agent/server/agent-error'
import { H2Connection, H2Error } from './h2c'
import type { Method } from './messages'

const UNREACHABLE = new Set(['ENOENT', 'ECONNREFUSED', 'ENOTSOCK', 'EACCES', 'ECONNRESET', 'EPIPE'])

export class AgentCallError extends Error {
  override readonly name = 'AgentCallError'
  constructor(
    /** gRPC status code. */
    readonly code: number,
    readonly details: string,
    readonly agentCode: AgentErrorCode | undefined,
    /** The CNI code the agent's error maps to (999: none in particular). */
    readonly cniCode: number,
    /** The connection never got to the agent (no socket, nobody listening). */
    readonly unreachable: boolean,
    opts: { cause?: unknown } = {},
  ) {
    super(details, opts.cause === undefined ? undefined : { cause: opts.cause })
  }
}

export class GrpcUnaryClient {
  private conn: H2Connection | undefined

  constructor(readonly socket: string) {}

  async unary<Req, Res>(method: Method<Req, Res>, request: Req, opts: { timeoutMs: number; metadata?: Record<string, string> | undefined }): Promise<Res> {
    const path = method.path
    const headers: Array<[string, string]> = [
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', path],
      [':authority', 'localhost'],
      ['content-type', 'application/grpc'],
      ['te', 'trailers'],
      ['grpc-timeout', `${Math.max(1, Math.ceil(opts.timeoutMs))}m`],
      ...Object.entries(opts.metadata ?? {}),
    ]
    const payload = method.encode(request)
    const body = Buffer.allocUnsafe(5 + payload.length)
    const n = payload.length
    body[0] = 0 // not compressed; then the length, big-endian (by hand: see h2c.ts frame())
    body[1] = (n >>> 24) & 0xff
    body[2] = (n >>> 16) & 0xff
    body[3] = (n >>> 8) & 0xff
    body[4] = n & 0xff
    body.set(payload, 5)
    this.conn ??= new H2Connection(this.socket)
    let res
    try {
      res = await this.conn.request(headers, body, opts.timeoutMs)
    } catch (err) {
      const e = err as H2Error
      if (e.errno === 'ETIMEDOUT') throw new AgentCallError(GrpcStatus.DEADLINE_EXCEEDED, `${path}: ${e.message}`, undefined, 999, false, { cause: err })
      const unreachable = e.errno !== undefined && UNREACHABLE.has(e.errno)
      throw new AgentCallError(GrpcStatus.UNAVAILABLE, `${path}: ${e.message}`, 'UNAVAILABLE', 100, unreachable, { cause: err })
    }
    const status = res.trailers.get('grpc-status') ?? res.headers.get('grpc-status')
    if (status !== '0') {
      const raw = res.trailers.get('grpc-message') ?? res.headers.get('grpc-message') ?? ''
      let details = raw
      try {
        details = decodeURIComponent(raw)
      } catch {
        // keep it as sent
      }
      const code = Number(status ?? GrpcStatus.UNKNOWN)
      const agentCode = (res.trailers.get(ERROR_CODE_KEY) as AgentErrorCode | undefined) ?? parseStatusMessage(details).code
      throw new AgentCallError(code, details === '' ? `${path}: gRPC status ${status ?? 'missing'}` : details, agentCode, agentCode === undefined ? 999 : cniCodeFor(agentCode), false)
    }
    const data = res.data
    const declared = data.length < 5 ? -1 : (((data[1] as number) << 24) >>> 0) + ((data[2] as number) << 16) + ((data[3] as number) << 8) + (data[4] as number)
    if (data.length < 5 || data[0] !== 0 || declared !== data.length - 5) {
      throw new AgentCallError(GrpcStatus.INTERNAL, `${path}: expected one uncompressed response message, got ${data.length} bytes`, 'INTERNAL', 999, false)
    }
    try {
      return method.decode(data.subarray(5))
    } catch (err) {
      throw new AgentCallError(GrpcStatus.INTERNAL, `${path}: cannot decode the response: ${(err as Error).message}`, 'INTERNAL', 999, false, { cause: err })
    }
  }

  close(): void {
    this.conn?.close()
    this.conn = undefined
  }
}
