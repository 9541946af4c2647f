// agent/client/: a small gRPC client over node:http2 on a unix socket, for the lean CNI plugin and nsmctl.
// It does not load @grpc/grpc-js (the plugin's start-up budget): it frames messages itself with the
// codecs and method paths of proto/gen's generic service definitions. Unary and server-streaming calls;
// no compression, no TLS, no retries (the caller decides).
//
// Errors: every failure rejects with GrpcCallError carrying the gRPC status code, the message, the
// agent's stable error code (`nsmcni-error` trailer, or the `[CODE]` message prefix) and the CNI code the
// plugin should report. An unreachable socket is UNAVAILABLE with agentCode 'UNAVAILABLE' (CNI 100).
import { connect as connectHttp2, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import { connect as connectNet } from 'node:net'
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire'
import { cniCodeFor, ERROR_CODE_KEY, GrpcStatus, parseStatusMessage, type AgentErrorCode } from '../server/agent-error.js'

interface Codec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter
  decode(input: BinaryReader | Uint8Array, length?: number): T
}
interface Method<Req, Res> {
  readonly name: string
  readonly requestType: Codec<Req>
  readonly responseType: Codec<Res>
  readonly responseStream: boolean
}
interface Service {
  readonly fullName: string
}

export class GrpcCallError extends Error {
  override readonly name = 'GrpcCallError'
  constructor(
    /** gRPC status code (GrpcStatus). */
    readonly code: number,
    readonly details: string,
    readonly agentCode: AgentErrorCode | undefined,
    readonly cniCode: number,
    readonly path: string,
    opts: { cause?: unknown } = {},
  ) {
    super(details, opts.cause === undefined ? undefined : { cause: opts.cause })
  }
}

export interface CallOptions {
  /** Deadline for the whole call (sent as grpc-timeout too). */
  timeoutMs?: number
  /** Request metadata (ASCII values). */
  metadata?: Record<string, string>
  signal?: AbortSignal
}

const STATUS_NAME = Object.fromEntries(Object.entries(GrpcStatus).map(([k, v]) => [v, k])) as Record<number, string>

export function statusName(code: number): string {
  return STATUS_NAME[code] ?? `status ${code}`
}

export class AgentClient {
  private session: ClientHttp2Session | undefined
  /** Calls in flight: the session keeps the process alive only while there are some. */
  private active = 0
  /** Why the current session failed (e.g. ENOENT, ECONNREFUSED): streams only see a cancel. */
  private sessionError: NodeJS.ErrnoException | undefined

  constructor(readonly socket: string) {}

  /** One request, one response. */
  async unary<Req, Res>(service: Service, method: Method<Req, Res>, request: Req, opts: CallOptions = {}): Promise<Res> {
    const messages: Res[] = []
    await this.run(service, method, request, opts, (m) => messages.push(m))
    const first = messages[0]
    if (messages.length !== 1 || first === undefined) {
      throw new GrpcCallError(GrpcStatus.INTERNAL, `expected one response message, got ${messages.length}`, 'INTERNAL', 999, `/${service.fullName}/${method.name}`)
    }
    return first
  }

  /** Server streaming: `onMessage` per message; resolves when the server ends the stream with OK. */
  stream<Req, Res>(service: Service, method: Method<Req, Res>, request: Req, onMessage: (m: Res) => void, opts: CallOptions = {}): Promise<void> {
    return this.run(service, method, request, opts, onMessage)
  }

  close(): void {
    this.session?.close()
    this.session = undefined
  }

  private open(): ClientHttp2Session {
    if (this.session !== undefined && !this.session.closed && !this.session.destroyed) return this.session
    this.sessionError = undefined
    const session = connectHttp2('http://localhost', {
      createConnection: () => {
        const sock = connectNet(this.socket)
        // The socket's error (ENOENT, ECONNREFUSED) arrives before the streams are cancelled.
        sock.once('error', (err: NodeJS.ErrnoException) => {
          this.sessionError = err
        })
        return sock
      },
    })
    // Errors surface on the streams; an idle session must not keep the process alive or crash it.
    session.on('error', (err: NodeJS.ErrnoException) => {
      this.sessionError = err
    })
    if (this.active === 0) session.unref()
    this.session = session
    return session
  }

