// conf/endpoint-policy.ts: the registration policy (ARCHITECTURE §5) — which pods may offer which network
// services through the `endpoint.networkservicemesh.io` annotation, and what routes and pools they may offer.
//
// Two sources of rules, either of which may admit an offer:
//   - the NetworkService itself: its manifest's `metadata.namespace` (the service lives there: pods of that
//     namespace may offer it) and the annotations
//       nsm-cni.io/endpoint-namespaces  "ns-a,ns-b" or "*"   namespaces whose pods may offer it (default:
//                                                           the service's own)
//       nsm-cni.io/endpoint-selector    "app=fw,tier=edge"   labels an offering pod must carry
//       nsm-cni.io/endpoint-routes      "10.60.0.0/16,..."   every offered route must lie within one
//       nsm-cni.io/endpoint-pools       "172.16.0.0/12,..."  every offered pool (cidr=) must lie within one
//   - the agent config's `endpointPolicy` list, each rule naming services ("*": any), namespaces ("*": any),
//     and optionally podSelector, routes and pools as above.
// Default, with neither: refused. A service that declares no namespace admits no pod by itself.
// Endpoints registered through the agent's API (root on its socket) are not judged here.
//
// Needs: ipam/address.ts (the ip-address library): agent and nsmctl only, never the CNI plugins.
import { formatCidr, networkOf, parseCidr, contains } from '../ipam/address.js'
import { ConfError } from './errors.js'
import { isValidLabelKey, isValidLabelValue } from './names.js'

/** Field for field the agent API's ServicePolicy (proto/nsmcni). */
export interface ServicePolicy {
  namespace: string
  endpointNamespaces: string[]
  endpointSelector: { [key: string]: string }
  endpointRoutes: string[]
  endpointPools: string[]
}

export const POLICY_ANNOTATION_PREFIX = 'nsm-cni.io/'
export const POLICY_ANNOTATIONS = {
  namespaces: 'nsm-cni.io/endpoint-namespaces',
  selector: 'nsm-cni.io/endpoint-selector',
  routes: 'nsm-cni.io/endpoint-routes',
  pools: 'nsm-cni.io/endpoint-pools',
} as const

/** One rule that may admit an offer. */
export interface OfferRule {
  /** Where the rule comes from, for messages: `service secure-intranet`, `agent config endpointPolicy[0]`. */
  readonly source: string
  /** Service names, or ["*"]. */
  readonly services: readonly string[]
  /** Namespaces, or ["*"]. */
  readonly namespaces: readonly string[]
  readonly selector: Readonly<Record<string, string>>
  /** Bounds; empty = unbounded. */
  readonly routes: readonly string[]
  readonly pools: readonly string[]
}

export interface Offer {
  readonly service: string
  readonly cidrs: readonly string[]
  readonly routes: readonly string[]
}

export interface OfferingPod {
  readonly namespace: string
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/

/** Namespaces: DNS-1123 labels, or the single wildcard "*". */
export function checkNamespaces(list: readonly string[], path: string): string[] {
  for (const [i, ns] of list.entries()) {
    if (ns === '*') continue
    if (!DNS1123_LABEL.test(ns)) throw new ConfError('INVALID_FIELD', `${JSON.stringify(ns)} is not a namespace (a DNS-1123 label) nor "*"`, { path: `${path}[${i}]` })
  }
  return [...list]
}

/** Prefixes in canonical form (host bits must be clear). */
export function checkPrefixes(list: readonly string[], path: string): string[] {
  return list.map((p, i) => {
    const c = parseCidr(p)
    if (c === undefined) throw new ConfError('INVALID_FIELD', `${JSON.stringify(p)} is not a CIDR prefix`, { path: `${path}[${i}]` })
    const canonical = formatCidr({ ip: networkOf(c), prefix: c.prefix })
    if (canonical !== formatCidr(c)) throw new ConfError('INVALID_FIELD', `${p} has host bits set (the prefix is ${canonical})`, { path: `${path}[${i}]` })
    return canonical
  })
}

export function checkSelector(selector: Readonly<Record<string, unknown>>, path: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(selector)) {
    if (!isValidLabelKey(k)) throw new ConfError('INVALID_FIELD', `${JSON.stringify(k)} is not a label key`, { path: `${path}.${k}` })
    if (typeof v !== 'string' || !isValidLabelValue(v)) throw new ConfError('INVALID_FIELD', `${JSON.stringify(v)} is not a label value`, { path: `${path}.${k}` })
    out[k] = v
  }
  return out
}

const commaList = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')

/**
 * The policy a NetworkService manifest declares: `metadata.namespace` and the nsm-cni.io/endpoint-*
 * annotations; undefined when it declares none. An unknown nsm-cni.io/ annotation is an error (a typo must
 * not silently open a service).
 */
export function policyFromMetadata(metadata: Readonly<Record<string, unknown>>, path = 'metadata', document?: number): ServicePolicy | undefined {
  try {
    return readPolicy(metadata, path)
  } catch (err) {
    if (err instanceof ConfError && document !== undefined) throw new ConfError(err.code, err.message.slice(err.path.length + 2), { path: err.path, document })
    throw err
  }
}

