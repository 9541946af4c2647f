// PeerClient: one agent calling another's peer listener (server.ts) over the NSM v1 API — Request and
// Close (unary, with a deadline), MonitorConnections (server streaming) — on `tcp://host:port`.
//
// With mutual TLS it presents this node's certificate (from a PeerTls, so new connections pick up a
// rotated one) and accepts only a server certificate that chains to --tls-ca and names the node dialed
// (identity.ts). With `insecure` it speaks plain HTTP/2 and names its node in the PEER_NODE_HEADER
// metadata entry, which is all an insecure listener has to go by.
//
// Failures reject with agent/client's GrpcCallError (status, message, the agent's error name when the
// remote agent gave one). A TLS refusal either way shows as UNAVAILABLE, the reason in the message.
import { Client, credentials, experimental, Metadata, status as grpcStatus, type ChannelCredentials, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js'
import type { PeerCertificate } from 'node:tls'
import { GrpcCallError, statusName, type CallOptions } from '../client/client.js'
import { parseStatusMessage } from '../errors.js'
import { GrpcStatus } from '../../pkg/codes.js'
import type { GenericMethod, GenericService } from '../server/grpc-adapter.js'
import { NetworkServiceDefinition, type NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { MonitorConnectionDefinition, type Connection, type ConnectionEvent, type MonitorScopeSelector } from '../../proto/gen/networkservice/connection.js'
import { PEER_NODE_HEADER, serverIdentityCheck } from './identity.js'
import type { PeerTls } from './tls.js'

export type PeerClientSecurity = { readonly tls: PeerTls; readonly insecure?: false } | { readonly insecure: true; readonly tls?: undefined }

export type PeerClientOptions = PeerClientSecurity & {
  /** The peer's URL from its node record: `tcp://host:port`. */
  readonly url: string
  /** The node dialed: its server certificate must name it. */
  readonly node: string
  /** This agent's node name, sent in PEER_NODE_HEADER (what an insecure listener goes by). */
  readonly self: string
  /** Deadline of unary calls without their own `timeoutMs`. Default 15 s. */
  readonly timeoutMs?: number
}

/** The server certificate a TLS connection was last made with. */
export interface SeenCertificate {
  readonly fingerprint256: string
  readonly serialNumber: string
  readonly subjectAltName: string
}

export class PeerClient {
  readonly url: string
  readonly node: string
  private readonly client: Client
  private readonly self: string
  private readonly timeoutMs: number
  private seen: SeenCertificate | undefined

  constructor(opts: PeerClientOptions) {
    this.url = opts.url
    this.node = opts.node
    this.self = opts.self
    this.timeoutMs = opts.timeoutMs ?? 15_000
    const target = peerTarget(opts.url)
    let creds: ChannelCredentials
    if (opts.insecure === true) creds = credentials.createInsecure()
    else {
      const check = serverIdentityCheck(opts.node)
      creds = experimental.createCertificateProviderChannelCredentials(opts.tls, opts.tls, {
        checkServerIdentity: (host: string, cert: PeerCertificate) => {
          const err = check(host, cert)
          if (err === undefined) this.seen = { fingerprint256: cert.fingerprint256, serialNumber: cert.serialNumber, subjectAltName: cert.subjectaltname ?? '' }
          return err
        },
      })
    }
    this.client = new Client(target, creds, {
      // SNI and the name checked: the node, not the address it is dialed on.
      ...(opts.insecure === true ? {} : { 'grpc.ssl_target_name_override': opts.node }),
      // A client of its own connections: two PeerClients never share one (a rotated certificate is used
      // by the next client's connection, and closing one client closes its connections).
      'grpc.use_local_subchannel_pool': 1,
    })
  }

  /** The server certificate of the last TLS connection made (undefined before the first, or insecure). */
  get serverCertificate(): SeenCertificate | undefined {
    return this.seen
  }

  /** Closes the channel and its connections. */
  disconnect(): void {
    this.client.close()
  }

  /** NSM NetworkService.Request. */
  request(req: NetworkServiceRequest, opts: CallOptions = {}): Promise<Connection> {
    return this.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, req, opts)
  }

  /** NSM NetworkService.Close. */
  async close(conn: Connection, opts: CallOptions = {}): Promise<void> {
    await this.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn, opts)
  }

  /** NSM MonitorConnection.MonitorConnections: `onEvent` per event; resolves when the peer ends the stream. */
  monitorConnections(selector: MonitorScopeSelector, onEvent: (e: ConnectionEvent) => void, opts: CallOptions = {}): Promise<void> {
    return this.serverStream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, selector, onEvent, opts)
  }

  /** Any unary method (the listener serves the NSM services only: others end UNIMPLEMENTED). */
  unary<Req, Res>(service: GenericService, method: GenericMethod<Req, Res>, request: Req, opts: CallOptions = {}): Promise<Res> {
    const path = `/${service.fullName}/${method.name}`
    const deadline = new Date(Date.now() + (opts.timeoutMs ?? this.timeoutMs))
    return new Promise<Res>((resolve, reject) => {
      const call = this.client.makeUnaryRequest<Req, Res>(path, serializer(method), deserializer(method), request, this.metadata(opts), { deadline }, (err, res) => {
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

  private serverStream<Req, Res>(service: GenericService, method: GenericMethod<Req, Res>, request: Req, onMessage: (m: Res) => void, opts: CallOptions): Promise<void> {
    const path = `/${service.fullName}/${method.name}`
    return new Promise<void>((resolve, reject) => {
      const call: ClientReadableStream<Res> = this.client.makeServerStreamRequest<Req, Res>(
        path,
        serializer(method),
        deserializer(method),
        request,
        this.metadata(opts),
        opts.timeoutMs === undefined ? {} : { deadline: new Date(Date.now() + opts.timeoutMs) },
      )
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

  private metadata(opts: CallOptions): Metadata {
    const md = new Metadata()
    for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v)
    md.set(PEER_NODE_HEADER, this.self)
    return md
  }

  private callError(err: ServiceError, path: string): GrpcCallError {
    const parsed = parseStatusMessage(err.details)
    let details = err.details === '' ? statusName(err.code) : err.details
    if (err.code === GrpcStatus.UNAVAILABLE && parsed.code === undefined) details = `peer node "${this.node}" unreachable at ${this.url}: ${err.details}`
    const agentCode = parsed.code ?? (err.code === GrpcStatus.CANCELLED ? 'CANCELLED' : undefined)
    return new GrpcCallError(err.code, details, agentCode, path, { cause: err })
  }
}

/** `tcp://host:port` → the grpc-js target `host:port`. */
export function peerTarget(url: string): string {
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/[\]]+):(\d{1,5})\/?$/.exec(url)
  if (m === null) throw new Error(`${url}: a peer URL is tcp://host:port`)
  return `${m[1]}:${m[2]}`
}

function serializer<Req>(m: GenericMethod<Req, unknown>): (v: Req) => Buffer {
  return (v) => Buffer.from(m.requestType.encode(v).finish())
}

function deserializer<Res>(m: GenericMethod<unknown, Res>): (b: Buffer) => Res {
  return (b) => m.responseType.decode(b)
}
