// IPv4 and IPv6 addresses on links: add (optionally without duplicate address detection, for the
// point-to-point addresses the agent assigns itself), remove, list.
import { KernelError } from '../errors'
import { AF_INET, attr, attrU32, IFA, IFA_F, ifaddrmsg, NLM_F, parseAttrs, RTM, u32 } from './codec'
import { formatIp, parsePrefix } from './addr'
import { requireLink, type LinkRef } from './links'
import type { Rtnl, RtnlMessage } from './rtnl'

export interface AddressInfo {
  /** "10.0.0.1/32" */
  cidr: string
  address: string
  prefixLen: number
  family: 4 | 6
  index: number
  /** IFA_F_* flags (tentative, nodad, permanent, ...). */
  flags: number
}

export interface AddAddressOptions {
  /** Skip duplicate address detection (IPv6): the address is usable at once. */
  noDad?: boolean
  /** Point-to-point peer address (IFA_ADDRESS differs from IFA_LOCAL). */
  peer?: string
}

function addrBody(index: number, cidr: string, flags: number, peer?: string): Buffer[] {
  const p = parsePrefix(cidr)
  const body = [ifaddrmsg({ family: p.family, prefixlen: p.len, flags, index }), attr(IFA.LOCAL, p.bytes)]
  if (peer !== undefined) {
    const q = parsePrefix(peer)
    if (q.family !== p.family) throw new KernelError('INVALID_ARGUMENT', `peer ${peer} is not of the same family as ${cidr}`)
    body.push(attr(IFA.ADDRESS, q.bytes))
  } else {
    body.push(attr(IFA.ADDRESS, p.bytes))
  }
  if (flags > 0xff) body.push(attrU32(IFA.FLAGS, flags))
  return body
}

export async function addAddress(h: Rtnl, ifname: string, cidr: string, opts: AddAddressOptions = {}): Promise<void> {
  const link = await requireLink(h, ifname)
  await h.batch([addAddressMessage(link, cidr, opts)])
}

/** The message of `addAddress` for a link known by its index, for a batch (Rtnl.batch). */
export function addAddressMessage(link: LinkRef, cidr: string, opts: AddAddressOptions = {}): RtnlMessage {
  const flags = IFA_F.PERMANENT | (opts.noDad === true ? IFA_F.NODAD : 0)
  return { type: RTM.NEWADDR, body: addrBody(link.index, cidr, flags, opts.peer), flags: NLM_F.CREATE | NLM_F.EXCL, what: `add address ${cidr} to ${link.name}` }
}

/** Removes an address; with `missingOk` a missing address or link is not an error. */
export async function delAddress(h: Rtnl, ifname: string, cidr: string, opts: { missingOk?: boolean } = {}): Promise<boolean> {
  try {
    const link = await requireLink(h, ifname)
    await h.request(RTM.DELADDR, addrBody(link.index, cidr, 0), 0, `remove address ${cidr} from ${ifname}`)
    return true
  } catch (err) {
    if (opts.missingOk === true && (KernelError.is(err, 'NOT_FOUND') || KernelError.is(err, 'NO_SUCH_DEVICE'))) return false
    throw err
  }
}

/** Addresses in the namespace, or on one link. */
export async function listAddresses(h: Rtnl, ifname?: string): Promise<AddressInfo[]> {
  const index = ifname === undefined ? undefined : (await requireLink(h, ifname)).index
  const msgs = await h.dump(RTM.GETADDR, [ifaddrmsg({ family: 0, prefixlen: 0, index: 0 })], 'list addresses')
  const out: AddressInfo[] = []
  for (const m of msgs) {
    const family = m.data.readUInt8(0)
    const prefixLen = m.data.readUInt8(1)
    const idx = m.data.readUInt32LE(4)
    if (index !== undefined && idx !== index) continue
    const attrs = parseAttrs(m.data, 8)
    const raw = attrs.get(IFA.LOCAL) ?? attrs.get(IFA.ADDRESS)
    if (raw === undefined) continue
    const address = formatIp(raw)
    out.push({
      cidr: `${address}/${prefixLen}`,
      address,
      prefixLen,
      family: family === AF_INET ? 4 : 6,
      index: idx,
      flags: u32(attrs.get(IFA.FLAGS)) ?? m.data.readUInt8(2),
    })
  }
  return out
}
