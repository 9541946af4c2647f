// Endpoint pods (ARCHITECTURE §5): a pod annotated `endpoint.networkservicemesh.io` is
// registered at ADD as one endpoint per offered service (its netns = CNI_NETNS, labels = pod labels +
// the entry's labels, pools = the entry's `cidr`s, offered routes = its `route`s) and unregistered at DEL.
//
// Names: `<service>.cni-<container id>` (an id that had to be changed to fit a DNS name gets
// `cnh-<clean>-<hash>`; one name per id, conf/endpoint-names.ts), so DEL finds them from CNI_CONTAINERID
// alone, even when the pod is gone from the API. A live endpoint of that name in another netns is never
// replaced (106).
// Policy: before anything is registered, every offer must be admitted by the registration policy (the
// service's own, or the agent config's rules: conf/endpoint-policy.ts); a refusal is 112 and logged.
// All offers of a pod are registered as one registry write, and unregistered as one.
// Lifetime: on the file store (one node) registrations made here never need a refresh (the plugin runs
// once per ADD, there is no one to refresh them): they carry an expiration ten years out, and end by DEL,
// or by the agent's healer, which unregisters an endpoint whose netns has disappeared (a pod removed
// without DEL). On a shared store they live the agent's endpoint TTL and the agent rewrites them
// (refreshCniEndpoints): a node that dies takes its endpoint pods out of the cluster's registry.
import type { EndpointOffer } from '../../conf/annotations.js'
import { endpointName, isCniEndpointName, isContainerEndpoint } from '../../conf/endpoint-names.js'
import type { EndpointRegistration } from '../../proto/gen/nsmcni/nsmcni.js'
import { CniCode, CniError } from '../../cni/protocol/index.js'
import type { Registry } from '../registry/registry.js'
import { netnsFileUrl } from '../../pkg/netns-url.js'
import { judgeOffer, serviceRule, type OfferingPod } from '../../conf/endpoint-policy.js'
import type { CniDeps } from './deps.js'

/** Ten years: CNI-registered endpoints live until DEL (see above). */
export const CNI_ENDPOINT_LIFETIME_S = 10 * 365 * 24 * 3600

export interface EndpointPod {
  containerId: string
  netns: string
  labels: Record<string, string>
  nodeName: string
}

export function registration(offer: EndpointOffer, pod: EndpointPod, nowMs: number, lifetimeMs = CNI_ENDPOINT_LIFETIME_S * 1000): EndpointRegistration {
  const name = endpointName(offer.service, pod.containerId)
  const expires = Math.floor((nowMs + lifetimeMs) / 1000)
  return {
    endpoint: {
      name,
      networkServiceNames: [offer.service],
      networkServiceLabels: { [offer.service]: { labels: { ...pod.labels, ...offer.labels } } },
      url: netnsFileUrl(pod.netns),
      expirationTime: { seconds: expires, nanos: 0 },
      initialRegistrationTime: undefined,
      pathIds: [],
    },
    extension: {
      endpointName: name,
      netnsPath: pod.netns,
      cidrPools: offer.cidrs,
      routes: offer.routes.map((prefix) => ({ prefix, nextHop: '' })),
      excludedPrefixes: [],
      nodeName: pod.nodeName,
    },
  }
}

/** Checks what the agent cannot: an endpoint without a pool could never serve a client. */
export function checkOffers(offers: readonly EndpointOffer[]): void {
  offers.forEach((o, i) => {
    if (o.cidrs.length === 0) {
      throw new CniError(CniCode.ANNOTATION_INVALID, `pod annotation endpoint.networkservicemesh.io[${i}]: ${JSON.stringify(o.entry)}: an endpoint needs an address pool (cidr=...)`)
    }
  })
}

/**
 * Names are injective per container id (conf/endpoint-names.ts); this is the backstop: a live endpoint of
 * that name in another netns (someone else's: registered by hand, or a hash collision) is never replaced.
 */
