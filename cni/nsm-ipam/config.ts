// The nsm-ipam configuration: host-local's `ipam` section (so a network can switch between the two by
// changing `type`), plus where the requested addresses come from.
//
//   "ipam": { "type": "nsm-ipam", "ranges": [[{"subnet", "rangeStart", "rangeEnd", "gateway"}]],
//             "subnet": …, "rangeStart": …, "rangeEnd": …, "gateway": …,   (one range, old style)
//             "routes": [{"dst", "gw"}], "dataDir": "/var/lib/cni/nsm-ipam", "resolvConf": "/etc/…" }
//
// Requested addresses, first source that has any: `args.cni.ips` (config args win over CNI_ARGS, as the
// spec's CONVENTIONS.md deprecates CNI_ARGS), `runtimeConfig.ips` (the "ips" capability), CNI_ARGS `IP`.
// `runtimeConfig.ipRanges` (capability) range sets come before the configured ones, as in host-local.
// Every problem is a CniError naming the field; nothing is read from or written to the store here.
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs'
import { CniCode, CniError, type CniDns, type CniRoute, type CallContext } from '../protocol/index'
import { IpamError } from '../../ipam/range/errors'
import { parseCidr, parseIp, type Ip } from '../../ipam/range/ip'
import { canonicalizeRangeSets, type RangeSet, type RangeSetInput } from '../../ipam/range/range'
import { storeDirProblem } from '../../ipam/store/pseudo-fs'

export const DEFAULT_DATA_DIR = '/var/lib/cni/nsm-ipam'

export const KNOWN_CNI_ARGS = ['IP', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID'] as const

const IPAM_FIELDS = new Set(['type', 'subnet', 'rangeStart', 'rangeEnd', 'gateway', 'ranges', 'routes', 'dataDir', 'resolvConf'])

export interface IpamConfig {
  network: string
  dataDir: string
  rangeSets: RangeSet[]
  routes: CniRoute[]
  dns: CniDns | undefined
  requested: Ip[]
}

const bad = (msg: string): CniError => new CniError(CniCode.INVALID_CONFIG, msg)

function parseRoutes(v: unknown): CniRoute[] {
  if (v === undefined || v === null) return []
  if (!Array.isArray(v)) throw bad(`ipam.routes: expected a list of {"dst", "gw"}, got ${JSON.stringify(v)}`)
  return v.map((raw, i) => {
    const f = `ipam.routes[${i}]`
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(`${f}: expected an object, got ${JSON.stringify(raw)}`)
    const r = raw as Record<string, unknown>
    if (typeof r.dst !== 'string' || parseCidr(r.dst) === undefined) throw bad(`${f}.dst: ${JSON.stringify(r.dst)} is not a CIDR`)
    const route: CniRoute = { dst: r.dst }
    if (r.gw !== undefined && r.gw !== '') {
      const gw = typeof r.gw === 'string' ? parseIp(r.gw) : undefined
      if (gw === undefined) throw bad(`${f}.gw: ${JSON.stringify(r.gw)} is not an IP address`)
      if (gw.family !== (parseCidr(r.dst) as { ip: Ip }).ip.family) throw bad(`${f}.gw: ${r.gw} is not of the family of dst ${r.dst}`)
      route.gw = r.gw as string
    }
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
      const x = r[k]
      if (x === undefined) continue
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) throw bad(`${f}.${k}: expected a non-negative integer, got ${JSON.stringify(x)}`)
      route[k] = x
    }
    return route
  })
}

/** resolv.conf is a few lines; a bigger file is not one. */
export const MAX_RESOLV_CONF_BYTES = 64 * 1024

function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  if (st.isSocket()) return 'a socket'
  return 'not a file'
}

/**
 * The bytes of a regular file of at most MAX_RESOLV_CONF_BYTES. Opened non-blocking (a FIFO without a
 * writer would block the open), then fstat: anything but a regular file (/dev/zero, a FIFO) is refused
 * before a byte is read, and reading stops past the cap (a /proc file says size 0).
 */
