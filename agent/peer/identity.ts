// Who a peer agent is (agent/peer/README.md). The rule, on both sides of a connection between agents:
//
//   A node certificate names exactly one node: its one DNS subjectAltName is the node name (a DNS-1123
//   name, compared in lower case). The subject CN, IP and URI SANs play no part. A certificate with no DNS
//   SAN, or with several, names no node and is refused (UNAUTHENTICATED).
//
// Server side, the peer listener takes the client's node name from its certificate (after TLS has checked
// that it chains to --tls-ca) and admits it only while that node has a live record in the store
// (PERMISSION_DENIED otherwise). Client side, dialing node X accepts only a server certificate naming X.
//
// Handlers learn the peer through two request metadata entries the peer listener sets on every call it
// admits (overwriting whatever the caller sent): PEER_NODE_HEADER (the node name) and PEER_AUTH_HEADER
// (`mtls`, or `insecure` when the listener runs with --insecure and the name is the caller's unchecked
// word). On the agent's unix socket nothing sets them: a local root client may send anything there.
import type { PeerCertificate } from 'node:tls'

/** Request metadata: the calling peer's node name, set by the peer listener. */
export const PEER_NODE_HEADER = 'nsm-peer-node'
/** Request metadata: how PEER_NODE_HEADER was established, `mtls` or `insecure`. */
export const PEER_AUTH_HEADER = 'nsm-peer-auth'

export type PeerAuth = 'mtls' | 'insecure'

/** The calling peer, as handlers see it. */
export interface Peer {
  readonly node: string
  /** `insecure`: the node name is what the caller claimed in its metadata, not proven by anything. */
  readonly auth: PeerAuth
}

export type PeerRefusal = 'UNAUTHENTICATED' | 'PERMISSION_DENIED'

/** A peer refused: UNAUTHENTICATED when it names no node, PERMISSION_DENIED when its node is not live. */
export class PeerIdentityError extends Error {
  override readonly name = 'PeerIdentityError'
  constructor(
    readonly code: PeerRefusal,
    message: string,
  ) {
    super(message)
  }
}

/** What the listener needs of the node records (agent/store/nodes.ts NodeRecords). */
export interface LiveNodes {
  list(): ReadonlyArray<{ readonly name: string }>
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/

export function isNodeName(v: string): boolean {
  return NODE_NAME.test(v) && v.length <= 253
}

/**
 * The DNS names in Node's `subjectaltname` text (`DNS:a, IP Address:10.0.0.1, URI:x`). Node quotes a value
 * holding a comma, quote or backslash as a JSON string; such a value is no DNS name of ours, but it must
 * not break the split either.
 */
export function dnsNames(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined || subjectAltName === '') return []
  const out: string[] = []
  const entry = /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g
  for (const m of subjectAltName.matchAll(entry)) {
    if (m[1] !== 'DNS') continue
    const raw = m[2] ?? ''
    let value = raw
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string
      } catch {
        value = raw
      }
    }
    out.push(value.toLowerCase())
  }
  return out
}

/** The node a certificate names (the rule above); throws UNAUTHENTICATED when it names none. */
export function nodeNameOf(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined, whose = 'the peer certificate'): string {
  if (cert === undefined) throw new PeerIdentityError('UNAUTHENTICATED', `${whose}: none was presented`)
  const names = dnsNames(cert.subjectaltname)
  if (names.length === 0) throw new PeerIdentityError('UNAUTHENTICATED', `${whose} has no DNS subjectAltName: a node certificate names its node as its one DNS SAN`)
  if (names.length > 1) throw new PeerIdentityError('UNAUTHENTICATED', `${whose} has ${names.length} DNS subjectAltNames (${names.join(', ')}): a node certificate names exactly one node`)
  const name = names[0] ?? ''
  if (!isNodeName(name)) throw new PeerIdentityError('UNAUTHENTICATED', `${whose} names "${name}", which is not a node name (DNS-1123)`)
  return name
}

/** Admits `node` only while it has a live record; no records (the file store) admits every node. */
export function checkLiveNode(node: string, nodes: LiveNodes | undefined): void {
  if (nodes === undefined) return
  if (nodes.list().some((n) => n.name === node)) return
  throw new PeerIdentityError('PERMISSION_DENIED', `peer node "${node}" has no live node record in the store: only the agents of live nodes may call`)
}

/**
 * For the client side: tls `checkServerIdentity` accepting only a certificate naming `node` (the chain to
 * the CA was verified before TLS calls it). The host argument is ignored: peers are dialed by address,
 * identified by node name.
 */
export function serverIdentityCheck(node: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    try {
      const named = nodeNameOf(cert, `the certificate of the agent dialed as node "${node}"`)
      if (named !== node) return new PeerIdentityError('UNAUTHENTICATED', `dialed node "${node}", but the server certificate names node "${named}"`)
      return undefined
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err))
    }
  }
}

/** The calling peer from a call's metadata (CallContext.metadata); undefined when not called through the peer listener. */
export function peerOf(metadata: ReadonlyMap<string, string>): Peer | undefined {
  const node = metadata.get(PEER_NODE_HEADER)
  const auth = metadata.get(PEER_AUTH_HEADER)
  if (node === undefined || (auth !== 'mtls' && auth !== 'insecure')) return undefined
  return { node, auth }
}
