// One half of a remote cross-connect: a VXLAN device whose UDP socket lives in this node's netns (the
// underlay) and whose interface lives in a pod netns (the client's, or the endpoint's), with that side's
// addresses and routes. The other node's agent builds the other half with local and remote swapped and
// the same VNI; the two devices talk over UDP 4789 between the nodes' underlay addresses.
//
// Build, all or nothing: the device is created in the node netns under a temporary name and tagged in the
// same batch (./link.ts), moved into the pod netns by its ifindex, looked up there and its tag checked,
// then renamed, addressed (IPv6 without DAD), set up and routed in one batch. Any failure deletes the
// device wherever it is by then (node netns or pod, renamed or not), by the ifindex it was judged ours
// by; a link without our tag is never touched. A crash in between leaves a tagged link the sweep finds.
//
// The node netns is the agent's own (`nodeNetns` undefined) in production; tests and benchmarks running
// several "nodes" in one process give each its node netns path instead.
import { randomBytes } from 'node:crypto'
import { KernelError } from '../../../pkg/errors.js'
import { addAddressMessage, addRouteMessage, deleteLinkIndex, getLink, setLinkMessage, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import type { RtnlMessage } from '../../../pkg/netlink/rtnl.js'
import { AgentError } from '../../errors.js'
import { checkEnd } from '../kernel/check.js'
import { LINK_TAG_PREFIX, linkTag } from '../kernel/names.js'
import { deleteNotLive } from '../kernel/sweep.js'
import type { CheckProblem, Route, SweepInput, SweptLink } from '../types.js'
import { createTaggedVxlan, getLinkByIndex, getVxlanLink, listVxlanLinks, moveLinkIndex, type VxlanLink } from './link.js'
import { VXLAN_PORT } from './params.js'
import type { VxlanRecord } from './record.js'

/** Where a half is built: the sessions, and the node netns (undefined: the agent's own). */
export interface HalfContext {
  sessions: NetlinkSessions
  nodeNetns: string | undefined
  /** A test seam: called after each build step; a throw there is a failure at that step. */
  afterStep?: (step: BuildStep) => void | Promise<void>
}

export type BuildStep = 'created' | 'moved' | 'configured'

/** One half, everything the kernel is told: where it lives and its device settings (as recorded), plus: */
export interface VxlanHalf extends Pick<VxlanRecord, 'side' | 'netns' | 'ifname' | 'local' | 'remote' | 'vni' | 'mtu'> {
  connectionId: string
  /** The interface's MAC (derived from the connection id: a rebuild keeps the neighbours' caches valid). */
  mac: string
  addresses: readonly string[]
  routes: readonly Route[]
}

/** The VNI is held by another VXLAN device of the node netns (the kernel allows one per VNI and port). */
export class VniInUseError extends AgentError {
  constructor(
    readonly vni: number,
    where: string,
    cause: unknown,
  ) {
    super('ALREADY_EXISTS', `vni ${vni}: another VXLAN device in ${where} has it (one per VNI and port 4789 in a netns)`, { cause })
  }
}

const nodeName = (ctx: HalfContext): string => (ctx.nodeNetns === undefined ? "the agent's netns" : `node netns ${ctx.nodeNetns}`)

export async function buildHalf(ctx: HalfContext, half: VxlanHalf): Promise<void> {
  const tag = linkTag(half.connectionId)
  // Both sockets before anything is made: a bad namespace fails with nothing to undo.
  const hn = ctx.sessions.at(ctx.nodeNetns)
  const hp = podSocket(ctx, half.netns)
  const tmp = `nsv.${randomBytes(5).toString('hex')}`
  let index: number
  try {
    index = await createTaggedVxlan(hn, { name: tmp, tag, vni: half.vni, local: half.local, remote: half.remote, port: VXLAN_PORT, mtu: half.mtu, mac: half.mac })
  } catch (err) {
    if (KernelError.is(err, 'EXISTS')) throw new VniInUseError(half.vni, nodeName(ctx), err)
    throw err
  }
  let podIndex: number | undefined
  let stage: 'move' | 'configure' = 'move'
  try {
    await ctx.afterStep?.('created')
    await moveLinkIndex(ctx.sessions, hn, { index, name: tmp }, half.netns)
    const there = await getLink(hp, tmp)
    if (there === undefined || there.alias !== tag) throw new KernelError('NO_SUCH_DEVICE', hp.describe(`vxlan ${tmp} is not in the pod netns after its move`))
    podIndex = there.index
    await ctx.afterStep?.('moved')
    stage = 'configure'
    await hp.batch([setLinkMessage({ index: podIndex, name: tmp }, { rename: half.ifname }), ...configureMessages(half, { index: podIndex, name: half.ifname })])
    await ctx.afterStep?.('configured')
  } catch (err) {
    await undoBuild(hn, hp, tag, { index, tmp, podIndex })
    throw translate(err, half, stage)
  }
}

/** The pod's socket; a gone or refused namespace is BAD_NETNS naming it. */
function podSocket(ctx: HalfContext, netns: string): Rtnl {
  try {
    return ctx.sessions.forNetns(netns)
  } catch (err) {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw new AgentError('BAD_NETNS', err.message, { cause: err })
    throw err
  }
}

/** Addresses, up, then the routes through the link (as the KERNEL mechanism's ends get them). */
function configureMessages(half: VxlanHalf, link: { index: number; name: string }): RtnlMessage[] {
  return [
    ...half.addresses.map((cidr) => addAddressMessage(link, cidr, { noDad: true })),
    setLinkMessage(link, { up: true }),
    ...half.routes.map((r) => ({
      ...addRouteMessage(r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }, link),
      // A prefix another connection of this namespace routes already keeps that route (pkg/netlink/crossconnect.ts).
      ...(r.nextHop !== '' ? { tolerate: ['EXISTS'] as const } : {}),
    })),
  ]
}