  private run<Req, Res>(service: Service, method: Method<Req, Res>, request: Req, opts: CallOptions, onMessage: (m: Res) => void): Promise<void> {
    const path = `/${service.fullName}/${method.name}`
    return new Promise<void>((resolve, reject) => {
      let settled = false
      let stream: ClientHttp2Stream | undefined
      let timer: NodeJS.Timeout | undefined
      const finish = (err?: GrpcCallError): void => {
        if (settled) return
        settled = true
        this.active -= 1
        if (this.active === 0) this.session?.unref()
        if (timer !== undefined) clearTimeout(timer)
        opts.signal?.removeEventListener('abort', onAbort)
        if (err !== undefined) {
          stream?.close(constants.NGHTTP2_CANCEL)
          reject(err)
        } else resolve()
      }
      const fail = (code: number, details: string, cause?: unknown, agentCode?: AgentErrorCode): void => {
        const parsed = parseStatusMessage(details)
        const ac = agentCode ?? parsed.code
        finish(new GrpcCallError(code, details, ac, ac === undefined ? 999 : cniCodeFor(ac), path, { cause }))
      }
      const onAbort = (): void => fail(GrpcStatus.CANCELLED, 'cancelled by the caller', undefined, 'CANCELLED')
      this.active += 1
      if (opts.signal?.aborted === true) return onAbort()
      opts.signal?.addEventListener('abort', onAbort, { once: true })

      let session: ClientHttp2Session
      try {
        session = this.open()
      } catch (err) {
        return fail(GrpcStatus.UNAVAILABLE, `agent unreachable at ${this.socket}: ${(err as Error).message}`, err, 'UNAVAILABLE')
      }
      const headers: Record<string, string> = {
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...(opts.metadata ?? {}),
      }
      if (opts.timeoutMs !== undefined) {
        headers['grpc-timeout'] = `${Math.max(1, Math.ceil(opts.timeoutMs))}m`
        timer = setTimeout(() => fail(GrpcStatus.DEADLINE_EXCEEDED, `no answer from the agent within ${opts.timeoutMs} ms`, undefined, 'UNAVAILABLE'), opts.timeoutMs)
      }
      session.ref()
      const s = session.request(headers)
      stream = s
      let buffer: Buffer = Buffer.alloc(0)
      let responseHeaders: IncomingHttpHeaders = {}
      s.on('response', (h) => {
        responseHeaders = h
      })
      s.on('data', (chunk: Buffer) => {
        buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
        while (buffer.length >= 5) {
          const len = buffer.readUInt32BE(1)
          if (buffer.length < 5 + len) break
          if (buffer[0] !== 0) return fail(GrpcStatus.INTERNAL, 'compressed response messages are not supported')
          const body = buffer.subarray(5, 5 + len)
          buffer = buffer.subarray(5 + len)
          let message: Res
          try {
            message = method.responseType.decode(body)
          } catch (err) {
            return fail(GrpcStatus.INTERNAL, `cannot decode ${path} response: ${(err as Error).message}`, err)
          }
          if (!settled) onMessage(message)
        }
      })
      const onTrailers = (t: IncomingHttpHeaders): void => {
        const status = Number(t['grpc-status'] ?? responseHeaders['grpc-status'] ?? GrpcStatus.UNKNOWN)
        if (status === GrpcStatus.OK) return finish()
        const raw = String(t['grpc-message'] ?? responseHeaders['grpc-message'] ?? '')
        const details = safeDecode(raw)
        const code = (t[ERROR_CODE_KEY] ?? responseHeaders[ERROR_CODE_KEY]) as AgentErrorCode | undefined
        fail(status, details === '' ? statusName(status) : details, undefined, code)
      }
      s.on('trailers', onTrailers)
      s.on('end', () => {
        // A trailers-only response carries grpc-status in the headers.
        if (!settled && responseHeaders['grpc-status'] !== undefined) onTrailers({})
        if (!settled) fail(GrpcStatus.INTERNAL, `${path}: stream ended without a status`)
      })
      const unreachable = (err: NodeJS.ErrnoException): void => {
        const cause = this.sessionError ?? err
        fail(GrpcStatus.UNAVAILABLE, `agent unreachable at ${this.socket}: ${cause.code ?? cause.message}`, cause, 'UNAVAILABLE')
      }
      s.on('error', unreachable)
      s.on('close', () => {
        if (settled) return
        if (this.sessionError !== undefined) return unreachable(this.sessionError)
        fail(GrpcStatus.UNAVAILABLE, `${path}: connection to the agent closed (http2 code ${s.rstCode ?? 'none'})`, undefined, 'UNAVAILABLE')
      })
      const payload = method.requestType.encode(request).finish()
      const frame = Buffer.allocUnsafe(5 + payload.length)
      frame[0] = 0
      frame.writeUInt32BE(payload.length, 1)
      frame.set(payload, 5)
      s.end(frame)
    })
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}
