// Links: look up, list, create (veth, vxlan), delete (by name or index), move to a namespace, rename,
// set up/down, MTU, MAC and alias (IFLA_IFALIAS: the agent's ownership tag, see `ownedLink`). Link names
// are validated here the way the kernel does (dev_valid_name) so the error names the field instead of
// coming back as a bare EINVAL.
import { closeSync } from 'node:fs'
import { KernelError } from '../errors'
import {
  attr,
  attrStr,
  attrU16be,
  attrU32,
  attrU8,
  cstr,
  IFF_UP,
  IFLA,
  IFLA_INFO,
  IFLA_VXLAN,
  ifinfomsg,
  nested,
  NLM_F,
  parseAttrs,
  RTM,
  s32,
  u32,
  VETH_INFO_PEER,
  AF_INET,
} from './codec'
import { formatMac, parseIp, parseMac } from './addr'
import type { Rtnl, RtnlMessage } from './rtnl'
import type { NetlinkSessions } from './sessions'

export interface LinkInfo {
  index: number
  name: string
  up: boolean
  mtu: number | undefined
  mac: string | undefined
  /** linkinfo kind: "veth", "vxlan", "bridge", ... (undefined for plain devices like lo) */
  kind: string | undefined
  /** IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace). */
  peerIndex: number | undefined
  /** IFLA_LINK_NETNSID: set when the peer lives in another namespace. */
  linkNetnsId: number | undefined
  operstate: number | undefined
  /** IFLA_IFALIAS: the agent writes its ownership tag here (undefined when the link has none). */
  alias: string | undefined
}

/** A link as a message needs it: its index, and its name for the error text. */
export type LinkRef = Pick<LinkInfo, 'index' | 'name'>

const IFNAMSIZ = 16

/** Throws NAME_TOO_LONG / INVALID_ARGUMENT like the kernel's dev_valid_name, naming the field. */
export function validateLinkName(name: string, field = 'name'): void {
  if (typeof name !== 'string' || name.length === 0) throw new KernelError('INVALID_ARGUMENT', `${field}: link name is empty`)
  if (Buffer.byteLength(name) >= IFNAMSIZ) {
    throw new KernelError('NAME_TOO_LONG', `${field}: link name ${JSON.stringify(name)} is longer than 15 bytes`)
  }
  if (name === '.' || name === '..' || /[/:\s]/.test(name)) {
    throw new KernelError('NAME_TOO_LONG', `${field}: link name ${JSON.stringify(name)} has a character the kernel refuses ('/', ':', whitespace) or is . or ..`)
  }
}

export function parseLink(data: Buffer): LinkInfo {
  const attrs = parseAttrs(data, 16)
  const linkinfo = attrs.get(IFLA.LINKINFO)
  const mac = attrs.get(IFLA.ADDRESS)
  return {
    index: data.readInt32LE(4),
    name: cstr(attrs.get(IFLA.IFNAME)) ?? '',
    up: (data.readUInt32LE(8) & IFF_UP) !== 0,
    mtu: u32(attrs.get(IFLA.MTU)),
    mac: mac === undefined || mac.length !== 6 ? undefined : formatMac(mac),
    kind: linkinfo === undefined ? undefined : cstr(parseAttrs(linkinfo).get(IFLA_INFO.KIND)),
    peerIndex: u32(attrs.get(IFLA.LINK)),
    linkNetnsId: s32(attrs.get(IFLA.LINK_NETNSID)),
    operstate: attrs.get(IFLA.OPERSTATE)?.readUInt8(0),
    alias: nonEmpty(cstr(attrs.get(IFLA.IFALIAS))),
  }
}

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s === '' ? undefined : s)

/** The link named `name`, or undefined when there is none. */
export async function getLink(h: Rtnl, name: string): Promise<LinkInfo | undefined> {
  validateLinkName(name)
  try {
    const msg = await h.get(RTM.GETLINK, [ifinfomsg({}), attrStr(IFLA.IFNAME, name)], `get link ${name}`)
    return parseLink(msg.data)
  } catch (err) {
    if (KernelError.is(err, 'NO_SUCH_DEVICE')) return undefined
    throw err
  }
}

/** Like getLink, but a missing link is a NO_SUCH_DEVICE error. */
export async function requireLink(h: Rtnl, name: string): Promise<LinkInfo> {
  const link = await getLink(h, name)
  if (link === undefined) throw new KernelError('NO_SUCH_DEVICE', h.describe(`link ${name} does not exist`))
  return link
}