function readPolicy(metadata: Readonly<Record<string, unknown>>, path: string): ServicePolicy | undefined {
  const ns = metadata.namespace
  if (ns !== undefined && ns !== null && (typeof ns !== 'string' || !DNS1123_LABEL.test(ns))) {
    throw new ConfError('INVALID_FIELD', `${JSON.stringify(ns)} is not a namespace (a DNS-1123 label)`, { path: `${path}.namespace` })
  }
  const raw = metadata.annotations
  const annotations: Record<string, unknown> = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {}
  if (raw !== undefined && raw !== null && annotations !== raw) throw new ConfError('INVALID_FIELD', 'must be a map', { path: `${path}.annotations` })
  const known: readonly string[] = Object.values(POLICY_ANNOTATIONS)
  const text = (key: string): string | undefined => {
    const v = annotations[key]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'string') throw new ConfError('INVALID_FIELD', 'must be a string', { path: `${path}.annotations["${key}"]` })
    return v
  }
  for (const key of Object.keys(annotations)) {
    if (key.startsWith(POLICY_ANNOTATION_PREFIX) && !known.includes(key)) {
      throw new ConfError('UNKNOWN_FIELD', `unknown annotation (expected one of ${known.join(', ')})`, { path: `${path}.annotations["${key}"]` })
    }
  }
  const at = (key: string): string => `${path}.annotations["${key}"]`
  const namespaces = text(POLICY_ANNOTATIONS.namespaces)
  const selector = text(POLICY_ANNOTATIONS.selector)
  const routes = text(POLICY_ANNOTATIONS.routes)
  const pools = text(POLICY_ANNOTATIONS.pools)
  if ((typeof ns !== 'string' || ns === '') && [namespaces, selector, routes, pools].every((x) => x === undefined)) return undefined
  const pairs: Record<string, string> = {}
  for (const item of commaList(selector ?? '')) {
    const eq = item.indexOf('=')
    if (eq <= 0) throw new ConfError('INVALID_FIELD', `${JSON.stringify(item)}: expected key=value`, { path: at(POLICY_ANNOTATIONS.selector) })
    pairs[item.slice(0, eq).trim()] = item.slice(eq + 1).trim()
  }
  return {
    namespace: typeof ns === 'string' ? ns : '',
    endpointNamespaces: checkNamespaces(commaList(namespaces ?? ''), at(POLICY_ANNOTATIONS.namespaces)),
    endpointSelector: checkSelector(pairs, at(POLICY_ANNOTATIONS.selector)),
    endpointRoutes: checkPrefixes(commaList(routes ?? ''), at(POLICY_ANNOTATIONS.routes)),
    endpointPools: checkPrefixes(commaList(pools ?? ''), at(POLICY_ANNOTATIONS.pools)),
  }
}

/** The rule a service's own policy amounts to; undefined when it admits nobody (no namespace, no list). */
export function serviceRule(service: string, policy: ServicePolicy | undefined): OfferRule | undefined {
  if (policy === undefined) return undefined
  const namespaces = policy.endpointNamespaces.length > 0 ? policy.endpointNamespaces : policy.namespace !== '' ? [policy.namespace] : []
  if (namespaces.length === 0) return undefined
  return {
    source: `service ${service}`,
    services: [service],
    namespaces,
    selector: policy.endpointSelector,
    routes: policy.endpointRoutes,
    pools: policy.endpointPools,
  }
}

const within = (prefix: string, bounds: readonly string[]): boolean => {
  const c = parseCidr(prefix)
  if (c === undefined) return false
  return bounds.some((b) => {
    const bound = parseCidr(b)
    return bound !== undefined && bound.ip.family === c.ip.family && c.prefix >= bound.prefix && contains(bound, networkOf(c))
  })
}

/**
 * Judges one offer of `pod` against the rules that name its service: undefined when one admits it whole
 * (namespace, labels, every route and pool within bounds), else why not, naming what was missing.
 */
export function judgeOffer(offer: Offer, pod: OfferingPod, rules: readonly OfferRule[]): string | undefined {
  const who = `pod ${pod.namespace}/${pod.name}`
  const named = rules.filter((r) => r.services.includes('*') || r.services.includes(offer.service))
  if (named.length === 0) {
    return `${who} may not offer service ${offer.service}: the service declares no namespace or endpoint-namespaces and no endpointPolicy rule of the agent names it`
  }
  const reasons: string[] = []
  for (const r of named) {
    if (!r.namespaces.includes('*') && !r.namespaces.includes(pod.namespace)) {
      reasons.push(`${r.source} admits namespaces ${r.namespaces.join(', ')}`)
      continue
    }
    const missing = Object.entries(r.selector).filter(([k, v]) => pod.labels[k] !== v)
    if (missing.length > 0) {
      reasons.push(`${r.source} needs labels ${missing.map(([k, v]) => `${k}=${v}`).join(', ')}`)
      continue
    }
    const badRoutes = r.routes.length === 0 ? [] : offer.routes.filter((p) => !within(p, r.routes))
    const badPools = r.pools.length === 0 ? [] : offer.cidrs.filter((p) => !within(p, r.pools))
    if (badRoutes.length > 0) {
      reasons.push(`${r.source} bounds routes to ${r.routes.join(', ')}, not ${badRoutes.join(', ')}`)
      continue
    }
    if (badPools.length > 0) {
      reasons.push(`${r.source} bounds pools to ${r.pools.join(', ')}, not ${badPools.join(', ')}`)
      continue
    }
    return undefined
  }
  return `${who} may not offer service ${offer.service}: ${reasons.join('; ')}`
}
