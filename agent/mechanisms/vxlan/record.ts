// The VXLAN mechanism's part of a datapath record: one half of a remote cross-connect, the one this agent
// built (the other node's agent keeps the other half in its own record).
import { parseIp } from '../../../ipam/address.js'
import { isVni } from './params.js'

export interface VxlanRecord {
  type: 'VXLAN'
  /** Which half: the client's (its pod netns) or the endpoint's. */
  side: 'client' | 'endpoint'
  /** The pod netns the VXLAN interface lives in. */
  netns: string
  /** Its name there: the client's requested name, or the endpoint side's derived one. */
  ifname: string
  /** This node's underlay address (the device's `local`; its UDP socket stays in the node netns). */
  local: string
  /** The other node's underlay address (the device's `remote`). */
  remote: string
  vni: number
  /** The interface's MTU: the pod's lowered by the VXLAN overhead (./params.ts vxlanMtu). */
  mtu: number
  /** The other node's name (its agent holds the other half); absent in records written before it was kept. */
  peer?: string
}

/** Whether `v` (read back from the connection table) is a well-formed VXLAN record part. */
export function isVxlanRecord(v: unknown): v is VxlanRecord {
  if (typeof v !== 'object' || v === null) return false
  const m = v as Record<string, unknown>
  const ip = (x: unknown): boolean => typeof x === 'string' && parseIp(x) !== undefined
  return (
    m.type === 'VXLAN' &&
    (m.side === 'client' || m.side === 'endpoint') &&
    typeof m.netns === 'string' &&
    m.netns !== '' &&
    typeof m.ifname === 'string' &&
    m.ifname !== '' &&
    ip(m.local) &&
    ip(m.remote) &&
    isVni(m.vni) &&
    typeof m.mtu === 'number' &&
    Number.isInteger(m.mtu) &&
    (m.peer === undefined || typeof m.peer === 'string')
  )
}
