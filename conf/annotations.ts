// conf/annotations.ts: the pod annotations that ask for network services or offer one (ARCHITECTURE §5).
//
// Needs: conf/errors.ts, conf/names.ts and `node:net` only: this module is bundled into the lean CNI plugin,
// so it must stay dependency-free (no yaml, no ip-address) and cheap to load.
// Contract: each parser takes an annotation value (a comma list; blank entries are ignored) and returns one
// item per entry, or throws ConfError code ANNOTATION_INVALID whose path is `<annotation key>[<index>]` and
// whose message quotes the offending entry (the CNI layer maps it to error 105, or 7 for netconf input).
//   legacy   ns.networkservicemesh.io        service[/ifname][?k=v&k2=v2]              mechanism kernel
//   v1       networkservicemesh.io           mech://service[@domain][/ifname][?k=v]    mech: kernel|memif|vfio
//                                            (no scheme: kernel; also the NSM_NETWORK_SERVICES syntax)
//   endpoint endpoint.networkservicemesh.io  service?label=value&cidr=172.16.1.0/24&route=10.0.0.0/8
//            `cidr` (address pool) and `route` (a prefix the endpoint offers behind it) may repeat and are
//            not labels; every other key is a label.
// Query keys and values are percent-decoded; keys must be label keys, values label values; a key given
// twice is an error. Interface names must be valid Linux names of at most 15 characters.
// The CNI plugins' hand-written address codec (ipam/range/ip.ts), not the ip-address library the agent uses (it
// costs each plugin exec measurable start-up: figures there) nor node:net's isIP (~4 ms per exec).
import { parseIp } from '../ipam/range/ip.js'
import { ConfError } from './errors.js'
import { MAX_IFNAME_LENGTH, isValidInterfaceName, isValidLabelKey, isValidLabelValue, isValidServiceName } from './names.js'

export const ANNOTATION_LEGACY = 'ns.networkservicemesh.io'
export const ANNOTATION_V1 = 'networkservicemesh.io'
export const ANNOTATION_ENDPOINT = 'endpoint.networkservicemesh.io'

export const MECHANISMS = ['kernel', 'memif', 'vfio'] as const
export type Mechanism = (typeof MECHANISMS)[number]

/** One interface a pod asks for. */
export interface ServiceRequest {
  service: string
  /** Interface name in the pod; absent = the CNI layer names it (CNI_IFNAME, or nsm-1, nsm-2, ...). */
  ifname?: string
  mechanism: Mechanism
  /** Registry domain (`service@domain`, v1 form only). */
  domain?: string
  /** Labels the client adds to its request (query part). */
  labels: Record<string, string>
  /** The entry as written, for messages. */
  entry: string
}

/** One service an endpoint pod offers. */
export interface EndpointOffer {
  service: string
  labels: Record<string, string>
  /** Address pools (CIDRs), in the order given. */
  cidrs: string[]
  /** Prefixes reachable through the endpoint, handed to its clients as routes. */
  routes: string[]
  entry: string
}

/** Parses the legacy `ns.networkservicemesh.io` value. */
export function parseLegacyAnnotation(value: string, key = ANNOTATION_LEGACY): ServiceRequest[] {
  return entries(value).map(([entry, i]) => {
    const fail = failer(key, i, entry)
    const { head, labels } = splitQuery(entry, fail, false)
    const [service = '', ifname, ...rest] = head.split('/')
    if (rest.length > 0) throw fail('expected service[/ifname][?labels]')
    return request(service, ifname, 'kernel', undefined, labels, entry, fail)
  })
}

/** Parses the NSM v1 `networkservicemesh.io` value (also the NSM_NETWORK_SERVICES list syntax). */
export function parseV1Annotation(value: string, key = ANNOTATION_V1): ServiceRequest[] {
  return entries(value).map(([entry, i]) => {
    const fail = failer(key, i, entry)
    let mechanism: Mechanism = 'kernel'
    let rest = entry
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(entry)
    if (scheme !== null) {
      const name = (scheme[1] ?? '').toLowerCase()
      const m = MECHANISMS.find((x) => x === name)
      if (m === undefined) throw fail(`unsupported mechanism ${name}:// (expected ${MECHANISMS.join(', ')})`)
      mechanism = m
      rest = entry.slice(scheme[0].length)
    } else if (entry.includes('://') || entry.includes(':')) {
      throw fail('expected mech://service[@domain][/ifname][?labels]')
    }
    const { head, labels } = splitQuery(rest, fail, false)
    const [authority = '', ifname, ...extra] = head.split('/')
    if (extra.length > 0) throw fail('expected mech://service[@domain][/ifname][?labels]')
    const at = authority.indexOf('@')
    const service = at < 0 ? authority : authority.slice(0, at)
    const domain = at < 0 ? undefined : authority.slice(at + 1)
    if (domain !== undefined && !isValidServiceName(domain)) throw fail(`invalid domain ${JSON.stringify(domain)}`)
    return request(service, ifname, mechanism, domain, labels, entry, fail)
  })
}

/** Parses the `endpoint.networkservicemesh.io` value. */
export function parseEndpointAnnotation(value: string, key = ANNOTATION_ENDPOINT): EndpointOffer[] {
  const seen = new Set<string>()
  return entries(value).map(([entry, i]) => {
    const fail = failer(key, i, entry)
    const { head, labels, cidrs, routes } = splitQuery(entry, fail, true)
    if (head.includes('/')) throw fail('endpoint entries are service?labels (no interface name)')
    if (!isValidServiceName(head)) throw fail(serviceProblem(head))
    if (seen.has(head)) throw fail(`service ${head} is offered twice`)
    seen.add(head)
    return { service: head, labels, cidrs, routes, entry }
  })
}

