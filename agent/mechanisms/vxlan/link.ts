// The VXLAN device through rtnetlink, as this mechanism needs it: created tagged under a temporary name
// in one batch (so a failed creation can never tag someone else's link, and a crash right after leaves a
// tagged link the sweep finds), moved to a pod netns by ifindex, looked up by name or index, and read
// back with its VXLAN settings (VNI, local, remote, port) for CHECK.
//
// pkg/netlink's createVxlan sends a bare NEWLINK (no alias in the same batch, no echo of the ifindex) and
// parseLink leaves IFLA_INFO_DATA unread; the messages are built here from pkg/netlink's codec until
// those two grow the options (then this file shrinks to the calls).
import { closeSync } from 'node:fs'
import { KernelError } from '../../../pkg/errors.js'
import { parseMac } from '../../../pkg/netlink/addr.js'
import { AF_INET, attr, attrStr, attrU16be, attrU32, attrU8, ifinfomsg, IFLA, IFLA_INFO, IFLA_VXLAN, nested, NLM_F, parseAttrs, RTM, u32 } from '../../../pkg/netlink/codec.js'
import { deleteLinkIndex, formatIp, parseIp, parseLink, setLinkMessage, validateLinkName, type LinkInfo, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'

/** A VXLAN device's own settings, as the kernel reports them. */
export interface VxlanSettings {
  vni: number | undefined
  local: string | undefined
  remote: string | undefined
  port: number | undefined
  learning: boolean | undefined
}

export interface VxlanLink extends LinkInfo {
  /** Set when the link is a VXLAN device. */
  vxlan: VxlanSettings | undefined
}

export function parseVxlanLink(data: Buffer): VxlanLink {
  const link = parseLink(data)
  if (link.kind !== 'vxlan') return { ...link, vxlan: undefined }
  const info = parseAttrs(parseAttrs(data, 16).get(IFLA.LINKINFO) ?? Buffer.alloc(0)).get(IFLA_INFO.DATA)
  if (info === undefined) return { ...link, vxlan: undefined }
  const a = parseAttrs(info)
  const ip = (b: Buffer | undefined): string | undefined => (b === undefined || (b.length !== 4 && b.length !== 16) || b.every((x) => x === 0) ? undefined : formatIp(b))
  const port = a.get(IFLA_VXLAN.PORT)
  const learning = a.get(IFLA_VXLAN.LEARNING)
  return {
    ...link,
    vxlan: {
      vni: u32(a.get(IFLA_VXLAN.ID)),
      local: ip(a.get(IFLA_VXLAN.LOCAL) ?? a.get(IFLA_VXLAN.LOCAL6)),
      remote: ip(a.get(IFLA_VXLAN.GROUP) ?? a.get(IFLA_VXLAN.GROUP6)),
      port: port === undefined || port.length < 2 ? undefined : port.readUInt16BE(0),
      learning: learning === undefined || learning.length < 1 ? undefined : learning.readUInt8(0) !== 0,
    },
  }
}

/** The link named `name` with its VXLAN settings, or undefined when there is none. */
export async function getVxlanLink(h: Rtnl, name: string): Promise<VxlanLink | undefined> {
  validateLinkName(name)
  return getBy(h, [ifinfomsg({}), attrStr(IFLA.IFNAME, name)], `get link ${name}`)
}

/** The link with this ifindex, or undefined when there is none. */
export async function getLinkByIndex(h: Rtnl, index: number): Promise<VxlanLink | undefined> {
  return getBy(h, [ifinfomsg({ index })], `get link #${index}`)
}

async function getBy(h: Rtnl, body: Buffer[], what: string): Promise<VxlanLink | undefined> {
  try {
    return parseVxlanLink((await h.get(RTM.GETLINK, body, what)).data)
  } catch (err) {
    if (KernelError.is(err, 'NO_SUCH_DEVICE')) return undefined
    throw err
  }
}

/** Every link of a namespace, with VXLAN settings where it has them. */
export async function listVxlanLinks(h: Rtnl): Promise<VxlanLink[]> {
  return (await h.dump(RTM.GETLINK, [ifinfomsg({})], 'list links')).map((m) => parseVxlanLink(m.data))
}

export interface TaggedVxlanSpec {
  /** A name nobody else holds in the socket's namespace (random): the alias is set by it. */
  name: string
  /** The ownership tag (IFLA_IFALIAS). */
  tag: string
  vni: number
  local: string
  remote: string
  port: number
  mtu: number
  mac?: string
}

/**
 * Creates a VXLAN device in the namespace of `h` and tags it, in one batch; resolves with its ifindex.
 * Learning is off: the one remote is the device's default destination. The creation fails (EXISTS) when
 * the namespace has a VXLAN device with this VNI and port already: the kernel allows one per namespace,
 * wherever the device was moved since.
 */
export async function createTaggedVxlan(h: Rtnl, spec: TaggedVxlanSpec): Promise<number> {
  validateLinkName(spec.name)
  const local = parseIp(spec.local)
  const remote = parseIp(spec.remote)
  const v4 = local.family === AF_INET
  const data = [
    attrU32(IFLA_VXLAN.ID, spec.vni),
    attr(v4 ? IFLA_VXLAN.LOCAL : IFLA_VXLAN.LOCAL6, local.bytes),
    attr(v4 ? IFLA_VXLAN.GROUP : IFLA_VXLAN.GROUP6, remote.bytes),
    attrU16be(IFLA_VXLAN.PORT, spec.port),
    attrU8(IFLA_VXLAN.LEARNING, 0),
  ]
  const create = {
    type: RTM.NEWLINK,
    body: [
      ifinfomsg({}),
      attrStr(IFLA.IFNAME, spec.name),
      attrU32(IFLA.MTU, spec.mtu),
      ...(spec.mac === undefined ? [] : [attr(IFLA.ADDRESS, parseMac(spec.mac))]),
      nested(IFLA.LINKINFO, [attrStr(IFLA_INFO.KIND, 'vxlan'), nested(IFLA_INFO.DATA, data)]),
    ],
    // ECHO: the kernel answers with the new link (its ifindex), no lookup by name needed.
    flags: NLM_F.CREATE | NLM_F.EXCL | NLM_F.ECHO,
    what: `create vxlan ${spec.name} (vni ${spec.vni})`,
  }
  let replies
  try {
    replies = await h.batch([create, setLinkMessage({ name: spec.name }, { alias: spec.tag })])
  } catch (err) {
    // Created but not tagged (the alias failed): the temporary name is ours alone; delete what it holds.
    const made = await getVxlanLink(h, spec.name).catch(() => undefined)
    if (made?.vxlan?.vni === spec.vni) await deleteLinkIndex(h, made, { missingOk: true }).catch(() => undefined)
    throw err
  }
  const echoed = (replies[0] ?? []).filter((m) => m.type === RTM.NEWLINK).map((m) => parseLink(m.data)).find((l) => l.name === spec.name)
  if (echoed !== undefined) return echoed.index
  const found = await getVxlanLink(h, spec.name)
  if (found === undefined) throw new KernelError('NO_SUCH_DEVICE', h.describe(`vxlan ${spec.name} vanished right after its creation`))
  return found.index
}

/**
 * Moves the link with this ifindex into the namespace at `netns` (policy-checked), keeping its name. A
 * VXLAN device keeps its UDP socket in the namespace it was created in.
 */
export async function moveLinkIndex(sessions: NetlinkSessions, h: Rtnl, link: { index: number; name: string }, netns: string): Promise<void> {
  const fd = sessions.openNetnsFd(netns)
  try {
    await h.request(RTM.SETLINK, [ifinfomsg({ index: link.index }), attrU32(IFLA.NET_NS_FD, fd)], 0, `move link ${link.name} to netns ${netns}`)
  } finally {
    closeSync(fd)
  }
}
