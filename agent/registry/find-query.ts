// NSM's Find queries over the registry (also the filters of its watches): name and url compared exactly when
// set, an endpoint's services and labels as subsets of the query's; results sorted by name.
import type { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'

export function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0
}

export function serviceMatches(ns: NetworkService, q?: NetworkService): boolean {
  if (q === undefined) return true
  return (q.name === '' || q.name === ns.name) && (q.payload === '' || q.payload === ns.payload)
}

export function endpointMatches(nse: NetworkServiceEndpoint, q?: NetworkServiceEndpoint): boolean {
  if (q === undefined) return true
  if (q.name !== '' && q.name !== nse.name) return false
  if (q.url !== '' && q.url !== nse.url) return false
  if (!q.networkServiceNames.every((s) => nse.networkServiceNames.includes(s))) return false
  for (const [service, want] of Object.entries(q.networkServiceLabels)) {
    const have = nse.networkServiceLabels[service]?.labels ?? {}
    for (const [k, v] of Object.entries(want.labels)) if (have[k] !== v) return false
  }
  return true
}