function readSmallRegularFile(path: string, field: string): string {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (err) {
    throw bad(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw bad(`${field}: ${path} is not a regular file (${fileKind(st)})`)
    const tooBig = (): CniError => bad(`${field}: ${path} is larger than ${MAX_RESOLV_CONF_BYTES} bytes: not a resolv.conf`)
    if (st.size > MAX_RESOLV_CONF_BYTES) throw tooBig()
    const buf = Buffer.alloc(MAX_RESOLV_CONF_BYTES + 1)
    let len = 0
    for (;;) {
      const n = readSync(fd, buf, len, buf.length - len, null)
      if (n === 0) break
      len += n
      if (len > MAX_RESOLV_CONF_BYTES) throw tooBig()
    }
    return buf.subarray(0, len).toString('utf8')
  } catch (err) {
    if (err instanceof CniError) throw err
    throw bad(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  } finally {
    closeSync(fd)
  }
}

/** Reads nameserver/domain/search/options from a resolv.conf-format file (a regular file, 64 KiB at most). */
function readResolvConf(path: unknown): CniDns | undefined {
  if (path === undefined || path === '') return undefined
  if (typeof path !== 'string') throw bad(`ipam.resolvConf: expected a path, got ${JSON.stringify(path)}`)
  const text = readSmallRegularFile(path, 'ipam.resolvConf')
  const dns: CniDns = {}
  for (const line of text.split('\n')) {
    const [key, ...rest] = line.trim().split(/\s+/)
    if (key === 'nameserver' && rest[0] !== undefined) (dns.nameservers ??= []).push(rest[0])
    else if (key === 'domain' && rest[0] !== undefined) dns.domain = rest[0]
    else if (key === 'search') dns.search = rest
    else if (key === 'options') (dns.options ??= []).push(...rest)
  }
  return dns
}

function requestedList(v: unknown, field: string): Ip[] {
  if (!Array.isArray(v)) throw bad(`${field}: expected a list of IP addresses, got ${JSON.stringify(v)}`)
  return v.map((s, i) => {
    // Accept "10.0.0.5" and "10.0.0.5/24" (the "ips" capability uses CIDR notation).
    const ip = typeof s === 'string' ? (parseIp(s) ?? parseCidr(s)?.ip) : undefined
    if (ip === undefined) throw bad(`${field}[${i}]: ${JSON.stringify(s)} is not an IP address`)
    return ip
  })
}

function requestedAddresses(ctx: CallContext): Ip[] {
  const fromArgs = ctx.conf.cniArgs?.ips
  if (fromArgs !== undefined && fromArgs !== null) return requestedList(fromArgs, 'args.cni.ips')
  const fromRuntime = ctx.conf.runtimeConfig?.ips
  if (fromRuntime !== undefined && fromRuntime !== null) return requestedList(fromRuntime, 'runtimeConfig.ips')
  const env = ctx.envArgs.get('IP')
  if (env !== undefined && env !== '') {
    const ips = env.split(',').map((s) => parseIp(s))
    const badIdx = ips.findIndex((x) => x === undefined)
    if (badIdx >= 0) throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS: IP=${env} is not a list of IP addresses`)
    return ips as Ip[]
  }
  return []
}

/** `resolvConf` is read for ADD only: a DEL must not fail because a DNS file went away. */
export function parseIpamConfig(ctx: CallContext): IpamConfig {
  const ipamRaw = ctx.conf.raw.ipam
  if (ipamRaw === undefined || ipamRaw === null) throw bad('ipam: missing (nsm-ipam reads its settings from the "ipam" object)')
  if (typeof ipamRaw !== 'object' || Array.isArray(ipamRaw)) throw bad(`ipam: expected an object, got ${JSON.stringify(ipamRaw)}`)
  const ipam = ipamRaw as Record<string, unknown>
  for (const [k, v] of Object.entries(ipam)) {
    if (!IPAM_FIELDS.has(k)) throw new CniError(CniCode.UNSUPPORTED_FIELD, `ipam.${k}: unsupported field (value ${JSON.stringify(v)})`)
  }
  const dataDir = ipam.dataDir ?? DEFAULT_DATA_DIR
  if (typeof dataDir !== 'string' || !dataDir.startsWith('/')) throw bad(`ipam.dataDir: expected an absolute path, got ${JSON.stringify(dataDir)}`)
  const dirProblem = storeDirProblem(dataDir)
  if (dirProblem !== undefined) throw bad(`ipam.dataDir: ${dirProblem}`)

  const sets: RangeSetInput[] = []
  const runtimeRanges = ctx.conf.runtimeConfig?.ipRanges
  if (runtimeRanges !== undefined && runtimeRanges !== null) {
    if (!Array.isArray(runtimeRanges)) throw bad(`runtimeConfig.ipRanges: expected a list of range sets, got ${JSON.stringify(runtimeRanges)}`)
    runtimeRanges.forEach((r: unknown, i: number) => sets.push({ field: `runtimeConfig.ipRanges[${i}]`, ranges: r }))
  }
  if (ipam.subnet !== undefined) {
    sets.push({ field: 'ipam', ranges: [{ subnet: ipam.subnet, rangeStart: ipam.rangeStart, rangeEnd: ipam.rangeEnd, gateway: ipam.gateway }], single: true })
  } else {
    for (const k of ['rangeStart', 'rangeEnd', 'gateway'] as const) {
      if (ipam[k] !== undefined) throw bad(`ipam.${k}: only valid together with ipam.subnet (use ipam.ranges otherwise)`)
    }
  }
  if (ipam.ranges !== undefined) {
    if (!Array.isArray(ipam.ranges)) throw bad(`ipam.ranges: expected a list of range sets, got ${JSON.stringify(ipam.ranges)}`)
    ipam.ranges.forEach((r: unknown, i: number) => sets.push({ field: `ipam.ranges[${i}]`, ranges: r }))
  }
  let rangeSets: RangeSet[]
  try {
    rangeSets = canonicalizeRangeSets(sets)
  } catch (err) {
    if (err instanceof IpamError) throw bad(err.message)
    throw err
  }
  return {
    network: ctx.conf.name,
    dataDir,
    rangeSets,
    routes: parseRoutes(ipam.routes),
    dns: ctx.env.command === 'ADD' ? readResolvConf(ipam.resolvConf) : undefined,
    requested: requestedAddresses(ctx),
  }
}
