// The persisted datapath record (./types.ts DatapathRecord): reading it back from the connection table,
// whatever version wrote it, and comparing two of them.
//
// Versions: 1 (KERNEL only; endpoint side and IP context as flat fields) is migrated on read into 2, so a
// journal written before mechanisms owned their datapath still loads, heals and closes; every write is 2.
// A mechanism part is taken as written (KERNEL), except a VXLAN, SR-IOV or MEMIF part, which must be whole (vxlan/record.ts,
// sriov/record.ts, memif/record.ts).
import type { ConnectionContext, IPContext } from '../../proto/gen/networkservice/connectioncontext.js'
import type { DatapathRecord, MechanismRecord } from './types.js'
import { isVxlanRecord } from './vxlan/record.js'
import { isSriovRecord } from './sriov/record.js'
import { isMemifRecord } from './memif/record.js'

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string')
const isRoutes = (v: unknown): v is DatapathRecord['ipContext']['srcRoutes'] =>
  Array.isArray(v) && v.every((r) => isObj(r) && typeof r.prefix === 'string' && typeof r.nextHop === 'string')

/** A record from the table in its current form, or undefined when it is none (or malformed). */
export function decodeDatapathRecord(v: unknown): DatapathRecord | undefined {
  if (!isObj(v) || typeof v.connectionId !== 'string' || typeof v.clientNetns !== 'string' || typeof v.clientIfname !== 'string') return undefined
  if (v.version === 2) {
    const ip = v.ipContext
    const m = v.mechanism
    if (!isObj(ip) || !isStrings(ip.src) || !isStrings(ip.dst) || !isRoutes(ip.srcRoutes) || !isRoutes(ip.dstRoutes)) return undefined
    if (!isObj(m) || typeof m.type !== 'string') return undefined
    if (m.type === 'VXLAN' && !isVxlanRecord(m)) return undefined
    if (m.type === 'SRIOV' && !isSriovRecord(m)) return undefined
    if (m.type === 'MEMIF' && !isMemifRecord(m)) return undefined
    return v as unknown as DatapathRecord
  }
  if (v.version === 1) return fromVersion1(v)
  return undefined
}

/** Version 1 (agent/pipeline/types.ts before mechanisms): a KERNEL veth with flat fields. */
function fromVersion1(v: Obj): DatapathRecord | undefined {
  const { endpointNetns, endpointIfname, src, dst, srcRoutes, dstRoutes } = v
  if (typeof endpointNetns !== 'string' || typeof endpointIfname !== 'string') return undefined
  if (!isStrings(src) || !isStrings(dst) || !isRoutes(srcRoutes) || !isRoutes(dstRoutes)) return undefined
  return {
    version: 2,
    connectionId: v.connectionId as string,
    service: typeof v.service === 'string' ? v.service : '',
    endpointName: typeof v.endpointName === 'string' ? v.endpointName : '',
    clientNetns: v.clientNetns as string,
    clientIfname: v.clientIfname as string,
    mtu: typeof v.mtu === 'number' ? v.mtu : 1500,
    ipContext: { src, dst, srcRoutes, dstRoutes },
    mechanism: { type: 'KERNEL', endpointNetns, endpointIfname },
    p2p: v.p2p as DatapathRecord['p2p'],
    clientLabels: isObj(v.clientLabels) ? (v.clientLabels as Record<string, string>) : {},
  }
}

/**
 * Whether two records describe the same datapath (what the kernel holds): client side, MTU, IP context
 * and the mechanism's part. Labels and the allocator's bookkeeping do not matter.
 */
export function sameDatapath(a: DatapathRecord, b: DatapathRecord): boolean {
  return datapathKey(a) === datapathKey(b)
}

function datapathKey(r: DatapathRecord): string {
  const routes = (list: DatapathRecord['ipContext']['srcRoutes']) => list.map((x) => [x.prefix, x.nextHop])
  return JSON.stringify([
    r.clientNetns,
    r.clientIfname,
    r.mtu,
    r.ipContext.src,
    r.ipContext.dst,
    routes(r.ipContext.srcRoutes),
    routes(r.ipContext.dstRoutes),
    sorted(r.mechanism),
  ])
}

/** The mechanism part with its keys in one order (a migrated record may list them differently). */
function sorted(m: MechanismRecord): Array<[string, unknown]> {
  return Object.entries(m).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
}

/** The IP context a record applies, as NSM's IPContext (what every mechanism answers with). */
export function ipContextOfRecord(rec: DatapathRecord): IPContext {
  return {
    srcIpAddrs: rec.ipContext.src,
    dstIpAddrs: rec.ipContext.dst,
    srcIpRequired: false,
    dstIpRequired: false,
    srcRoutes: rec.ipContext.srcRoutes,
    dstRoutes: rec.ipContext.dstRoutes,
    excludedPrefixes: [],
    ipNeighbors: [],
    extraPrefixRequest: [],
    extraPrefixes: [],
    policies: [],
  }
}

/**
 * The connection context a mechanism answers with: the record's IP context (the request's excluded
 * prefixes kept), the request's DNS, VLAN and extra context, the MACs of the two sides and `mtu`.
 */
export function connectionContextOf(rec: DatapathRecord, requested: ConnectionContext | undefined, macs: { srcMac: string; dstMac: string }, mtu = rec.mtu): ConnectionContext {
  return {
    ipContext: { ...ipContextOfRecord(rec), excludedPrefixes: requested?.ipContext?.excludedPrefixes ?? [] },
    dnsContext: requested?.dnsContext,
    ethernetContext: { ...macs, vlanTag: requested?.ethernetContext?.vlanTag ?? 0 },
    extraContext: requested?.extraContext ?? {},
    MTU: mtu,
  }
}