export async function listLinks(h: Rtnl): Promise<LinkInfo[]> {
  const msgs = await h.dump(RTM.GETLINK, [ifinfomsg({})], 'list links')
  return msgs.map((m) => parseLink(m.data))
}

export interface LinkSettings {
  mtu?: number
  mac?: string
}

function settingsAttrs(s: LinkSettings, field: string): Buffer[] {
  const out: Buffer[] = []
  if (s.mtu !== undefined) {
    if (!Number.isInteger(s.mtu) || s.mtu < 68 || s.mtu > 65535) {
      throw new KernelError('INVALID_ARGUMENT', `${field}.mtu: ${s.mtu} is not an MTU (68..65535)`)
    }
    out.push(attrU32(IFLA.MTU, s.mtu))
  }
  if (s.mac !== undefined) out.push(attr(IFLA.ADDRESS, parseMac(s.mac)))
  return out
}

/** Runs `fn` with an fd of the namespace at `netns` (closed afterwards), or with undefined. */
async function withNetnsFd<T>(sessions: NetlinkSessions, netns: string | undefined, fn: (fd: number | undefined) => Promise<T>): Promise<T> {
  if (netns === undefined) return fn(undefined)
  const fd = sessions.openNetnsFd(netns)
  try {
    return await fn(fd)
  } finally {
    closeSync(fd)
  }
}

export interface VethSpec extends LinkSettings {
  name: string
  /** Namespace for `name`; undefined = the namespace of the socket the request goes through. */
  netns?: string
  peer: LinkSettings & { name: string; netns?: string }
  /**
   * TX and RX queues of each end. Default: the kernel allocates one per possible CPU and veth then
   * shrinks the set it uses to one, right after registering each end: each shrink waits for an
   * expedited RCU grace period (synchronize_net) with the rtnl lock held. Asking for 1 gives the same
   * datapath (one queue in use) without that, ~15 % of the creation here, and shortens the time the
   * rtnl lock is held for everyone else; only a later `ethtool -L` to more channels is then refused.
   */
  queues?: number
  /**
   * An alias (IFLA_IFALIAS) for `name`, set by a SETLINK by name in the same batch as the creation (the
   * kernel ignores the alias in a NEWLINK that creates). Only for `name` in the socket's own namespace
   * (`netns` unset). The kernel runs the SETLINK even when the creation failed, so `name` must be one
   * nobody else uses (a temporary name, renamed afterwards: ./crossconnect.ts).
   */
  alias?: string
}

/** The ifindex of each end of a new veth pair, each in its own namespace. */
export interface VethIndexes {
  index: number
  peerIndex: number
}

/**
 * Creates a veth pair in one request: each end can be placed directly in its namespace (no separate
 * move), which is also atomic: either both ends exist where asked, or neither does. Resolves with both
 * ends' ifindexes, so that the caller can address them without looking them up by name.
 *
 * When `name` stays in the namespace of the socket the request goes through (`netns` unset), the
 * request asks for NLM_F_ECHO: a kernel that honours it for RTM_NEWLINK (6.2 and later; this
 * machine's does) answers with the new link's RTM_NEWLINK, whose IFLA_LINK is the peer's ifindex.
 * Without an echo (an older kernel, or `name` created in another namespace, where the kernel would
 * deliver the echo to a socket of that namespace), both ends are looked up by name.
 */
