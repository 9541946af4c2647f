// Validation of registry input (NSM registry messages and our EndpointExtension) before anything is
// stored: each failure is an AgentError INVALID_ARGUMENT (or BAD_NETNS) naming the field, in the proto's
// snake_case spelling, so a bad Register changes nothing.
import { parseCidr, parseIp } from '../../ipam/address.js'
import { networkServiceFromObject, type NetworkService as ConfNetworkService } from '../../conf/networkservice.js'
import { ConfError } from '../../conf/errors.js'
import { NetworkService, type NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import type { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'
import { checkNamespaces, checkPrefixes, checkSelector } from '../../conf/endpoint-policy.js'
import { AgentError } from '../errors.js'
import type { NetnsPolicy } from '../../pkg/netns-policy.js'

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/

/** Endpoint names: DNS-1123 subdomains, as Kubernetes object names (they key stores and show in tables). */
export function checkName(field: string, name: string): void {
  if (name === '') throw AgentError.invalid(field, 'is required')
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) {
    throw AgentError.invalid(field, `"${name}" is not a valid name (lower-case alphanumerics, '-' and '.', at most 253)`)
  }
}

/** Validates a registry NetworkService; returns it in the selection layer's form (conf/networkservice.ts). */
export function validateService(ns: NetworkService, field = 'network_service'): ConfNetworkService {
  checkName(`${field}.name`, ns.name)
  const { pathIds: _pathIds, ...rest } = NetworkService.toJSON(ns) as Record<string, unknown>
  try {
    return networkServiceFromObject(rest)
  } catch (err) {
    if (err instanceof ConfError) throw AgentError.invalid(`${field}.${snake(err.path)}`, err.message.replace(/^.*?: /, ''))
    throw err
  }
}

export interface EndpointRules {
  /** The agent's one netns policy (pkg/netns-policy.ts), the same the pipeline applies. */
  netns: NetnsPolicy
  now: number
}

export function validateEndpoint(nse: NetworkServiceEndpoint, rules: EndpointRules, field = 'network_service_endpoint'): void {
  checkName(`${field}.name`, nse.name)
  if (nse.networkServiceNames.length === 0) throw AgentError.invalid(`${field}.network_service_names`, 'must list at least one service')
  const seen = new Set<string>()
  nse.networkServiceNames.forEach((s, i) => {
    checkName(`${field}.network_service_names[${i}]`, s)
    if (seen.has(s)) throw AgentError.invalid(`${field}.network_service_names[${i}]`, `"${s}" is listed twice`)
    seen.add(s)
  })
  for (const [service, labels] of Object.entries(nse.networkServiceLabels)) {
    const where = `${field}.network_service_labels[${service}]`
    if (!seen.has(service)) throw AgentError.invalid(where, `"${service}" is not in network_service_names`)
    for (const [k, v] of Object.entries(labels.labels)) {
      if (!QUALIFIED_NAME.test(k) || k.length > 316) throw AgentError.invalid(`${where}.labels`, `"${k}" is not a valid label key`)
      if (v.length > 63 || !LABEL_VALUE.test(v)) throw AgentError.invalid(`${where}.labels.${k}`, `"${v}" is not a valid label value`)
    }
  }
  if (nse.url !== '') checkUrl(`${field}.url`, nse.url, rules.netns)
  if (nse.expirationTime !== undefined) {
    const ms = nse.expirationTime.seconds * 1000 + Math.floor(nse.expirationTime.nanos / 1e6)
    if (ms <= rules.now) throw AgentError.invalid(`${field}.expiration_time`, 'is in the past')
  }
}

/** `file:///path/to/netns` (netns policy), `unix:///path/to.sock` or `tcp://host:port`. */
function checkUrl(field: string, url: string, netns: NetnsPolicy): void {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw AgentError.invalid(field, `"${url}" is not a URL`)
  }
  if (u.protocol === 'file:') {
    checkNetns(field, decodeURIComponent(u.pathname), netns)
  } else if (u.protocol !== 'unix:' && u.protocol !== 'tcp:') {
    throw AgentError.invalid(field, `"${url}": scheme must be file (a netns), unix or tcp`)
  }
}

