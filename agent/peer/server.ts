// The peer listener: the NSM v1 API (NetworkService, MonitorConnection) served to other agents on TCP
// (`--listen HOST:PORT`), beside the unix socket that serves local root clients. Only the services it is
// handed are served: the registries and nsmcni.Agent stay on the unix socket (a peer calling them gets
// UNIMPLEMENTED).
//
// Every call is authenticated before a handler sees it (a grpc-js server interceptor):
// - mutual TLS (`tls`): TLS itself requires a client certificate chaining to --tls-ca; the interceptor
//   takes the node name from it (identity.ts) and admits the call while that node has a live record;
// - `insecure` (--insecure): plain TCP, and the caller names its node in the PEER_NODE_HEADER metadata
//   entry, checked against the live records the same way but proven by nothing: anyone who can reach the
//   port can claim any live node.
// An admitted call carries PEER_NODE_HEADER and PEER_AUTH_HEADER as the listener set them (identity.ts
// peerOf reads them back from a CallContext). A refused call ends UNAUTHENTICATED (no usable identity) or
// PERMISSION_DENIED (no live record) and is logged.
import {
  experimental,
  Metadata,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  status,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js'
import { isIP } from 'node:net'
import type { Logger } from '../server/log.js'
import { checkLiveNode, isNodeName, nodeNameOf, PEER_AUTH_HEADER, PEER_NODE_HEADER, PeerIdentityError, type LiveNodes, type Peer } from './identity.js'
import type { PeerTls } from './tls.js'

/** One gRPC service to serve to peers (agent/server AgentServer.nsmServices gives the NSM ones). */
export interface PeerService {
  readonly definition: ServiceDefinition
  readonly implementation: UntypedServiceImplementation
}

export type PeerListenerSecurity = { readonly tls: PeerTls; readonly insecure?: false } | { readonly insecure: true; readonly tls?: undefined }

export type PeerListenerOptions = PeerListenerSecurity & {
  /** HOST:PORT (`[v6]:port` for IPv6); port 0 takes a free port. */
  readonly listen: string
  readonly services: readonly PeerService[]
  /** The live node records; undefined (the file store) admits any certificate from the CA. */
  readonly nodes: LiveNodes | undefined
  readonly log: Logger
}

export interface PeerListener {
  /** The bound HOST:PORT (the port chosen when 0 was asked). */
  readonly address: string
  readonly secure: boolean
  /** Stops accepting; calls in flight get `graceMs`, then every connection is dropped. */
  close(graceMs?: number): Promise<void>
}

export async function startPeerListener(opts: PeerListenerOptions): Promise<PeerListener> {
  const { host } = splitListen(opts.listen)
  const mode = opts.insecure === true ? 'insecure' : 'mtls'
  const server = new Server({ interceptors: [authenticate(mode, opts.nodes, opts.log)] })
  for (const s of opts.services) server.addService(s.definition, s.implementation)
  const credentials =
    opts.insecure === true
      ? ServerCredentials.createInsecure()
      : // One PeerTls gives both the identity and the CA; `true`: a client certificate is required.
        experimental.createCertificateProviderServerCredentials(opts.tls, opts.tls, true)
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.listen, credentials, (err, bound) => (err === null ? resolve(bound) : reject(err)))
  })
  if (opts.insecure === true) opts.log.warn('peer listener on plain TCP (--insecure): peers are not authenticated, any caller can claim any live node', { address: `${host}:${port}` })
  let closing: Promise<void> | undefined
  return {
    address: `${host}:${port}`,
    secure: opts.insecure !== true,
    close: (graceMs = 5000) => {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown()
          resolve()
        }, graceMs)
        server.tryShutdown(() => {
          clearTimeout(timer)
          resolve()
        })
      })
      return closing
    },
  }
}

/** `HOST:PORT` or `[v6]:PORT` → host (brackets kept) and port. */
export function splitListen(listen: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(listen)
  if (m === null || m[1] === undefined || m[2] === undefined || Number(m[2]) > 65535) throw new Error(`${listen}: not HOST:PORT`)
  return { host: m[1], port: Number(m[2]) }
}

/**
 * The peer URL to record for a bound listener when --peer-url is not given: `tcp://HOST:PORT`. A wildcard
 * host (0.0.0.0, ::) reaches nobody: the underlay address stands in for it when there is one.
 */
export function peerUrlFor(address: string, underlayAddress: string): string {
  const { host, port } = splitListen(address)
  const bare = host.replace(/^\[|\]$/g, '')
  const wildcard = bare === '0.0.0.0' || bare === '::'
  const reachable = wildcard && underlayAddress !== '' ? (isIP(underlayAddress) === 6 ? `[${underlayAddress}]` : underlayAddress) : host
  return `tcp://${reachable}:${port}`
}

/**
 * For the unix socket's server: a local caller's own peer headers are dropped, so only the peer listener
 * (which sets them after authenticating) can make a call look like a peer's (forward.ts trusts them).
 */
export const dropPeerHeaders: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMetadata: (metadata, proceed) => {
          metadata.remove(PEER_NODE_HEADER)
          metadata.remove(PEER_AUTH_HEADER)
          proceed(metadata)
        },
      }),
  })

/** The peer of a call, or the refusal. */
function identify(mode: 'mtls' | 'insecure', call: ServerInterceptingCallInterface, metadata: Metadata, nodes: LiveNodes | undefined): Peer {
  let node: string
  if (mode === 'mtls') {
    // grpc-js gives the certificate only for a connection TLS authorized (chained to --tls-ca).
    const auth = call.getAuthContext()
    node = nodeNameOf(auth.sslPeerCertificate, 'the client certificate')
  } else {
    const claimed = metadata.get(PEER_NODE_HEADER)[0]
    if (typeof claimed !== 'string' || claimed === '') throw new PeerIdentityError('UNAUTHENTICATED', `an insecure peer listener needs the caller's node name in the "${PEER_NODE_HEADER}" metadata entry`)
    if (!isNodeName(claimed)) throw new PeerIdentityError('UNAUTHENTICATED', `"${PEER_NODE_HEADER}: ${claimed}" is not a node name (DNS-1123)`)
    node = claimed
  }
  checkLiveNode(node, nodes)
  return { node, auth: mode }
}

function authenticate(mode: 'mtls' | 'insecure', nodes: LiveNodes | undefined, log: Logger): ServerInterceptor {
  return (method, call) =>
    new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, proceed) => {
            let peer: Peer
            try {
              peer = identify(mode, call, metadata, nodes)
            } catch (err) {
              const refusal = err instanceof PeerIdentityError ? err : new PeerIdentityError('UNAUTHENTICATED', (err as Error).message)
              log.warn('peer call refused', { method: method.path, from: call.getPeer(), code: refusal.code, reason: refusal.message })
              call.sendStatus({ code: refusal.code === 'PERMISSION_DENIED' ? status.PERMISSION_DENIED : status.UNAUTHENTICATED, details: refusal.message })
              return
            }
            // The caller's own entries never survive: with mTLS the name is the certificate's.
            metadata.set(PEER_NODE_HEADER, peer.node)
            metadata.set(PEER_AUTH_HEADER, peer.auth)
            proceed(metadata)
          },
        }),
    })
}