export async function createVeth(sessions: NetlinkSessions, spec: VethSpec, via?: string): Promise<VethIndexes> {
  validateLinkName(spec.name, 'name')
  validateLinkName(spec.peer.name, 'peer.name')
  if (spec.queues !== undefined && (!Number.isInteger(spec.queues) || spec.queues < 1 || spec.queues > 4096)) {
    throw new KernelError('INVALID_ARGUMENT', `veth.queues: ${spec.queues} is not a queue count (1..4096)`)
  }
  const queues = spec.queues === undefined ? [] : [attrU32(IFLA.NUM_TX_QUEUES, spec.queues), attrU32(IFLA.NUM_RX_QUEUES, spec.queues)]
  const own = [...settingsAttrs(spec, 'veth'), ...queues]
  const peerOwn = [...settingsAttrs(spec.peer, 'peer'), ...queues]
  if (spec.alias !== undefined && spec.netns !== undefined) throw new KernelError('INVALID_ARGUMENT', 'veth.alias: only for an end created in the namespace of the socket')
  const h = sessions.at(via)
  const echo = spec.netns === undefined
  const replies = await withNetnsFd(sessions, spec.netns, (fd) =>
    withNetnsFd(sessions, spec.peer.netns, async (peerFd) => {
      const peerMsg = Buffer.concat([
        ifinfomsg({}),
        attrStr(IFLA.IFNAME, spec.peer.name),
        ...peerOwn,
        ...(peerFd === undefined ? [] : [attrU32(IFLA.NET_NS_FD, peerFd)]),
      ])
      const [answer] = await h.batch([
        {
          type: RTM.NEWLINK,
          body: [
            ifinfomsg({}),
            attrStr(IFLA.IFNAME, spec.name),
            ...own,
            ...(fd === undefined ? [] : [attrU32(IFLA.NET_NS_FD, fd)]),
            nested(IFLA.LINKINFO, [attrStr(IFLA_INFO.KIND, 'veth'), nested(IFLA_INFO.DATA, [attr(VETH_INFO_PEER, peerMsg)])]),
          ],
          flags: NLM_F.CREATE | NLM_F.EXCL | (echo ? NLM_F.ECHO : 0),
          what: `create veth ${spec.name}/${spec.peer.name}`,
        },
        ...(spec.alias === undefined ? [] : [setLinkMessage({ name: spec.name }, { alias: spec.alias })]),
      ])
      return answer ?? []
    }),
  )
  try {
    const echoed = replies.filter((m) => m.type === RTM.NEWLINK).map((m) => parseLink(m.data)).find((l) => l.name === spec.name)
    if (echoed?.peerIndex !== undefined) return { index: echoed.index, peerIndex: echoed.peerIndex }
    const [index, peerIndex] = await Promise.all([
      echoed?.index ?? requireLink(sessions.at(spec.netns ?? via), spec.name).then((l) => l.index),
      requireLink(sessions.at(spec.peer.netns ?? via), spec.peer.name).then((l) => l.index),
    ])
    return { index, peerIndex }
  } catch (err) {
    // Created but not found again (deleted meanwhile?), or an unreadable echo: leave nothing behind, as a
    // failed create would.
    await (async () => deleteLink(sessions.at(spec.netns ?? via), spec.name, { missingOk: true }))().catch(() => undefined)
    throw err
  }
}

export interface VxlanSpec extends LinkSettings {
  name: string
  vni: number
  /** Underlay source address. */
  local?: string
  /** Remote VTEP (unicast) address. */
  remote?: string
  /** UDP port, default 4789. */
  port?: number
  /** Underlay device name. */
  dev?: string
  learning?: boolean
  netns?: string
}

export async function createVxlan(sessions: NetlinkSessions, spec: VxlanSpec, via?: string): Promise<void> {
  validateLinkName(spec.name, 'name')
  if (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff) {
    throw new KernelError('INVALID_ARGUMENT', `vni: ${spec.vni} is not a VXLAN network identifier (0..16777215)`)
  }
  const port = spec.port ?? 4789
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new KernelError('INVALID_ARGUMENT', `port: ${port} is not a UDP port`)
  const h = sessions.at(via)
  const data: Buffer[] = [attrU32(IFLA_VXLAN.ID, spec.vni), attrU16be(IFLA_VXLAN.PORT, port), attrU8(IFLA_VXLAN.LEARNING, spec.learning === true ? 1 : 0)]
  if (spec.remote !== undefined) {
    const r = parseIp(spec.remote)
    data.push(attr(r.family === AF_INET ? IFLA_VXLAN.GROUP : IFLA_VXLAN.GROUP6, r.bytes))
  }
  if (spec.local !== undefined) {
    const l = parseIp(spec.local)
    data.push(attr(l.family === AF_INET ? IFLA_VXLAN.LOCAL : IFLA_VXLAN.LOCAL6, l.bytes))
  }
  if (spec.dev !== undefined) data.push(attrU32(IFLA_VXLAN.LINK, (await requireLink(h, spec.dev)).index))
  await withNetnsFd(sessions, spec.netns, (fd) =>
    h.request(
      RTM.NEWLINK,
      [
        ifinfomsg({}),
        attrStr(IFLA.IFNAME, spec.name),
        ...settingsAttrs(spec, 'vxlan'),
        ...(fd === undefined ? [] : [attrU32(IFLA.NET_NS_FD, fd)]),
        nested(IFLA.LINKINFO, [attrStr(IFLA_INFO.KIND, 'vxlan'), nested(IFLA_INFO.DATA, data)]),
      ],
      NLM_F.CREATE | NLM_F.EXCL,
      `create vxlan ${spec.name}`,
    ),
  )
}

