// agent/client/: the agent's gRPC client for nsmctl, the benchmarks and the tests, over @grpc/grpc-js on
// the agent's unix socket. Methods come from proto/gen's generic service definitions (the .proto files
// are the one source of paths and codecs, for the server as for this client). Unary and
// server-streaming calls; no retries (the caller decides).
//
// Every failure rejects with GrpcCallError: the gRPC status, the message, and the agent's stable error
// name (pkg/codes.ts, read back from the `[NAME]` prefix the agent puts on its messages). An
// unreachable socket is UNAVAILABLE with the name AGENT_UNREACHABLE.
import { Client, credentials, Metadata, status as grpcStatus, type ChannelCredentials, type ChannelOptions, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js'
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire'
import { ERRORS, GrpcStatus, type ErrorName } from '../../pkg/codes.js'
import { parseStatusMessage } from '../errors.js'

interface Codec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter
  decode(input: BinaryReader | Uint8Array, length?: number): T
}
interface Method<Req, Res> {
  readonly name: string
  readonly requestType: Codec<Req>
  readonly responseType: Codec<Res>
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
    /** The agent's stable error name, when it gave one. */
    readonly agentCode: ErrorName | undefined,
    readonly path: string,
    opts: { cause?: unknown } = {},
  ) {
    super(details, opts.cause === undefined ? undefined : { cause: opts.cause })
  }

  /** The CNI code of the agent's error name (pkg/codes.ts), for callers that report CNI codes. */
  get cniCode(): number | undefined {
    return this.agentCode === undefined ? undefined : ERRORS[this.agentCode].cni
  }
}

export interface CallOptions {
  /** Deadline for the whole call. */
  timeoutMs?: number
  /** Request metadata (ASCII values). */
  metadata?: Record<string, string>
  signal?: AbortSignal
}

const STATUS_NAME = Object.fromEntries(Object.entries(GrpcStatus).map(([k, v]) => [v, k])) as Record<number, string>

export function statusName(code: number): string {
  return STATUS_NAME[code] ?? `status ${code}`
}

/** What a client other than the agent's socket needs (agent/peer/client.ts: a peer agent over TLS). */
export interface ChannelSetup {
  /** A grpc-js target (`unix:/path`, `host:port`). */
  target: string
  credentials?: ChannelCredentials
  channelOptions?: ChannelOptions
  /** Deadline of calls without their own `timeoutMs`. */
  defaultTimeoutMs?: number
}

export class AgentClient {
  protected readonly client: Client
  private readonly defaultTimeoutMs: number | undefined

  /**
   * `socket`: the agent's unix socket, or what errors name the server by; `setup` (a string is a target):
   * another channel (an NSM endpoint's `tcp://` address, a peer agent over TLS).
   */
  constructor(
    readonly socket: string,
    setup: string | ChannelSetup = `unix:${socket}`,
  ) {
    const s = typeof setup === 'string' ? { target: setup } : setup
    this.client = new Client(s.target, s.credentials ?? credentials.createInsecure(), s.channelOptions ?? {})
    this.defaultTimeoutMs = s.defaultTimeoutMs
  }

  /** Entries every call carries besides its own (a peer client names its node). */
  protected baseMetadata(): Record<string, string> {
    return {}
  }

  /** The message of a call that found nobody serving (`errno` when grpc-js names one). */
  protected unreachableMessage(details: string, errno: string | undefined): string {
    return `agent unreachable at ${this.socket}: ${errno ?? details}`
  }

  private metadataOf(opts: CallOptions): Metadata {
    const md = new Metadata()
    for (const [k, v] of Object.entries({ ...opts.metadata, ...this.baseMetadata() })) md.set(k, v)
    return md
  }

  private callOptions(opts: CallOptions): { deadline?: Date } {
    const ms = opts.timeoutMs ?? this.defaultTimeoutMs
    return ms === undefined ? {} : { deadline: new Date(Date.now() + ms) }
  }

  close(): void {
    this.client.close()
  }

  /** One request, one response. */
  unary<Req, Res>(service: Service, method: Method<Req, Res>, request: Req, opts: CallOptions = {}): Promise<Res> {
    const path = `/${service.fullName}/${method.name}`
    return new Promise<Res>((resolve, reject) => {
      const call = this.client.makeUnaryRequest<Req, Res>(path, serializer(method), deserializer(method), request, this.metadataOf(opts), this.callOptions(opts), (err, res) => {
        opts.signal?.removeEventListener('abort', cancel)
        if (err !== null) reject(this.callError(err, path))
        else if (res === undefined) reject(new GrpcCallError(GrpcStatus.INTERNAL, `${path}: no response message`, 'INTERNAL', path))
        else resolve(res)
      })
      const cancel = (): void => call.cancel()
      if (opts.signal?.aborted === true) cancel()
      else opts.signal?.addEventListener('abort', cancel, { once: true })
    })
  }

  /** Server streaming: `onMessage` per message; resolves when the server ends the stream with OK. */
  stream<Req, Res>(service: Service, method: Method<Req, Res>, request: Req, onMessage: (m: Res) => void, opts: CallOptions = {}): Promise<void> {
    const path = `/${service.fullName}/${method.name}`
    return new Promise<void>((resolve, reject) => {
      const call: ClientReadableStream<Res> = this.client.makeServerStreamRequest<Req, Res>(path, serializer(method), deserializer(method), request, this.metadataOf(opts), this.callOptions(opts))
      const cancel = (): void => call.cancel()
      if (opts.signal?.aborted === true) cancel()
      else opts.signal?.addEventListener('abort', cancel, { once: true })
      let failed = false
      call.on('data', (m: Res) => {
        if (!failed) onMessage(m)
      })
      call.on('error', (err: ServiceError) => {
        failed = true
        opts.signal?.removeEventListener('abort', cancel)
        reject(this.callError(err, path))
      })
      call.on('status', (s: { code: number }) => {
        if (s.code !== grpcStatus.OK || failed) return
        opts.signal?.removeEventListener('abort', cancel)
        resolve()
      })
    })
  }

  protected callError(err: ServiceError, path: string): GrpcCallError {
    const parsed = parseStatusMessage(err.details)
    let agentCode = parsed.code
    let details = err.details === '' ? statusName(err.code) : err.details
    // grpc-js reports a socket nobody serves on as UNAVAILABLE with "No connection established".
    if (err.code === GrpcStatus.UNAVAILABLE && agentCode === undefined) {
      agentCode = 'AGENT_UNREACHABLE'
      // "No connection established. Last error: Error: connect ENOENT <path>. ..." → the errno.
      const errno = /\bconnect (E[A-Z]+)\b/.exec(err.details)?.[1]
      details = this.unreachableMessage(err.details, errno)
    }
    if (err.code === GrpcStatus.CANCELLED && agentCode === undefined) agentCode = 'CANCELLED'
    return new GrpcCallError(err.code, details, agentCode, path, { cause: err })
  }
}

function serializer<Req>(m: Method<Req, unknown>): (v: Req) => Buffer {
  return (v) => Buffer.from(m.requestType.encode(v).finish())
}

function deserializer<Res>(m: Method<unknown, Res>): (b: Buffer) => Res {
  return (b) => m.responseType.decode(b)
}

