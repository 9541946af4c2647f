// Registry endpoints as selection candidates (agent/select's EndpointCandidate), for the select element,
// healing and `nsmctl explain`. An endpoint is local when its extension names no node or this node.
import type { EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import type { NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import type { Registry } from './registry.js'
import type { StoredEndpoint } from './records.js'
import { timestampMs } from './records.js'

export interface RegistryCandidate {
  name: string
  networkServiceNames: readonly string[]
  networkServiceLabels: Readonly<Record<string, Readonly<Record<string, string>>>>
  expiresAt?: number
  local: boolean
  endpoint: NetworkServiceEndpoint
  extension: EndpointExtension
}

export function toCandidate(e: StoredEndpoint, nodeName: string): RegistryCandidate {
  const expiresAt = timestampMs(e.endpoint.expirationTime)
  return {
    name: e.endpoint.name,
    networkServiceNames: e.endpoint.networkServiceNames,
    networkServiceLabels: Object.fromEntries(Object.entries(e.endpoint.networkServiceLabels).map(([s, l]) => [s, l.labels])),
    ...(expiresAt === undefined ? {} : { expiresAt }),
    local: e.extension.nodeName === '' || e.extension.nodeName === nodeName,
    endpoint: e.endpoint,
    extension: e.extension,
  }
}

/** Every live endpoint as a candidate (selection itself filters by service). */
export function endpointCandidates(registry: Registry, nodeName: string): RegistryCandidate[] {
  return registry.findEndpoints().map((e) => toCandidate(e, nodeName))
}