function refuseForeign(registry: Registry, name: string, pod: EndpointPod): void {
  const existing = registry.endpoint(name)
  if (existing === undefined || existing.extension.netnsPath === pod.netns) return
  throw new CniError(CniCode.ALREADY_ATTACHED, `endpoint ${name} (container ${pod.containerId}): the name is registered already for netns ${existing.extension.netnsPath || existing.endpoint.url}, not this container's ${pod.netns}; it is left as it is`)
}

/**
 * The registration policy (conf/endpoint-policy.ts): every offer must be admitted, by its service's own
 * policy or a rule of the agent's config, before anything is registered. A refusal is logged and answered
 * 112 naming the entry and what the rules wanted.
 */
export function refuseUnauthorized(deps: Pick<CniDeps, 'registry' | 'endpointPolicy' | 'log'>, offers: readonly EndpointOffer[], pod: OfferingPod & { containerId: string }): void {
  offers.forEach((o, i) => {
    const own = serviceRule(o.service, deps.registry.servicePolicy(o.service))
    const why = judgeOffer(o, pod, own === undefined ? deps.endpointPolicy : [...deps.endpointPolicy, own])
    if (why === undefined) return
    deps.log.warn('endpoint offer refused by the registration policy', { pod: `${pod.namespace}/${pod.name}`, containerId: pod.containerId, service: o.service, entry: o.entry, reason: why })
    throw new CniError(CniCode.ENDPOINT_NOT_ALLOWED, `pod annotation endpoint.networkservicemesh.io[${i}]: ${JSON.stringify(o.entry)}: ${why}`)
  })
}

/** Registers every offer as one registry write (all or none). */
export async function registerOffers(registry: Registry, offers: readonly EndpointOffer[], pod: EndpointPod, lifetimeMs?: number): Promise<string[]> {
  const now = Date.now()
  const regs = offers.map((o) => registration(o, pod, now, lifetimeMs))
  for (const reg of regs) if (reg.endpoint !== undefined) refuseForeign(registry, reg.endpoint.name, pod)
  const stored = await registry.registerEndpoints(regs.flatMap((r) => (r.endpoint === undefined ? [] : [{ endpoint: r.endpoint, extension: r.extension }])))
  return stored.map((s) => s.endpoint.name)
}

/** Unregisters `names` as one registry write; one already gone is what the caller wants. */
export async function unregisterNames(registry: Registry, names: readonly string[]): Promise<void> {
  await registry.unregisterEndpoints(names)
}

/**
 * Shared stores: the CNI endpoints of this node live `lifetimeMs` and are rewritten here (one batch) well
 * before that, so they outlive no dead agent. Resolves with how many were refreshed.
 */
export async function refreshCniEndpoints(registry: Registry, nodeName: string, lifetimeMs: number, now = Date.now()): Promise<number> {
  const expirationTime = { seconds: Math.floor((now + lifetimeMs) / 1000), nanos: 0 }
  const mine = registry.findEndpoints().filter((e) => e.extension.nodeName === nodeName && isCniEndpointName(e.endpoint.name))
  const regs = mine.map((e) => ({ endpoint: { ...e.endpoint, expirationTime }, extension: e.extension }))
  try {
    await registry.registerEndpoints(regs)
    return regs.length
  } catch (err) {
    // One that no longer validates (its netns is gone: the healer unregisters it) must not hold back the
    // others: one by one, and the first failure is reported after.
    let refreshed = 0
    for (const r of regs) await registry.registerEndpoints([r]).then(() => refreshed++, () => undefined)
    if (refreshed < regs.length) throw err
    return refreshed
  }
}

/** Unregisters every endpoint a CNI ADD registered for this container (found by name: no pod lookup). */
export async function unregisterContainer(registry: Registry, containerId: string): Promise<string[]> {
  const names = registry.findEndpoints().map((s) => s.endpoint.name).filter((n) => isContainerEndpoint(n, containerId))
  await unregisterNames(registry, names)
  return names
}
