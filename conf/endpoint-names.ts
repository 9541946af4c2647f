// conf/endpoint-names.ts: the names of the endpoints a CNI ADD registers for an endpoint pod (ARCHITECTURE §5,
// `endpoint.networkservicemesh.io`): registered at ADD (agent/cni/endpoint.ts) and found again from the
// container id alone at DEL (agent/cni/del.ts).
//
// Needs: node:crypto only.
// Contract: `<service>.<key>`, the key a DNS label made from CNI_CONTAINERID, one per id (injective):
//   - an id that is already a plain DNS label part (lower-case letters, digits, '-'; no trailing '-'; at
//     most 100 characters) keeps it: `cni-<id>` (runtimes' 64-hex ids);
//   - any other id is lower-cased, '_' and '.' become '-', and a 64-bit hash of the exact id follows under
//     another prefix: `cnh-<clean>-<hash>`. No unchanged id can spell it (their keys start `cni-`), and two
//     changed ids share a key only if they share the hash. (Before, `relUPPER` became
//     `cni-relupper-f8c91628`, exactly the key of the id `relupper-f8c91628`: one ADD overwrote the
//     other's registration.)
// The key has no dot, so `isContainerEndpoint` compares the name's whole last dot-separated part with this
// container's key: another container's endpoints (`.cni-abc-1` against `.cni-abc`) do not match.
import { createHash } from 'node:crypto'

const PLAIN = /^[a-z0-9]([a-z0-9-]{0,98}[a-z0-9])?$/

/** The suffix that marks this container's endpoints, a valid DNS label. */
export function endpointKey(containerId: string): string {
  if (PLAIN.test(containerId)) return `cni-${containerId}`
  const clean = containerId.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 100).replace(/-+$/, '')
  const hash = createHash('sha256').update(containerId, 'utf8').digest('hex').slice(0, 16)
  return clean === '' ? `cnh-${hash}` : `cnh-${clean}-${hash}`
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

/** True when `name` has the form of an endpoint a CNI ADD registers (for any container). */
export function isCniEndpointName(name: string): boolean {
  return /\.cn[ih]-[a-z0-9-]+$/.test(name)
}