/** Deletes the half's device wherever a failed build left it, only where it carries `tag`. */
async function undoBuild(hn: Rtnl, hp: Rtnl, tag: string, at: { index: number; tmp: string; podIndex: number | undefined }): Promise<void> {
  const candidates: Array<[Rtnl, () => Promise<VxlanLink | undefined>]> = [
    [hp, () => (at.podIndex !== undefined ? getLinkByIndex(hp, at.podIndex) : getVxlanLink(hp, at.tmp))],
    [hn, () => getLinkByIndex(hn, at.index)],
  ]
  for (const [h, find] of candidates) {
    try {
      const link = await find()
      if (link?.alias === tag) await deleteLinkIndex(h, link, { missingOk: true })
    } catch {
      // The namespace went away meanwhile (its links with it), or the kernel refused: the sweep is the backstop.
    }
  }
}

function translate(err: unknown, half: VxlanHalf, stage: 'move' | 'configure'): unknown {
  if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) return new AgentError('BAD_NETNS', err.message, { cause: err })
  if (stage === 'configure' && KernelError.is(err, 'EXISTS')) {
    if (err.message.startsWith('rename link')) return new AgentError('ALREADY_EXISTS', `interface ${half.ifname} already exists in ${half.netns}`, { cause: err })
    return new AgentError('ADDRESS_UNAVAILABLE', `addresses ${half.addresses.join(', ')}: an address or route of them is already in use in ${half.netns} (${half.side} side)`, { cause: err })
  }
  return err
}

/**
 * The half's intactness: the pod netns is there, the interface exists, carries the connection's tag, is
 * the VXLAN device with the recorded VNI, remote, local, port and MTU, is up, holds its addresses and its
 * routes are in the main table. Problem codes as the KERNEL mechanism's (kernel/check.ts, which this
 * reuses for the link, addresses and routes: its veth-kind verdict is replaced by the VXLAN one here).
 */
