// conf/endpoint-names.ts: the names of the endpoints a CNI ADD registers for an endpoint pod (ARCHITECTURE §5,
// `endpoint.networkservicemesh.io`): registered at ADD (agent/cni/endpoint.ts) and found again from the
// container id alone at DEL (agent/cni/del.ts).
//
// Needs: nothing (dependency-free).
// Contract: `<service>.cni-<key>`, the key a valid DNS label made from CNI_CONTAINERID (lower-cased; a
// hash appended when the id had to be changed, so ids that sanitize alike stay apart). The key has no
// dot, so `isContainerEndpoint` compares the name's whole last dot-separated part with this container's
// key: another container's endpoints (`.cni-abc-1` against `.cni-abc`) do not match.

function fnv1a(s: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, '0')
}

/** The suffix that marks this container's endpoints: `cni-<id>`, a valid DNS label. */
export function endpointKey(containerId: string): string {
  const clean = containerId.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 100).replace(/-+$/, '')
  return clean === containerId ? `cni-${clean}` : `cni-${clean}-${fnv1a(containerId)}`
}

/** The name of the endpoint a CNI ADD registers for `service` offered by container `containerId`. */
export function endpointName(service: string, containerId: string): string {
  return `${service}.${endpointKey(containerId)}`
}

/** True when `name` is one of the endpoints a CNI ADD registered for `containerId` (any service). */
export function isContainerEndpoint(name: string, containerId: string): boolean {
  const suffix = `.${endpointKey(containerId)}`
  return name.length > suffix.length && name.endsWith(suffix)
}