/** A netns path the policy refuses is BAD_NETNS naming the field (the policy's message names the path). */
function checkNetns(field: string, path: string, netns: NetnsPolicy): void {
  try {
    netns.check(path)
  } catch (err) {
    throw new AgentError('BAD_NETNS', `${field}: ${err instanceof Error ? err.message : String(err)}`, { field, cause: err })
  }
}

/** The netns path named by an endpoint url `file:///...`, or undefined. */
export function netnsFromUrl(url: string): string | undefined {
  if (!url.startsWith('file://')) return undefined
  try {
    return decodeURIComponent(new URL(url).pathname)
  } catch {
    return undefined
  }
}

export function validateExtension(ext: EndpointExtension, endpointName: string, rules: EndpointRules, field = 'extension'): void {
  if (ext.endpointName !== '' && ext.endpointName !== endpointName) {
    throw AgentError.invalid(`${field}.endpoint_name`, `"${ext.endpointName}" differs from the endpoint's name "${endpointName}"`)
  }
  if (ext.netnsPath !== '') checkNetns(`${field}.netns_path`, ext.netnsPath, rules.netns)
  ext.cidrPools.forEach((c, i) => checkCidr(`${field}.cidr_pools[${i}]`, c, true))
  ext.excludedPrefixes.forEach((c, i) => checkCidr(`${field}.excluded_prefixes[${i}]`, c, false))
  ext.routes.forEach((r, i) => {
    checkCidr(`${field}.routes[${i}].prefix`, r.prefix, false)
    if (r.nextHop !== '' && parseIp(r.nextHop) === undefined) throw AgentError.invalid(`${field}.routes[${i}].nextHop`, `"${r.nextHop}" is not an IP address`)
  })
  if (ext.nodeName !== '' && !DNS_SUBDOMAIN.test(ext.nodeName)) throw AgentError.invalid(`${field}.node_name`, `"${ext.nodeName}" is not a valid node name`)
}

/** `a.b.c.d/len` or `v6/len`; pools must leave room for a pair (v4 /31 at most, v6 /127). */
export function checkCidr(field: string, cidr: string, pool: boolean): void {
  const c = parseCidr(cidr)
  if (c === undefined) throw AgentError.invalid(field, `"${cidr}" is not a CIDR (address/prefix-length)`)
  if (pool && c.prefix > (c.ip.family === 6 ? 127 : 31)) throw AgentError.invalid(field, `"${cidr}" is too small for a point-to-point pair`)
}

function snake(path: string): string {
  return path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
}

/** Validates a service's registration policy (proto/nsmcni ServicePolicy); returns it in canonical form. */
export function validatePolicy(policy: ServicePolicy, field = 'policy'): ServicePolicy {
  try {
    if (policy.namespace !== '' && checkNamespaces([policy.namespace], 'namespace')[0] === '*') {
      throw AgentError.invalid(`${field}.namespace`, 'must be a namespace, not "*"')
    }
    return {
      namespace: policy.namespace,
      endpointNamespaces: checkNamespaces(policy.endpointNamespaces, 'endpointNamespaces'),
      endpointSelector: checkSelector(policy.endpointSelector, 'endpointSelector'),
      endpointRoutes: checkPrefixes(policy.endpointRoutes, 'endpointRoutes'),
      endpointPools: checkPrefixes(policy.endpointPools, 'endpointPools'),
    }
  } catch (err) {
    if (!(err instanceof ConfError)) throw err
    const path = err.path.replace(/^namespace\[0\]$/, 'namespace')
    throw AgentError.invalid(`${field}.${snake(path)}`, err.message.slice(err.path.length + 2))
  }
}