/** Deletes a link (a veth takes its peer with it). With `missingOk`, a missing link is not an error. */
export async function deleteLink(h: Rtnl, name: string, opts: { missingOk?: boolean } = {}): Promise<boolean> {
  validateLinkName(name)
  try {
    await h.request(RTM.DELLINK, [ifinfomsg({}), attrStr(IFLA.IFNAME, name)], 0, `delete link ${name}`)
    return true
  } catch (err) {
    if (opts.missingOk === true && KernelError.is(err, 'NO_SUCH_DEVICE')) return false
    throw err
  }
}

/** Deletes the link with this index (a veth takes its peer). With `missingOk`, a missing link is not an error. */
export async function deleteLinkIndex(h: Rtnl, link: LinkRef, opts: { missingOk?: boolean } = {}): Promise<boolean> {
  try {
    await h.request(RTM.DELLINK, [ifinfomsg({ index: link.index })], 0, `delete link ${link.name}`)
    return true
  } catch (err) {
    if (opts.missingOk === true && KernelError.is(err, 'NO_SUCH_DEVICE')) return false
    throw err
  }
}

/** What a name holds for an owner: nothing, a link with another (or no) tag, or the owner's link. */
export type Owned = { state: 'missing' } | { state: 'foreign'; link: LinkInfo } | { state: 'ours'; link: LinkInfo }

/** The link `name` judged by its tag: ours only when its alias is exactly `tag`. */
export async function ownedLink(h: Rtnl, name: string, tag: string): Promise<Owned> {
  const link = await getLink(h, name)
  if (link === undefined) return { state: 'missing' }
  return link.alias === tag ? { state: 'ours', link } : { state: 'foreign', link }
}

/** Moves a link into the namespace at `netns`, optionally renaming it in the same request. */
export async function moveLink(sessions: NetlinkSessions, name: string, netns: string, opts: { via?: string; newName?: string } = {}): Promise<void> {
  validateLinkName(name)
  if (opts.newName !== undefined) validateLinkName(opts.newName, 'newName')
  const h = sessions.at(opts.via)
  const link = await requireLink(h, name)
  await withNetnsFd(sessions, netns, (fd) =>
    h.request(
      RTM.SETLINK,
      [
        ifinfomsg({ index: link.index }),
        attrU32(IFLA.NET_NS_FD, fd as number),
        ...(opts.newName === undefined ? [] : [attrStr(IFLA.IFNAME, opts.newName)]),
      ],
      0,
      `move link ${name} to netns ${netns}`,
    ),
  )
}

/** Renames a link; the kernel requires it to be down (BUSY otherwise). */
export async function renameLink(h: Rtnl, name: string, newName: string): Promise<void> {
  validateLinkName(newName, 'newName')
  const link = await requireLink(h, name)
  await h.request(RTM.SETLINK, [ifinfomsg({ index: link.index }), attrStr(IFLA.IFNAME, newName)], 0, `rename link ${name} to ${newName}`)
}

/** Sets up/down, MTU and MAC of a link (by name, no lookup), in one request. */
export async function setLink(h: Rtnl, name: string, change: Omit<LinkChange, 'rename'>): Promise<void> {
  validateLinkName(name)
  await h.batch([setLinkMessage({ name }, change)])
}

export interface LinkChange extends LinkSettings {
  up?: boolean
  /** IFLA_IFALIAS ('' removes it). */
  alias?: string
  /** A new name (only with the link given by index; the kernel wants it down). */
  rename?: string
}

/** The message of `setLink`: the link by its index when known (for a batch, Rtnl.batch), else by name. */
export function setLinkMessage(link: LinkRef | { name: string }, change: LinkChange): RtnlMessage {
  const index = 'index' in link ? link.index : 0
  if (change.rename !== undefined) {
    if (index === 0) throw new KernelError('INVALID_ARGUMENT', `rename ${link.name}: needs the link's index`)
    validateLinkName(change.rename, 'rename')
  }
  if (change.alias !== undefined && Buffer.byteLength(change.alias) > 255) throw new KernelError('INVALID_ARGUMENT', `alias: longer than 255 bytes`)
  return {
    type: RTM.SETLINK,
    body: [
      ifinfomsg({ index, ...(change.up === undefined ? {} : { flags: change.up ? IFF_UP : 0, change: IFF_UP }) }),
      ...(index === 0 ? [attrStr(IFLA.IFNAME, link.name)] : []),
      ...(change.rename === undefined ? [] : [attrStr(IFLA.IFNAME, change.rename)]),
      ...settingsAttrs(change, 'link'),
      ...(change.alias === undefined ? [] : [attr(IFLA.IFALIAS, Buffer.from(change.alias, 'utf8'))]),
    ],
    flags: 0,
    what: change.rename === undefined ? `set link ${link.name}` : `rename link ${link.name} to ${change.rename}`,
  }
}

