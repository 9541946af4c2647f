// Names and addresses of a KERNEL datapath derived from its connection id, so that a rebuild (heal,
// restart, refresh) gives the same ones and close, CHECK and reconcile can find them from the record.
import { createHash } from 'node:crypto'

/**
 * The client interface's MAC: locally administered unicast, derived from the connection id, so a rebuild
 * keeps it. Reported as ethernet_context.src_mac: the CNI result lists it (runtimes such as podman refuse
 * a sandbox interface without one).
 */
export function clientMac(connectionId: string): string {
  const h = createHash('sha256').update(`mac:${connectionId}`).digest()
  const b = [((h[0] ?? 0) & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
  return b.map((x) => (x ?? 0).toString(16).padStart(2, '0')).join(':')
}

/** The endpoint-side interface name of a connection: `nsm-<10 hex of the id's hash>`. */
export function endpointIfname(connectionId: string): string {
  return `nsm-${createHash('sha256').update(connectionId).digest('hex').slice(0, 10)}`
}

/** Every link tag the agent writes starts with this (IFLA_IFALIAS): what the orphan sweep looks for. */
export const LINK_TAG_PREFIX = 'nsm-cni:'
/** IFALIASZ is 256 with the NUL: a tag is at most 255 bytes. */
const MAX_TAG = 255

/**
 * The tag (IFLA_IFALIAS) on both ends of a connection's links: `nsm-cni:<id>`, or for an id too long for
 * an alias, `nsm-cni:#<sha256 of the id>` (`#` is never in a connection id). Close, removal, CHECK and
 * the sweep compare it: a link without the connection's tag is not the connection's.
 */
export function linkTag(connectionId: string): string {
  const plain = `${LINK_TAG_PREFIX}${connectionId}`
  if (Buffer.byteLength(plain) <= MAX_TAG) return plain
  return `${LINK_TAG_PREFIX}#${createHash('sha256').update(connectionId).digest('hex')}`
}
