// The endpoint's side of a VF connection: a macvlan on the VF's PF, in the endpoint's netns, holding the
// endpoint's addresses and routes. A VF and its PF share the NIC's embedded switch (VEB), so frames from
// the VF to the macvlan's MAC are switched to the PF and handed to the macvlan; the pod's VF and the
// endpoint's interface are one L2 segment, which is what the point-to-point IP context needs.
//
// Built like a VXLAN half (../vxlan/half.ts): created on the PF in the agent's netns under a temporary name
// and tagged (`nsm-cni:<id>`, so the orphan sweep finds it after a crash) in one batch, moved into the
// endpoint's netns by ifindex, then renamed, addressed, set up and routed in one batch. Any failure deletes
// it wherever it is by then, by the ifindex judged ours.
import { randomBytes } from 'node:crypto'
import { closeSync } from 'node:fs'
import { KernelError } from '../../../pkg/errors.js'
import { parseMac } from '../../../pkg/netlink/addr.js'
import { attr, attrStr, attrU32, ifinfomsg, IFLA, IFLA_INFO, nested, NLM_F, RTM } from '../../../pkg/netlink/codec.js'
import { addAddressMessage, addRouteMessage, deleteLinkIndex, getLink, parseLink, setLinkMessage, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import { AgentError } from '../../errors.js'
import { linkTag } from '../kernel/names.js'
import type { Route } from '../types.js'

const IFLA_MACVLAN_MODE = 1
const MACVLAN_MODE_BRIDGE = 4

export interface EndpointSide {
  connectionId: string
  /** The PF's netdev in the agent's netns (the macvlan's lower device). */
  pf: string
  netns: string
  ifname: string
  mtu: number
  mac: string
  addresses: readonly string[]
  routes: readonly Route[]
}

export async function buildEndpointSide(sessions: NetlinkSessions, side: EndpointSide): Promise<void> {
  const tag = linkTag(side.connectionId)
  const hn = sessions.host()
  let hp: Rtnl
  try {
    hp = sessions.forNetns(side.netns)
  } catch (err) {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) throw new AgentError('BAD_NETNS', err.message, { cause: err })
    throw err
  }
  const pf = await getLink(hn, side.pf)
  if (pf === undefined) throw new AgentError('FAILED_PRECONDITION', `the VF's PF ${side.pf} is not in the agent's netns: the endpoint side (a macvlan on it) cannot be made`)
  const tmp = `nsmv.${randomBytes(5).toString('hex')}`
  const create = {
    type: RTM.NEWLINK,
    body: [
      ifinfomsg({}),
      attrStr(IFLA.IFNAME, tmp),
      attrU32(IFLA.LINK, pf.index),
      attrU32(IFLA.MTU, side.mtu),
      attr(IFLA.ADDRESS, parseMac(side.mac)),
      nested(IFLA.LINKINFO, [attrStr(IFLA_INFO.KIND, 'macvlan'), nested(IFLA_INFO.DATA, [attrU32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE)])]),
    ],
    flags: NLM_F.CREATE | NLM_F.EXCL | NLM_F.ECHO,
    what: `create macvlan ${tmp} on ${side.pf}`,
  }
  let index: number | undefined
  let podIndex: number | undefined
  try {
    const replies = await hn.batch([create, setLinkMessage({ name: tmp }, { alias: tag })])
    index = (replies[0] ?? []).filter((m) => m.type === RTM.NEWLINK).map((m) => parseLink(m.data)).find((l) => l.name === tmp)?.index ?? (await getLink(hn, tmp))?.index
    if (index === undefined) throw new KernelError('NO_SUCH_DEVICE', hn.describe(`macvlan ${tmp} vanished right after its creation`))
    const fd = sessions.openNetnsFd(side.netns)
    try {
      await hn.request(RTM.SETLINK, [ifinfomsg({ index }), attrU32(IFLA.NET_NS_FD, fd)], 0, `move link ${tmp} to netns ${side.netns}`)
    } finally {
      closeSync(fd)
    }
    const there = await getLink(hp, tmp)
    if (there === undefined || there.alias !== tag) throw new KernelError('NO_SUCH_DEVICE', hp.describe(`macvlan ${tmp} is not in the endpoint netns after its move`))
    podIndex = there.index
    const ref = { index: podIndex, name: side.ifname }
    await hp.batch([
      setLinkMessage({ index: podIndex, name: tmp }, { rename: side.ifname }),
      ...side.addresses.map((cidr) => addAddressMessage(ref, cidr, { noDad: true })),
      setLinkMessage(ref, { up: true }),
      ...side.routes.map((r) => ({
        ...addRouteMessage(r.nextHop === '' ? { dst: r.prefix } : { dst: r.prefix, gateway: r.nextHop }, ref),
        ...(r.nextHop !== '' ? { tolerate: ['EXISTS'] as const } : {}),
      })),
    ])
  } catch (err) {
    for (const [h, i] of [[hp, podIndex], [hn, index]] as const) {
      if (i === undefined) continue
      const l = await getByIndex(h, i)
      if (l?.alias === tag) await deleteLinkIndex(h, l, { missingOk: true }).catch(() => undefined)
    }
    if (KernelError.is(err, 'EXISTS')) {
      if (err.message.startsWith('rename link')) throw new AgentError('ALREADY_EXISTS', `interface ${side.ifname} already exists in ${side.netns}`, { cause: err })
      throw new AgentError('ADDRESS_UNAVAILABLE', `addresses ${side.addresses.join(', ')}: an address or route of them is already in use in ${side.netns} (endpoint side)`, { cause: err })
    }
    throw err
  }
}

async function getByIndex(h: Rtnl, index: number) {
  try {
    return parseLink((await h.get(RTM.GETLINK, [ifinfomsg({ index })], `get link #${index}`)).data)
  } catch {
    return undefined
  }
}

/** Deletes the endpoint side when it carries the connection's tag. Idempotent; a gone netns is skipped. */
export async function removeEndpointSide(sessions: NetlinkSessions, side: Pick<EndpointSide, 'connectionId' | 'netns' | 'ifname'>, onForeign?: (alias: string | undefined) => void): Promise<void> {
  try {
    const h = sessions.forNetns(side.netns)
    const link = await getLink(h, side.ifname)
    if (link === undefined) return
    if (link.alias !== linkTag(side.connectionId)) {
      onForeign?.(link.alias)
      return
    }
    await deleteLinkIndex(h, link, { missingOk: true })
  } catch (err) {
    if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) return
    throw err
  }
}
