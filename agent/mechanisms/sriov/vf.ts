// A VF's netdev through rtnetlink: taken into a pod (tagged, moved and renamed in one request, then MAC,
// MTU, addresses, up, routes in one batch) and given back (down, moved to the agent's netns under its
// original name, original MAC, MTU and alias). The claim (./intent.ts) holds the originals and is written
// before the first change, so `giveBack` can run from any point a crash left: it finds the VF by its tag
// (IFLA_IFALIAS survives moves, renames and a pod netns's deletion, which sends a physical VF back to the
// agent's netns), in the pod under its new name or anywhere in the agent's netns.
//
// The VF's tag is `nsm-vf:<connection id>`, not the `nsm-cni:` prefix of the links the agent creates: the
// orphan sweep of those deletes what it finds (kernel/sweep.ts), and a VF is never deleted, only given back.
import { createHash, randomBytes } from 'node:crypto'
import { closeSync } from 'node:fs'
import { KernelError } from '../../../pkg/errors.js'
import { attrStr, attrU32, ifinfomsg, IFLA, RTM } from '../../../pkg/netlink/codec.js'
import { addAddressMessage, addRouteMessage, getLink, listLinks, setLinkMessage, type LinkInfo, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import type { RtnlMessage } from '../../../pkg/netlink/rtnl.js'
import type { Route } from '../types.js'
import type { VfClaim } from './intent.js'

export const VF_TAG_PREFIX = 'nsm-vf:'

/** The alias a VF carries while it is claimed: `nsm-vf:<id>`, or `nsm-vf:#<sha256>` for an id too long. */
export function vfTag(connectionId: string): string {
  const plain = `${VF_TAG_PREFIX}${connectionId}`
  if (Buffer.byteLength(plain) <= 255) return plain
  return `${VF_TAG_PREFIX}#${createHash('sha256').update(connectionId).digest('hex')}`
}

export interface VfSetup {
  mac: string | undefined
  mtu: number
  addresses: readonly string[]
  routes: readonly Route[]
}

export type TakeStep = 'tagged' | 'moved' | 'configured'

/**
 * Moves the VF `link` (in the agent's netns) into the claim's pod netns as `claim.ifname`, configured as
 * `setup`. Throws at the first failure, leaving the VF wherever it is by then (the caller gives it back).
 */
export async function takeVf(sessions: NetlinkSessions, claim: VfClaim, link: LinkInfo, setup: VfSetup, afterStep?: (step: TakeStep) => void | Promise<void>): Promise<void> {
  const tag = claim.tag ?? vfTag(claim.connectionId)
  const hn = sessions.host()
  const hp = sessions.forNetns(claim.netns)
  await hn.batch([setLinkMessage(link, { alias: tag })])
  await afterStep?.('tagged')
  await moveIndex(sessions, hn, link, { netns: claim.netns }, claim.ifname)
  const there = await getLink(hp, claim.ifname)
  if (there === undefined || there.alias !== tag) throw new KernelError('NO_SUCH_DEVICE', hp.describe(`VF ${claim.pciAddress} is not ${claim.ifname} after its move`))
  await afterStep?.('moved')
  const ref = { index: there.index, name: claim.ifname }
  const messages: RtnlMessage[] = [
    setLinkMessage(ref, { mtu: setup.mtu, ...(setup.mac === undefined ? {} : { mac: setup.mac }) }),
    ...setup.addresses.map((cidr) => addAddressMessage(ref, cidr, { noDad: true })),
    setLinkMessage(ref, { up: true }),
    ...setup.routes.map((r) => ({
      ...addRouteMessage(r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }, ref),
      ...(r.nextHop !== '' ? { tolerate: ['EXISTS'] as const } : {}),
    })),
  ]
  await hp.batch(messages)
  await afterStep?.('configured')
}

export type GiveBackResult = 'restored' | 'missing'

/**
 * Gives the claimed VF back to the agent's netns with its original name, MAC, MTU and alias, down.
 * Idempotent: a VF already back is only set to its originals again. 'missing': it is nowhere to be found
 * (a stand-in destroyed with its netns; a real VF goes back to the host's netns on its own, and is found there).
 */
export async function giveBack(sessions: NetlinkSessions, claim: VfClaim, warn?: (msg: string, fields: Record<string, unknown>) => void): Promise<GiveBackResult> {
  const original = claim.original
  const tag = claim.tag
  if (original === undefined || tag === undefined) return 'missing'
  const hn = sessions.host()
  let hp: Rtnl | undefined
  try {
    hp = sessions.forNetns(claim.netns)
  } catch (err) {
    if (!(err instanceof KernelError)) throw err // the pod's netns is gone or refused: look in ours only
  }
  if (hp !== undefined) {
    const named = await getLink(hp, claim.ifname).catch(() => undefined)
    const inPod = named?.alias === tag ? named : (await listLinks(hp).catch(() => [])).find((l) => l.alias === tag)
    if (inPod !== undefined) {
      await hp.batch([setLinkMessage(inPod, { up: false })])
      try {
        await moveIndex(sessions, hp, inPod, { pid: process.pid }, original.name)
      } catch (err) {
        if (!KernelError.is(err, 'EXISTS')) throw err
        // Its original name is taken in our netns meanwhile: it comes back under a temporary one.
        const tmp = `nsvf${randomBytes(4).toString('hex')}`
        warn?.('the VF\'s original name is taken: given back under another', { pciAddress: claim.pciAddress, original: original.name, name: tmp })
        await moveIndex(sessions, hp, inPod, { pid: process.pid }, tmp)
      }
    }
  }
  const home = (await listLinks(hn)).find((l) => l.alias === tag)
  if (home === undefined) return 'missing'
  const taken = home.name !== original.name ? await getLink(hn, original.name) : undefined
  // Down first: the kernel renames only a link that is down, and a VF driver may refuse a MAC while up.
  await hn.batch([
    setLinkMessage(home, { up: false }),
    setLinkMessage(home, {
      ...(home.name !== original.name && taken === undefined ? { rename: original.name } : {}),
      ...(original.mtu === undefined ? {} : { mtu: original.mtu }),
      ...(original.mac === undefined ? {} : { mac: original.mac }),
      alias: original.alias ?? '',
    }),
  ])
  return 'restored'
}

/** Moves a link by ifindex into a netns (by path, policy-checked; or a pid's: the agent's own), renamed there. */
async function moveIndex(sessions: NetlinkSessions, h: Rtnl, link: { index: number; name: string }, to: { netns: string } | { pid: number }, newName: string): Promise<void> {
  const what = `move link ${link.name} to ${'netns' in to ? `netns ${to.netns}` : "the agent's netns"} as ${newName}`
  if ('pid' in to) {
    await h.request(RTM.SETLINK, [ifinfomsg({ index: link.index }), attrU32(IFLA.NET_NS_PID, to.pid), attrStr(IFLA.IFNAME, newName)], 0, what)
    return
  }
  const fd = sessions.openNetnsFd(to.netns)
  try {
    await h.request(RTM.SETLINK, [ifinfomsg({ index: link.index }), attrU32(IFLA.NET_NS_FD, fd), attrStr(IFLA.IFNAME, newName)], 0, what)
  } finally {
    closeSync(fd)
  }
}
