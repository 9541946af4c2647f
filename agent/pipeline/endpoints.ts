// Registry entries as the pipeline sees them: StoredEndpoint (NSM message + our extension) -> EndpointInfo.
import type { StoredEndpoint } from '../registry/records.js'
import { timestampMs } from '../registry/records.js'
import { netnsFromUrl } from '../registry/validate.js'
import type { EndpointInfo } from './types.js'

/** Undefined for an endpoint without a netns that does not serve the NSM API either (nothing reaches it). */
export function endpointInfo(s: StoredEndpoint, nodeName: string): EndpointInfo | undefined {
  const netns = s.extension.netnsPath !== '' ? s.extension.netnsPath : netnsFromUrl(s.endpoint.url)
  const api = /^(unix|tcp):\/\//.test(s.endpoint.url) ? s.endpoint.url : undefined
  if ((netns === undefined || netns === '') && api === undefined) return undefined
  const labels: Record<string, Record<string, string>> = {}
  for (const [svc, l] of Object.entries(s.endpoint.networkServiceLabels)) labels[svc] = { ...(l?.labels ?? {}) }
  const expiresAt = timestampMs(s.endpoint.expirationTime)
  return {
    name: s.endpoint.name,
    networkServiceNames: s.endpoint.networkServiceNames,
    networkServiceLabels: labels,
    ...(expiresAt === undefined ? {} : { expiresAt }),
    local: s.extension.nodeName === '' || s.extension.nodeName === nodeName,
    node: s.extension.nodeName,
    netns: netns ?? '',
    ...(api === undefined || (netns !== undefined && netns !== '') ? {} : { api }),
    pools: s.extension.cidrPools,
    routes: s.extension.routes.map((r) => r.prefix),
  }
}
