// The MEMIF mechanism's part of a datapath record: where the pod's memif socket is, and the kernel side
// the forwarder joins it to (a veth: one end in the agent's netns for the forwarder's af_packet port, the
// other in the endpoint's netns with the endpoint's addresses and routes).
export interface MemifRecord {
  type: 'MEMIF'
  /** The pod's directory under the memif root (`memifDir`: the pod UID, or the container id). */
  dir: string
  /** The socket file (absolute): `<memif root>/<dir>/<client ifname>.sock`. */
  socket: string
  /** The MAC the pod's memif interface is given to use (derived from the connection id). */
  mac: string
  endpointNetns: string
  endpointIfname: string
  endpointMac: string
  /** The veth end in the agent's netns that the forwarder's af_packet port is bound to. */
  hostIfname: string
}

export function isMemifRecord(v: unknown): v is MemifRecord {
  if (typeof v !== 'object' || v === null) return false
  const m = v as Record<string, unknown>
  const str = (x: unknown): boolean => typeof x === 'string' && x !== ''
  return m.type === 'MEMIF' && str(m.dir) && str(m.socket) && typeof m.mac === 'string' && str(m.endpointNetns) && str(m.endpointIfname) && str(m.endpointMac) && str(m.hostIfname)
}
