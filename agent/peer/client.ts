// PeerClient: one agent calling another's peer listener (server.ts) over the NSM v1 API — Request and
// Close (unary, with a deadline), MonitorConnections (server streaming) — on `tcp://host:port`. It is the
// agent's own client (agent/client) on another channel: the calls, codecs and errors are that one's.
//
// With mutual TLS it presents this node's certificate (from a PeerTls, so new connections pick up a
// rotated one) and accepts only a server certificate that chains to --tls-ca and names the node dialed
// (identity.ts). With `insecure` it speaks plain HTTP/2 and names its node in the PEER_NODE_HEADER
// metadata entry, which is all an insecure listener has to go by.
//
// Failures reject with agent/client's GrpcCallError (status, message, the agent's error name when the
// remote agent gave one). A TLS refusal either way shows as UNAVAILABLE (AGENT_UNREACHABLE), the reason
// in the message.
import { credentials, experimental, type ChannelCredentials } from '@grpc/grpc-js'
import type { PeerCertificate } from 'node:tls'
import { AgentClient, type CallOptions } from '../client/client.js'
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
  /** Metadata added to every call, read when the call is made (the caller's trace context: agent/tracing/). */
  readonly metadata?: () => Record<string, string>
}

/** The server certificate a TLS connection was last made with. */
export interface SeenCertificate {
  readonly fingerprint256: string
  readonly serialNumber: string
  readonly subjectAltName: string
}

export class PeerClient extends AgentClient {
  readonly url: string
  readonly node: string
  private readonly self: string
  private readonly extra: (() => Record<string, string>) | undefined
  private readonly last: { seen?: SeenCertificate }

  constructor(opts: PeerClientOptions) {
    // The certificate check records what it accepted (the holder exists before the client does).
    const last: { seen?: SeenCertificate } = {}
    let creds: ChannelCredentials
    if (opts.insecure === true) creds = credentials.createInsecure()
    else {
      const check = serverIdentityCheck(opts.node)
      creds = experimental.createCertificateProviderChannelCredentials(opts.tls, opts.tls, {
        checkServerIdentity: (host: string, cert: PeerCertificate) => {
          const err = check(host, cert)
          if (err === undefined) last.seen = { fingerprint256: cert.fingerprint256, serialNumber: cert.serialNumber, subjectAltName: cert.subjectaltname ?? '' }
          return err
        },
      })
    }
    super(opts.url, {
      target: peerTarget(opts.url),
      credentials: creds,
      channelOptions: {
        // SNI and the name checked: the node, not the address it is dialed on.
        ...(opts.insecure === true ? {} : { 'grpc.ssl_target_name_override': opts.node }),
        // A client of its own connections: two PeerClients never share one (a rotated certificate is used
        // by the next client's connection, and closing one client closes its connections).
        'grpc.use_local_subchannel_pool': 1,
        // A peer agent restarting is back within a second: reconnect attempts stay frequent (grpc-js
        // otherwise backs off to minutes, refusing calls to a peer that is serving again).
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
      },
      defaultTimeoutMs: opts.timeoutMs ?? 15_000,
    })
    this.url = opts.url
    this.node = opts.node
    this.self = opts.self
    this.extra = opts.metadata
    this.last = last
  }

  /** The server certificate of the last TLS connection made (undefined before the first, or insecure). */
  get serverCertificate(): SeenCertificate | undefined {
    return this.last.seen
  }

  /** Closes the channel and its connections. */
  disconnect(): void {
    this.close()
  }

  /** NSM NetworkService.Request. */
  request(req: NetworkServiceRequest, opts: CallOptions = {}): Promise<Connection> {
    return this.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, req, opts)
  }

  /** NSM NetworkService.Close. */
  async closeConnection(conn: Connection, opts: CallOptions = {}): Promise<void> {
    await this.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn, opts)
  }

  /** NSM MonitorConnection.MonitorConnections: `onEvent` per event; resolves when the peer ends the stream. */
  monitorConnections(selector: MonitorScopeSelector, onEvent: (e: ConnectionEvent) => void, opts: CallOptions = {}): Promise<void> {
    return this.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, selector, onEvent, opts)
  }

  /** Every call names this node (what an insecure listener goes by). */
  protected override baseMetadata(): Record<string, string> {
    return { ...this.extra?.(), [PEER_NODE_HEADER]: this.self }
  }

  protected override unreachableMessage(details: string): string {
    return `peer node "${this.node}" unreachable at ${this.url}: ${details}`
  }
}

/** `tcp://host:port` → the grpc-js target `host:port`. */
export function peerTarget(url: string): string {
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/[\]]+):(\d{1,5})\/?$/.exec(url)
  if (m === null) throw new Error(`${url}: a peer URL is tcp://host:port`)
  return `${m[1]}:${m[2]}`
}
