// What the registry keeps for each service and endpoint, as the stores hold it: the records, their JSON
// codecs (one per store), what a stored record must be to load (a store drops the others, store.ts), and
// the protobuf Timestamp conversions their times are read and written with.
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'
import type { Timestamp } from '../../proto/gen/google/protobuf/timestamp.js'
import { checkName, validatePolicy, validateService } from './validate.js'

export interface StoredEndpoint {
  readonly endpoint: NetworkServiceEndpoint
  /** Always present; empty lists when the endpoint registered through plain NSM Register. */
  readonly extension: EndpointExtension
}

/** A network service and who may offer it as an endpoint pod (conf/endpoint-policy.ts). */
export interface StoredService {
  readonly service: NetworkService
  /** Undefined: none declared. */
  readonly policy: ServicePolicy | undefined
}

export const storedEndpointCodec = {
  toJSON: (e: StoredEndpoint): unknown => ({
    endpoint: NetworkServiceEndpoint.toJSON(e.endpoint),
    extension: EndpointExtension.toJSON(e.extension),
  }),
  fromJSON: (j: unknown): StoredEndpoint => {
    const o = j as { endpoint?: unknown; extension?: unknown }
    return { endpoint: NetworkServiceEndpoint.fromJSON(o.endpoint), extension: EndpointExtension.fromJSON(o.extension ?? {}) }
  },
}

/**
 * A service is stored as NSM's NetworkService JSON, with its policy (when it has one) under `nsmcniPolicy`:
 * files written before policies existed read as services without one.
 */
export const serviceCodec = {
  toJSON: (s: StoredService): unknown => ({ ...(NetworkService.toJSON(s.service) as object), ...(s.policy === undefined ? {} : { nsmcniPolicy: ServicePolicy.toJSON(s.policy) }) }),
  fromJSON: (j: unknown): StoredService => {
    const policy = (j as { nsmcniPolicy?: unknown } | null)?.nsmcniPolicy
    return { service: NetworkService.fromJSON(j), policy: policy === undefined || policy === null ? undefined : ServicePolicy.fromJSON(policy) }
  },
}

export function timestampMs(t: Timestamp | undefined): number | undefined {
  return t === undefined ? undefined : t.seconds * 1000 + Math.floor(t.nanos / 1e6)
}

export function timestampOf(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 }
}

/** What a stored service must be to load: keyed by its name, and valid. */
export function checkStoredService(key: string, s: StoredService): void {
  keyedByName(key, s.service.name)
  validateService(s.service)
  if (s.policy !== undefined) validatePolicy(s.policy)
}

/** What a stored endpoint must be to load: keyed by its name, a valid name. */
export function checkStoredEndpoint(key: string, e: StoredEndpoint): void {
  keyedByName(key, e.endpoint.name)
  checkName('network_service_endpoint.name', e.endpoint.name)
}

function keyedByName(key: string, name: string): void {
  if (key !== name) throw new Error(`stored under ${JSON.stringify(key)} but named ${JSON.stringify(name)}`)
}

export function isExpired(e: StoredEndpoint, now: number): boolean {
  const at = timestampMs(e.endpoint.expirationTime)
  return at !== undefined && at <= now
}