/**
 * The interfaces a pod's annotations ask for: the v1 key's entries, then the legacy key's. Throws when two
 * entries name the same interface.
 */
export function serviceRequestsFromAnnotations(annotations: Readonly<Record<string, string>>): ServiceRequest[] {
  const out: Array<ServiceRequest & { key: string; index: number }> = []
  const v1 = annotations[ANNOTATION_V1]
  const legacy = annotations[ANNOTATION_LEGACY]
  if (v1 !== undefined) out.push(...parseV1Annotation(v1).map((r, index) => ({ ...r, key: ANNOTATION_V1, index })))
  if (legacy !== undefined) out.push(...parseLegacyAnnotation(legacy).map((r, index) => ({ ...r, key: ANNOTATION_LEGACY, index })))
  const names = new Set<string>()
  return out.map(({ key, index, ...r }) => {
    if (r.ifname !== undefined) {
      if (names.has(r.ifname)) throw failer(key, index, r.entry)(`interface ${r.ifname} is requested twice`)
      names.add(r.ifname)
    }
    return r
  })
}

/** Names the requests that have no interface name `<prefix>1`, `<prefix>2`, ..., skipping names already taken. */
export function assignInterfaceNames(requests: readonly ServiceRequest[], prefix = 'nsm-'): Array<ServiceRequest & { ifname: string }> {
  const taken = new Set(requests.flatMap((r) => (r.ifname === undefined ? [] : [r.ifname])))
  let n = 0
  return requests.map((r) => {
    if (r.ifname !== undefined) return { ...r, ifname: r.ifname }
    let name: string
    do {
      n += 1
      name = `${prefix}${n}`
    } while (taken.has(name))
    if (!isValidInterfaceName(name)) throw failer('ifname', n - 1, name)(`generated interface name is invalid`)
    taken.add(name)
    return { ...r, ifname: name }
  })
}

function request(
  service: string,
  ifname: string | undefined,
  mechanism: Mechanism,
  domain: string | undefined,
  labels: Record<string, string>,
  entry: string,
  fail: Fail,
): ServiceRequest {
  if (!isValidServiceName(service)) throw fail(serviceProblem(service))
  const r: ServiceRequest = { service, mechanism, labels, entry }
  if (ifname !== undefined) {
    if (ifname.length > MAX_IFNAME_LENGTH) throw fail(`interface name ${ifname} is longer than ${MAX_IFNAME_LENGTH} characters`)
    if (!isValidInterfaceName(ifname)) throw fail(`invalid interface name ${JSON.stringify(ifname)}`)
    r.ifname = ifname
  }
  if (domain !== undefined) r.domain = domain
  return r
}

type Fail = (detail: string) => ConfError

function failer(key: string, index: number, entry: string): Fail {
  return (detail) => new ConfError('ANNOTATION_INVALID', `${JSON.stringify(entry)}: ${detail}`, { path: `${key}[${index}]` })
}

function serviceProblem(service: string): string {
  return service === '' ? 'missing service name' : `invalid service name ${JSON.stringify(service)} (lowercase DNS-1123 name)`
}

/** Non-blank entries of a comma list, trimmed, with their index among the non-blank ones. */
function entries(value: string): Array<[string, number]> {
  return value
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '')
    .map((e, i) => [e, i])
}

function splitQuery(entry: string, fail: Fail, endpoint: boolean): { head: string; labels: Record<string, string>; cidrs: string[]; routes: string[] } {
  const q = entry.indexOf('?')
  const head = q < 0 ? entry : entry.slice(0, q)
  const labels: Record<string, string> = {}
  const cidrs: string[] = []
  const routes: string[] = []
  if (q < 0) return { head, labels, cidrs, routes }
  for (const pair of entry.slice(q + 1).split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    if (eq < 0) throw fail(`label ${JSON.stringify(pair)} has no value (expected key=value)`)
    const k = decode(pair.slice(0, eq), fail)
    const v = decode(pair.slice(eq + 1), fail)
    if (endpoint && (k === 'cidr' || k === 'route')) {
      const problem = cidrProblem(v)
      if (problem !== undefined) throw fail(`${k} ${JSON.stringify(v)}: ${problem}`)
      ;(k === 'cidr' ? cidrs : routes).push(v)
      continue
    }
    if (!isValidLabelKey(k)) throw fail(`invalid label key ${JSON.stringify(k)}`)
    if (!isValidLabelValue(v)) throw fail(`invalid value ${JSON.stringify(v)} for label ${k}`)
    if (Object.hasOwn(labels, k)) throw fail(`label ${k} is given twice`)
    labels[k] = v
  }
  return { head, labels, cidrs, routes }
}

function decode(s: string, fail: Fail): string {
  try {
    return decodeURIComponent(s)
  } catch {
    throw fail(`bad percent-encoding in ${JSON.stringify(s)}`)
  }
}

/** Why `s` is not an IPv4/IPv6 CIDR, or undefined when it is one. */
export function cidrProblem(s: string): string | undefined {
  const slash = s.indexOf('/')
  if (slash < 0) return 'expected address/prefix-length'
  if (s.includes('%')) return 'zone indexes are not allowed'
  const family = parseIp(s.slice(0, slash))?.family
  if (family === undefined) return 'not an IP address'
  const len = s.slice(slash + 1)
  const max = family === 4 ? 32 : 128
  if (!/^\d{1,3}$/.test(len) || Number(len) > max) return `prefix length must be 0–${max}`
  return undefined
}