export async function checkHalf(ctx: HalfContext, half: VxlanHalf): Promise<CheckProblem[]> {
  const tag = linkTag(half.connectionId)
  const common = await checkEnd(ctx.sessions, half.connectionId, { side: half.side, netns: half.netns, ifname: half.ifname, tag, addresses: half.addresses, routes: half.routes })
  if (common.some((p) => p.code === 'netns-missing' || p.code === 'link-missing' || p.code === 'link-foreign')) return common
  // kernel/check.ts judges the kind against a veth: that verdict is replaced by the VXLAN one below.
  const rest = common.filter((p) => p.code !== 'link-mismatch')
  const where = `${half.side} interface ${half.ifname} in ${half.netns}`
  const mismatches: CheckProblem[] = []
  const mismatch = (message: string): void => {
    mismatches.push({ code: 'link-mismatch', message: `${where} ${message}`, connectionId: half.connectionId })
  }
  try {
    // Read through a dump, which the socket queues behind other dumps: a plain GET answered while another
    // check's dump of this namespace is in flight breaks that dump's multipart reply (pkg/netlink).
    const link = (await listVxlanLinks(ctx.sessions.forNetns(half.netns))).find((l) => l.name === half.ifname)
    if (link === undefined) return common // gone between the two looks: checkEnd saw it
    const v = link.vxlan
    if (v === undefined) {
      mismatch(`is a ${link.kind ?? 'plain device'}, not the connection's VXLAN device`)
    } else {
      if (v.vni !== half.vni) mismatch(`has vni ${String(v.vni)}, not ${half.vni}`)
      if (v.remote !== half.remote) mismatch(`has remote ${v.remote ?? 'unset'}, not ${half.remote}`)
      if (v.local !== half.local) mismatch(`has local ${v.local ?? 'unset'}, not ${half.local}`)
      if (v.port !== VXLAN_PORT) mismatch(`sends to UDP port ${String(v.port)}, not ${VXLAN_PORT}`)
      if (link.mtu !== half.mtu) mismatch(`has MTU ${String(link.mtu)}, not ${half.mtu}`)
    }
  } catch (err) {
    rest.push({ code: 'check-failed', message: `${where}: ${err instanceof Error ? err.message : String(err)}`, connectionId: half.connectionId })
  }
  const problems = [...mismatches, ...rest]
  return problems
}

/** What a removal found where the half's interface should be. */
export type RemoveResult = 'deleted' | 'missing' | 'foreign'

/**
 * Deletes the half's interface in its pod netns when it carries the connection's tag (by the ifindex
 * judged). Idempotent; a pod netns that is gone or refused is skipped (its links went with it). A built
 * half lives in its pod only: a device a crash left in the node netns belongs to no record, and the sweep
 * removes it.
 */
export async function removeHalf(ctx: HalfContext, half: Pick<VxlanHalf, 'connectionId' | 'netns' | 'ifname'>, onForeign?: (alias: string | undefined) => void): Promise<RemoveResult> {
  const tag = linkTag(half.connectionId)
  try {
    const hp = ctx.sessions.forNetns(half.netns)
    const link = await getLink(hp, half.ifname)
    if (link === undefined) return 'missing'
    if (link.alias !== tag) {
      onForeign?.(link.alias)
      return 'foreign'
    }
    return (await deleteLinkIndex(hp, link, { missingOk: true })) ? 'deleted' : 'missing'
  } catch (err) {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) return 'missing'
    throw err
  }
}

/**
 * Deletes the VXLAN devices carrying one of our tags whose connection is not live, in `input.namespaces`
 * (pods: halves whose record was never journaled) and in the node netns (builds interrupted before the
 * move, still under their temporary name). Links are listed first and the live set read after, so a
 * half being built right now is live; each is deleted by the ifindex judged. Other kinds of tagged links
 * are the KERNEL mechanism's to sweep. Like the directory scan of the pipeline's sweep, the node netns
 * part assumes one agent per node netns: another agent's half in the middle of its build would look
 * like a leftover.
 */
export async function sweepHalves(ctx: HalfContext, input: SweepInput): Promise<SweptLink[]> {
  const found: Array<{ netns: string; h: Rtnl; link: VxlanLink }> = []
  const node = ctx.nodeNetns ?? "(the agent's netns)"
  const places: Array<[string, () => Rtnl]> = [[node, () => ctx.sessions.at(ctx.nodeNetns)], ...[...new Set(input.namespaces)].filter((ns) => ns !== ctx.nodeNetns).map((ns): [string, () => Rtnl] => [ns, () => ctx.sessions.forNetns(ns)])]
  for (const [netns, open] of places) {
    try {
      const h = open()
      for (const link of await listVxlanLinks(h)) if (link.kind === 'vxlan' && link.alias?.startsWith(LINK_TAG_PREFIX) === true) found.push({ netns, h, link })
    } catch (err) {
      if (!(err instanceof KernelError)) throw err // gone, not a namespace, or refused: nothing of ours to reach
    }
  }
  return deleteNotLive(found, input)
}
