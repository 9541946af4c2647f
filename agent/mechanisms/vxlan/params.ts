// The VXLAN mechanism's request form, as NSM's REMOTE VXLAN mechanism carries it: `src_ip` (the client
// node's underlay address), `dst_ip` (the endpoint node's), `vni` (decimal, 1..16777215), and `name` (the
// client's interface name, as the KERNEL mechanism's `name`). Pure: building and parsing the parameters,
// with validation that names the parameter at fault, and the MTU a VXLAN interface gets.
//
// NSM fills the parameters in two steps: the client's side proposes (`src_ip`, `name`), the endpoint's side
// answers with `dst_ip` and `vni`. `parseVxlanParameters` therefore accepts a partial set (each parameter
// present is validated) and `completeVxlanParameters` insists on all of them.
import { contains, formatIp, parseCidr, parseIp, type Family, type Ip } from '../../../ipam/address.js'
import { validateLinkName } from '../../../pkg/netlink/index.js'
import { AgentError } from '../../errors.js'
import type { RequestedMechanism } from '../types.js'

export const VXLAN = 'VXLAN'
export const REMOTE = 'REMOTE'
/** NSM's parameter keys (networkservicemesh/api mechanisms/vxlan, mechanisms/common). */
export const VXLAN_PARAM = { srcIp: 'src_ip', dstIp: 'dst_ip', vni: 'vni', name: 'name' } as const
export const VNI_MIN = 1
export const VNI_MAX = 0xffffff
/** The IANA port: every agent listens on it in its node netns. */
export const VXLAN_PORT = 4789
/** What encapsulation adds to an inner IP packet: outer IP (20 or 40) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD: Readonly<Record<Family, number>> = { 4: 20 + 8 + 8 + 14, 6: 40 + 8 + 8 + 14 }

/** The negotiated parameters of one remote cross-connect (both halves agree on them). */
export interface VxlanParameters {
  /** The client node's underlay address (canonical text). */
  srcIp: string
  /** The endpoint node's underlay address (canonical text, same family as srcIp). */
  dstIp: string
  vni: number
  /** The client's interface name. */
  name: string
}

/** The REMOTE VXLAN mechanism NSM clients and forwarders exchange. */
export function vxlanRequestedMechanism(p: VxlanParameters): RequestedMechanism {
  return {
    cls: REMOTE,
    type: VXLAN,
    parameters: { [VXLAN_PARAM.srcIp]: p.srcIp, [VXLAN_PARAM.dstIp]: p.dstIp, [VXLAN_PARAM.vni]: String(p.vni), [VXLAN_PARAM.name]: p.name },
  }
}

/**
 * The parameters present in `params` (a mechanism's `parameters` map), each validated; `field` names the
 * mechanism in errors (`mechanism_preferences[0]` → `mechanism_preferences[0].parameters.vni`). `name` is
 * required; the others may be missing (the endpoint's side fills them). Throws AgentError INVALID_ARGUMENT
 * naming the parameter.
 */
export function parseVxlanParameters(params: Readonly<Record<string, string>>, field: string): Partial<VxlanParameters> & { name: string } {
  const at = (key: string): string => `${field}.parameters.${key}`
  const name = params[VXLAN_PARAM.name] ?? ''
  try {
    validateLinkName(name, at(VXLAN_PARAM.name))
  } catch (err) {
    throw new AgentError('INVALID_ARGUMENT', (err as Error).message, { field: at(VXLAN_PARAM.name) })
  }
  const out: Partial<VxlanParameters> & { name: string } = { name }
  const src = params[VXLAN_PARAM.srcIp]
  const dst = params[VXLAN_PARAM.dstIp]
  const vni = params[VXLAN_PARAM.vni]
  const srcIp = src === undefined ? undefined : underlayIp(src, at(VXLAN_PARAM.srcIp))
  const dstIp = dst === undefined ? undefined : underlayIp(dst, at(VXLAN_PARAM.dstIp))
  if (srcIp !== undefined && dstIp !== undefined && srcIp.family !== dstIp.family) {
    throw AgentError.invalid(at(VXLAN_PARAM.dstIp), `${JSON.stringify(dst)} is IPv${dstIp.family} but ${VXLAN_PARAM.srcIp} is IPv${srcIp.family}: both ends of a VXLAN tunnel use one family`)
  }
  if (srcIp !== undefined) out.srcIp = formatIp(srcIp)
  if (dstIp !== undefined) out.dstIp = formatIp(dstIp)
  if (vni !== undefined) out.vni = parseVni(vni, at(VXLAN_PARAM.vni))
  return out
}

/** Like parseVxlanParameters, and every parameter must be there (the negotiated mechanism). */
export function completeVxlanParameters(params: Readonly<Record<string, string>>, field: string): VxlanParameters {
  const p = parseVxlanParameters(params, field)
  for (const [key, value] of [[VXLAN_PARAM.srcIp, p.srcIp], [VXLAN_PARAM.dstIp, p.dstIp], [VXLAN_PARAM.vni, p.vni]] as const) {
    if (value === undefined) throw AgentError.invalid(`${field}.parameters.${key}`, 'is required')
  }
  return p as VxlanParameters
}

/** A VNI as NSM writes it: decimal digits, 1..16777215. */
export function parseVni(text: string, field: string): number {
  if (!/^[0-9]{1,8}$/.test(text)) throw AgentError.invalid(field, `${JSON.stringify(text)} is not a VNI (a decimal number ${VNI_MIN}..${VNI_MAX})`)
  const vni = Number(text)
  if (!isVni(vni)) throw AgentError.invalid(field, `${vni} is out of the VNI range ${VNI_MIN}..${VNI_MAX}`)
  return vni
}

export const isVni = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= VNI_MIN && n <= VNI_MAX

const MULTICAST: Record<Family, string> = { 4: '224.0.0.0/4', 6: 'ff00::/8' }

/** A unicast underlay address (a multicast one would make the device join a group; 0.0.0.0 is no peer). */
function underlayIp(text: string, field: string): Ip {
  const ip = parseIp(text)
  if (ip === undefined) throw AgentError.invalid(field, `${JSON.stringify(text)} is not an IP address`)
  const multicast = parseCidr(MULTICAST[ip.family])
  if (ip.value === 0n || (multicast !== undefined && contains(multicast, ip))) {
    throw AgentError.invalid(field, `${JSON.stringify(text)} is not a unicast address (a node's underlay address is needed)`)
  }
  return ip
}

/** The family of a (valid) underlay address. */
export function underlayFamily(address: string): Family {
  const ip = parseIp(address)
  if (ip === undefined) throw new AgentError('INTERNAL', `underlay address ${JSON.stringify(address)} is not an IP address`)
  return ip.family
}

/**
 * The MTU of a VXLAN interface carrying a pod's traffic at `podMtu`: lowered by the encapsulation (50
 * bytes over an IPv4 underlay, 70 over IPv6), so that an encapsulated packet still fits the underlay.
 */
export function vxlanMtu(podMtu: number, family: Family): number {
  const mtu = podMtu - VXLAN_OVERHEAD[family]
  if (!Number.isInteger(podMtu) || mtu < 68) throw AgentError.invalid('context.MTU', `${podMtu} leaves no room for VXLAN (needs at least ${68 + VXLAN_OVERHEAD[family]})`)
  return mtu
}
