// The kernel side of a memif connection: a veth pair, one end in the agent's netns (`nsmm-<hash>`, the
// forwarder's af_packet port reads and writes it) and the other in the endpoint's netns (`nsm-<hash>`,
// holding the endpoint's addresses and routes, as a KERNEL connection's endpoint end). The forwarder
// joins the pod's memif to the agent's end frame for frame, so the pod's memif interface and the
// endpoint's interface are one L2 segment.
//
// Built like a KERNEL cross-connect (pkg/netlink/crossconnect.ts): both ends are created under temporary
// names in one request, the agent's end tagged (`nsm-cni:<id>`) in the same batch; then each end is
// renamed and configured in its own batch (the endpoint's end tagged first thing), and any failure deletes
// the pair by the ifindexes it was created with. A crash in between leaves a tagged link that the orphan
// sweep finds: the agent's end in the agent's netns (./index.ts sweep), the endpoint's in its netns (the
// KERNEL sweep). TX checksum offload is turned off on the endpoint's end (pkg/ethtool.ts says why).
//
// The agent's end carries a tag of its own, `nsm-memif:<agent>:<id>` (hostTag): the agent's netns is
// shared by every agent started in it (the tests run many), and one agent's sweep must find only its own
// ends there, never another agent's that it has no journal entry for. `<agent>` is a hash of the agent's
// state dir, the one thing that is the agent's alone.
import { randomBytes, createHash } from 'node:crypto'
import { KernelError } from '../../../pkg/errors.js'
import { setTxChecksum } from '../../../pkg/ethtool.js'
import { addAddressMessage, addRouteMessage, createVeth, deleteLinkIndex, getLink, listLinks, setLinkMessage, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import { AgentError } from '../../errors.js'
import { checkEnd } from '../kernel/check.js'
import { LINK_TAG_PREFIX, linkTag } from '../kernel/names.js'
import { deleteNotLive, type FoundLink } from '../kernel/sweep.js'
import type { CheckProblem, Route, SweepInput, SweptLink } from '../types.js'

/** The agent-side end's name: `nsmm-<10 hex of the id's hash>`. */
export function hostIfname(connectionId: string): string {
  return `nsmm-${createHash('sha256').update(`memif:${connectionId}`).digest('hex').slice(0, 10)}`
}

/** Every agent-side end's tag starts with this; then `<agent key>:`. */
export const HOST_TAG_PREFIX = 'nsm-memif:'

/** An agent's key in its host ends' tags: a hash of its state dir. */
export function agentKey(stateDir: string): string {
  return createHash('sha256').update(stateDir).digest('hex').slice(0, 12)
}

/** The agent-side end's tag (IFALIAS, at most 255 bytes: a long id is hashed as linkTag does). */
export function hostTag(key: string, connectionId: string): string {
  const plain = `${HOST_TAG_PREFIX}${key}:${connectionId}`
  return Buffer.byteLength(plain) <= 255 ? plain : `${HOST_TAG_PREFIX}${key}:#${createHash('sha256').update(connectionId).digest('hex')}`
}

export interface KernelSide {
  connectionId: string
  /** The agent's key (agentKey): its ends' tags in the shared agent netns. */
  agent: string
  hostIfname: string
  endpointNetns: string
  endpointIfname: string
  endpointMac: string
  mtu: number
  addresses: readonly string[]
  routes: readonly Route[]
}

export async function buildKernelSide(sessions: NetlinkSessions, side: KernelSide): Promise<void> {
  const tag = linkTag(side.connectionId)
  const htag = hostTag(side.agent, side.connectionId)
  const hn = sessions.host()
  let he: Rtnl
  try {
    he = sessions.forNetns(side.endpointNetns)
  } catch (err) {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw new AgentError('BAD_NETNS', err.message, { cause: err })
    throw err
  }
  const tmpHost = `nsm.${randomBytes(5).toString('hex')}`
  const tmpEp = `nsm.${randomBytes(5).toString('hex')}`
  const { index, peerIndex } = await createVeth(sessions, {
    name: tmpHost,
    mtu: side.mtu,
    queues: 1,
    alias: htag,
    peer: { name: tmpEp, mtu: side.mtu, mac: side.endpointMac, netns: side.endpointNetns },
  }).catch((err: unknown) => {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw new AgentError('BAD_NETNS', err.message, { cause: err })
    throw err
  })
  const hostRef = { index, name: side.hostIfname }
  const epRef = { index: peerIndex, name: side.endpointIfname }
  const results = await Promise.allSettled([
    hn.batch([setLinkMessage({ index, name: tmpHost }, { rename: side.hostIfname }), setLinkMessage(hostRef, { up: true })]),
    he.batch([
      setLinkMessage({ index: peerIndex, name: tmpEp }, { alias: tag }),
      setLinkMessage({ index: peerIndex, name: tmpEp }, { rename: side.endpointIfname }),
      ...side.addresses.map((cidr) => addAddressMessage(epRef, cidr, { noDad: true })),
      setLinkMessage(epRef, { up: true }),
      ...side.routes.map((r) => ({
        ...addRouteMessage(r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }, epRef),
        ...(r.nextHop !== '' ? { tolerate: ['EXISTS'] as const } : {}),
      })),
    ]),
  ])
  const failed = results.findIndex((r) => r.status === 'rejected')
  try {
    if (failed >= 0) throw (results[failed] as PromiseRejectedResult).reason
    setTxChecksum(sessions, side.endpointNetns, side.endpointIfname, false)
  } catch (err) {
    await deleteLinkIndex(hn, hostRef, { missingOk: true }).catch(() => undefined)
    await deleteLinkIndex(he, epRef, { missingOk: true }).catch(() => undefined)
    if (KernelError.is(err, 'EXISTS')) {
      if (err.message.startsWith('rename link')) {
        throw new AgentError('ALREADY_EXISTS', `interface ${failed === 0 ? `${side.hostIfname} already exists in the agent's netns` : `${side.endpointIfname} already exists in ${side.endpointNetns}`}`, { cause: err })
      }
      throw new AgentError('ADDRESS_UNAVAILABLE', `addresses ${side.addresses.join(', ')}: an address or route of them is already in use in ${side.endpointNetns} (endpoint side)`, { cause: err })
    }
    throw err
  }
}

/**
 * Deletes the pair when it carries the connection's tag (the agent's end; else the endpoint's, whatever
 * a crash left). Idempotent; a gone endpoint netns is skipped. `onForeign` hears of a same-named link
 * that is not ours (left alone).
 */
export async function removeKernelSide(sessions: NetlinkSessions, side: Pick<KernelSide, 'connectionId' | 'agent' | 'hostIfname' | 'endpointNetns' | 'endpointIfname'>, onForeign?: (where: string, alias: string | undefined) => void): Promise<void> {
  const places: Array<[string, () => Rtnl, string, string]> = [
    ["the agent's netns", () => sessions.host(), side.hostIfname, hostTag(side.agent, side.connectionId)],
    [side.endpointNetns, () => sessions.forNetns(side.endpointNetns), side.endpointIfname, linkTag(side.connectionId)],
  ]
  for (const [where, open, ifname, tag] of places) {
    try {
      const h = open()
      const link = await getLink(h, ifname)
      if (link === undefined) continue
      if (link.alias !== tag) {
        onForeign?.(`${ifname} in ${where}`, link.alias)
        continue
      }
      if (await deleteLinkIndex(h, link, { missingOk: true })) return // a veth's peer goes with it
    } catch (err) {
      if (!KernelError.is(err, 'BAD_NETNS') && !KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw err
    }
  }
}

/** The pair's intactness: the endpoint's end as a KERNEL endpoint end, the agent's end there, ours and up. */
export async function checkKernelSide(sessions: NetlinkSessions, side: KernelSide): Promise<CheckProblem[]> {
  const tag = linkTag(side.connectionId)
  const problems = await checkEnd(sessions, side.connectionId, { side: 'endpoint', netns: side.endpointNetns, ifname: side.endpointIfname, tag, addresses: side.addresses, routes: side.routes })
  const add = (code: string, message: string): void => {
    problems.push({ code, message, connectionId: side.connectionId })
  }
  const where = `forwarder-side interface ${side.hostIfname} in the agent's netns`
  try {
    const link = await getLink(sessions.host(), side.hostIfname)
    if (link === undefined) add('link-missing', `${where} is missing`)
    else if (link.alias !== hostTag(side.agent, side.connectionId)) add('link-foreign', `${where} is not this connection's (its tag is ${link.alias === undefined ? 'missing' : JSON.stringify(link.alias)})`)
    else if (!link.up) add('link-down', `${where} is down`)
  } catch (err) {
    add('check-failed', `${where}: ${err instanceof Error ? err.message : String(err)}`)
  }
  return problems
}

/**
 * This agent's ends in the agent's netns (its key in their tag; under their final or temporary name) whose
 * connection is not live: deleted with their peers. Other agents' ends in the same netns are not looked at.
 */
export async function sweepHostEnds(sessions: NetlinkSessions, agent: string, input: SweepInput): Promise<SweptLink[]> {
  const h = sessions.host()
  const mine = `${HOST_TAG_PREFIX}${agent}:`
  const found: FoundLink[] = []
  for (const link of await listLinks(h)) {
    // deleteNotLive compares `nsm-cni:<id>` tags: the host tag is given in that form for the comparison.
    if (link.kind === 'veth' && link.alias?.startsWith(mine) === true) found.push({ netns: "(the agent's netns)", h, link: { ...link, alias: `${LINK_TAG_PREFIX}${link.alias.slice(mine.length)}` } })
  }
  return deleteNotLive(found, input)
}
