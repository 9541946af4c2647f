// Routes: add, remove and list, with gateway, device, scope, table, metric and preferred source.
import { KernelError } from '../errors'
import {
  AF_INET,
  AF_INET6,
  attr,
  attrU32,
  NLM_F,
  parseAttrs,
  RT_TABLE_MAIN,
  RTA,
  RTM,
  RTN_UNICAST,
  RTPROT_STATIC,
  rtmsg,
  SCOPE,
  type Scope,
  u32,
} from './codec'
import { formatIp, parseIp, parsePrefix } from './addr'
import { listLinks, requireLink, type LinkRef } from './links'
import type { Rtnl, RtnlMessage } from './rtnl'

export interface RouteSpec {
  /** "10.0.0.0/8", "fd00::/64", or "default" (then the family comes from `gateway`, else IPv4). */
  dst: string
  gateway?: string
  dev?: string
  /** Default: "link" without a gateway, "universe" with one. */
  scope?: Scope
  /** Default: main (254). */
  table?: number
  metric?: number
  src?: string
  /** Replace an existing route with the same key instead of failing with EXISTS. */
  replace?: boolean
}

export interface RouteInfo {
  dst: string
  gateway: string | undefined
  dev: string | undefined
  scope: Scope | number
  table: number
  metric: number | undefined
  src: string | undefined
  family: 4 | 6
}

function routeBody(spec: Omit<RouteSpec, 'dev'>, devIndex: number | undefined): Buffer[] {
  let family: typeof AF_INET | typeof AF_INET6 = AF_INET
  let dst: { bytes: Buffer; len: number } | undefined
  if (spec.dst === 'default') {
    if (spec.gateway !== undefined) family = parseIp(spec.gateway).family
  } else {
    const p = parsePrefix(spec.dst)
    family = p.family
    dst = p
  }
  const gw = spec.gateway === undefined ? undefined : parseIp(spec.gateway)
  if (gw !== undefined && gw.family !== family) throw new KernelError('INVALID_ARGUMENT', `gateway ${spec.gateway} is not of the family of ${spec.dst}`)
  if (gw === undefined && devIndex === undefined) throw new KernelError('INVALID_ARGUMENT', `route ${spec.dst}: needs a gateway or a dev`)
  const table = spec.table ?? RT_TABLE_MAIN
  if (!Number.isInteger(table) || table < 1 || table > 0xfffffffe) throw new KernelError('INVALID_ARGUMENT', `table: ${table} is not a routing table id`)
  const scope = spec.scope ?? (gw === undefined ? 'link' : 'universe')
  if (!(scope in SCOPE)) throw new KernelError('INVALID_ARGUMENT', `scope: ${String(scope)} is not one of ${Object.keys(SCOPE).join(', ')}`)
  const body = [rtmsg({ family, dstLen: dst?.len ?? 0, table, protocol: RTPROT_STATIC, scope: SCOPE[scope], type: RTN_UNICAST })]
  if (dst !== undefined && dst.len > 0) body.push(attr(RTA.DST, maskedBytes(dst.bytes, dst.len)))
  if (gw !== undefined) body.push(attr(RTA.GATEWAY, gw.bytes))
  if (devIndex !== undefined) body.push(attrU32(RTA.OIF, devIndex))
  if (spec.metric !== undefined) {
    if (!Number.isInteger(spec.metric) || spec.metric < 0 || spec.metric > 0xffffffff) throw new KernelError('INVALID_ARGUMENT', `metric: ${spec.metric} is out of range`)
    body.push(attrU32(RTA.PRIORITY, spec.metric))
  }
  if (spec.src !== undefined) body.push(attr(RTA.PREFSRC, parseIp(spec.src).bytes))
  if (table >= 256) body.push(attrU32(RTA.TABLE, table))
  return body
}

/** The network address of a prefix: the kernel refuses a route whose dst has host bits set. */
function maskedBytes(bytes: Buffer, len: number): Buffer {
  const out = Buffer.from(bytes)
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, len - i * 8))
    out[i] = (out[i] ?? 0) & ((0xff << (8 - bits)) & 0xff)
  }
  return out
}

export async function addRoute(h: Rtnl, spec: RouteSpec): Promise<void> {
  const dev = spec.dev === undefined ? undefined : await requireLink(h, spec.dev)
  await h.batch([addRouteMessage(spec, dev)])
}

/** The message of `addRoute` through `dev`, a link known by its index, for a batch (Rtnl.batch). */
export function addRouteMessage(spec: Omit<RouteSpec, 'dev'>, dev: LinkRef | undefined): RtnlMessage {
  const flags = NLM_F.CREATE | (spec.replace === true ? NLM_F.REPLACE : NLM_F.EXCL)
  return { type: RTM.NEWROUTE, body: routeBody(spec, dev?.index), flags, what: `add route ${spec.dst}${dev === undefined ? '' : ` dev ${dev.name}`}` }
}

/** Removes a route; with `missingOk` a missing route or device is not an error. */
export async function delRoute(h: Rtnl, spec: RouteSpec, opts: { missingOk?: boolean } = {}): Promise<boolean> {
  try {
    const dev = spec.dev === undefined ? undefined : (await requireLink(h, spec.dev)).index
    await h.request(RTM.DELROUTE, routeBody(spec, dev), 0, `remove route ${spec.dst}`)
    return true
  } catch (err) {
    if (opts.missingOk === true && (KernelError.is(err, 'NOT_FOUND') || KernelError.is(err, 'NO_SUCH_DEVICE'))) return false
    throw err
  }
}

const scopeName = (n: number): Scope | number => (Object.entries(SCOPE).find(([, v]) => v === n)?.[0] as Scope | undefined) ?? n

/** Unicast routes of one table (main by default), IPv4 and IPv6. */
export async function listRoutes(h: Rtnl, opts: { table?: number; family?: 4 | 6 } = {}): Promise<RouteInfo[]> {
  const want = opts.table ?? RT_TABLE_MAIN
  const family = opts.family === undefined ? 0 : opts.family === 4 ? AF_INET : AF_INET6
  const msgs = await h.dump(RTM.GETROUTE, [rtmsg({ family, dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0 })], 'list routes')
  const names = new Map((await listLinks(h)).map((l) => [l.index, l.name]))
  const out: RouteInfo[] = []
  for (const m of msgs) {
    const d = m.data
    if (d.readUInt8(7) !== RTN_UNICAST) continue
    const attrs = parseAttrs(d, 12)
    const table = u32(attrs.get(RTA.TABLE)) ?? d.readUInt8(4)
    if (table !== want) continue
    const fam = d.readUInt8(0)
    const dstLen = d.readUInt8(1)
    const dstRaw = attrs.get(RTA.DST)
    const gw = attrs.get(RTA.GATEWAY)
    const oif = u32(attrs.get(RTA.OIF))
    const src = attrs.get(RTA.PREFSRC)
    out.push({
      dst: dstRaw === undefined ? 'default' : `${formatIp(dstRaw)}/${dstLen}`,
      gateway: gw === undefined ? undefined : formatIp(gw),
      dev: oif === undefined ? undefined : names.get(oif),
      scope: scopeName(d.readUInt8(6)),
      table,
      metric: u32(attrs.get(RTA.PRIORITY)),
      src: src === undefined ? undefined : formatIp(src),
      family: fam === AF_INET ? 4 : 6,
    })
  }
  return out
}
