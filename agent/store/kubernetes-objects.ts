// How the Kubernetes backend of the cluster store (kubernetes.ts) holds a value: which custom resource each
// kind is, how a value maps to an object's spec and annotations and back, and what the API's objects and
// errors say. Pure functions over JSON; no requests.
//
//   kind       resource (deploy/crds)                                   spec
//   services   networkservices.networkservicemesh.io/v1 NetworkService   NSM's NetworkService, snake_case
//   endpoints  networkserviceendpoints.networkservicemesh.io/v1          NSM's NetworkServiceEndpoint, snake_case,
//              NetworkServiceEndpoint                                   timestamps {seconds, nanos}
//   claims     nsmaddressclaims.nsm-cni.io/v1 NsmAddressClaim            the value
//   nodes      nsmnodes.nsm-cni.io/v1 NsmNode                            the value
//
// Mapping (both ways; a value always comes back deep-equal to what was written):
// - metadata.name = the Kv name; revision = metadata.resourceVersion; a list's revision = the list's.
// - services: the value is NetworkService.toJSON(...) (camelCase) plus fields of our own; the NSM fields go
//   to spec in NSM's JSON form so that NSM's tools read them, the others (e.g. `nsmcniPolicy`) to the
//   annotation `nsm-cni.io/extension` as a JSON object. endpoints: the value is {endpoint, extension}:
//   `endpoint` goes to spec, every other field ({"extension": EndpointExtension.toJSON(...)}) to that annotation.
//   An annotation, not a spec field: a cluster running NSM's own CRDs (structural schemas without our field)
//   would prune an unknown spec field silently, an annotation never.
// - claims, nodes: spec = the value.
// - A value that does not fit (not an object, an unknown NSM field, a wrong type, a timestamp that would
//   not come back identical) is stored whole as JSON in the annotation `nsm-cni.io/value`, spec = {}.
import { POLICY_ANNOTATIONS, policyFromMetadata } from '../../conf/endpoint-policy.js'
import { isDeepStrictEqual } from 'node:util'
import { statusOf } from '../podinfo/kubernetes.js'
import type { KvKind } from './kv.js'

export const EXPIRES_AT = 'nsm-cni.io/expires-at'
export const EXTENSION = 'nsm-cni.io/extension'
export const OPAQUE_VALUE = 'nsm-cni.io/value'

export const RESOURCES: Record<KvKind, { readonly group: string; readonly plural: string; readonly kind: string }> = {
  services: { group: 'networkservicemesh.io', plural: 'networkservices', kind: 'NetworkService' },
  endpoints: { group: 'networkservicemesh.io', plural: 'networkserviceendpoints', kind: 'NetworkServiceEndpoint' },
  claims: { group: 'nsm-cni.io', plural: 'nsmaddressclaims', kind: 'NsmAddressClaim' },
  nodes: { group: 'nsm-cni.io', plural: 'nsmnodes', kind: 'NsmNode' },
}
export const VERSION = 'v1'

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json }
export type JsonObject = { [k: string]: Json }
export interface KObject {
  metadata: { name: string; resourceVersion: string; annotations: Record<string, string> }
  spec: Json | undefined
}

// ---- value <-> object -------------------------------------------------------------------------------

/** The JSON shapes of NSM's registry messages: camelCase in the value, snake_case in the CRD. */
type Shape =
  | { readonly t: 'string'; readonly enum?: readonly string[] }
  | { readonly t: 'bool' | 'uint32' | 'timestamp' }
  | { readonly t: 'array' | 'map'; readonly of: Shape }
  | { readonly t: 'object'; readonly fields: readonly Field[] }
type Field = readonly [json: string, crd: string, shape: Shape]

const str: Shape = { t: 'string' }
const labels: Shape = { t: 'map', of: str }
const labelsObject: Shape = { t: 'object', fields: [['labels', 'labels', labels]] }
const SERVICE_FIELDS: readonly Field[] = [
  ['name', 'name', str],
  ['payload', 'payload', { t: 'string', enum: ['IP', 'ETHERNET'] }],
  ['matches', 'matches', { t: 'array', of: { t: 'object', fields: [
    ['sourceSelector', 'source_selector', labels],
    ['routes', 'routes', { t: 'array', of: { t: 'object', fields: [['destinationSelector', 'destination_selector', labels], ['weight', 'weight', { t: 'uint32' }]] } }],
    ['fallthrough', 'fallthrough', { t: 'bool' }],
    ['metadata', 'metadata', labelsObject],
  ] } }],
  ['pathIds', 'path_ids', { t: 'array', of: str }],
]
const ENDPOINT_FIELDS: readonly Field[] = [
  ['name', 'name', str],
  ['networkServiceNames', 'network_service_names', { t: 'array', of: str }],
  ['networkServiceLabels', 'network_service_labels', { t: 'map', of: labelsObject }],
  ['url', 'url', str],
  ['expirationTime', 'expiration_time', { t: 'timestamp' }],
  ['initialRegistrationTime', 'initial_registration_time', { t: 'timestamp' }],
  ['pathIds', 'path_ids', { t: 'array', of: str }],
]

class Unfit extends Error {}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The value in NSM's CRD form; throws Unfit where it does not fit the message (then it is stored whole). */
function toCrd(shape: Shape, v: Json): Json {
  switch (shape.t) {
    case 'string':
      if (typeof v !== 'string' || (shape.enum !== undefined && !shape.enum.includes(v))) throw new Unfit()
      return v
    case 'bool':
      if (typeof v !== 'boolean') throw new Unfit()
      return v
    case 'uint32':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Unfit()
      return v
    case 'timestamp': {
      const ms = typeof v === 'string' ? Date.parse(v) : NaN
      // Only the form toJSON writes (toISOString) comes back identical.
      if (!Number.isFinite(ms) || new Date(ms).toISOString() !== v) throw new Unfit()
      const seconds = Math.floor(ms / 1000)
      return { seconds, nanos: (ms - seconds * 1000) * 1e6 }
    }
    case 'array':
      if (!Array.isArray(v)) throw new Unfit()
      return v.map((e) => toCrd(shape.of, e))
    case 'map':
      if (!isObject(v)) throw new Unfit()
      return Object.fromEntries(Object.entries(v).map(([k, e]) => [k, toCrd(shape.of, e)]))
    case 'object': {
      if (!isObject(v)) throw new Unfit()
      const { known, rest } = fieldsToCrd(shape.fields, v)
      if (Object.keys(rest).length > 0) throw new Unfit()
      return known
    }
  }
}

function fieldsToCrd(fields: readonly Field[], v: JsonObject): { known: JsonObject; rest: JsonObject } {
  const known: JsonObject = {}
  const rest: JsonObject = { ...v }
  for (const [json, crd, shape] of fields) {
    const e = v[json]
    if (!Object.hasOwn(v, json) || e === undefined) continue
    known[crd] = toCrd(shape, e)
    delete rest[json]
  }
  return { known, rest }
}

/** The value from NSM's CRD form (also objects NSM's tools wrote: what does not fit the shape is left out). */
function fromCrd(shape: Shape, v: Json | undefined): Json | undefined {
  switch (shape.t) {
    case 'string':
      return typeof v === 'string' ? v : undefined
    case 'bool':
      return typeof v === 'boolean' ? v : undefined
    case 'uint32':
      return typeof v === 'number' ? v : undefined
    case 'timestamp': {
      if (!isObject(v)) return undefined
      const ms = Number(v['seconds'] ?? 0) * 1000 + Math.floor(Number(v['nanos'] ?? 0) / 1e6)
      return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined
    }
    case 'array':
      return Array.isArray(v) ? v.map((e) => fromCrd(shape.of, e)).filter((e): e is Json => e !== undefined) : undefined
    case 'map':
      return isObject(v) ? Object.fromEntries(Object.entries(v).flatMap(([k, e]) => entryOf(k, fromCrd(shape.of, e)))) : undefined
    case 'object':
      return isObject(v) ? fieldsFromCrd(shape.fields, v) : undefined
  }
}

function fieldsFromCrd(fields: readonly Field[], v: JsonObject): JsonObject {
  return Object.fromEntries(fields.flatMap(([json, crd, shape]) => (Object.hasOwn(v, crd) ? entryOf(json, fromCrd(shape, v[crd])) : [])))
}

function entryOf(k: string, v: Json | undefined): Array<[string, Json]> {
  return v === undefined ? [] : [[k, v]]
}

/** What an object holds for a value: its spec and the annotations that carry the rest. */
export function encodeValue(kind: KvKind, value: Json): { spec: Json; annotations: Record<string, string> } {
  const opaque = { spec: {}, annotations: { [OPAQUE_VALUE]: JSON.stringify(value) } }
  try {
    let spec: JsonObject
    let rest: JsonObject = {}
    if (kind === 'claims' || kind === 'nodes') {
      if (!isObject(value)) return opaque
      spec = value
    } else if (kind === 'services') {
      if (!isObject(value)) return opaque
      ;({ known: spec, rest } = fieldsToCrd(SERVICE_FIELDS, value))
    } else {
      const endpoint = isObject(value) ? value['endpoint'] : undefined
      if (!isObject(value) || !isObject(endpoint)) return opaque
      spec = toCrd({ t: 'object', fields: ENDPOINT_FIELDS }, endpoint) as JsonObject
      rest = { ...value }
      delete rest['endpoint']
    }
    const annotations: Record<string, string> = Object.keys(rest).length > 0 ? { [EXTENSION]: JSON.stringify(rest) } : {}
    // The exact-round-trip promise is checked, not assumed: whatever would come back different is stored whole.
    if (!isDeepStrictEqual(decodeValue(kind, spec, annotations), value)) return opaque
    return { spec, annotations }
  } catch (err) {
    if (err instanceof Unfit) return opaque
    throw err
  }
}

export function decodeValue(kind: KvKind, spec: Json | undefined, annotations: Record<string, string>, objectName?: string): Json {
  const whole = parseJson(annotations[OPAQUE_VALUE])
  if (whole !== undefined) return whole
  if (kind === 'claims' || kind === 'nodes') return spec ?? {}
  const restJson = parseJson(annotations[EXTENSION])
  const rest = isObject(restJson) ? restJson : {}
  // NSM's own objects (kubectl-applied) may leave the name to metadata.name.
  const fields = isObject(spec) ? (spec['name'] === undefined && objectName !== undefined ? { ...spec, name: objectName } : spec) : objectName === undefined ? {} : { name: objectName }
  if (kind === 'services') {
    const service: JsonObject = { ...fieldsFromCrd(SERVICE_FIELDS, fields), ...rest }
    // A NetworkService applied with kubectl declares its registration policy in nsm-cni.io/endpoint-*
    // annotations (ARCHITECTURE §5): read as the policy the agents would have stored.
    if (service['nsmcniPolicy'] === undefined) {
      const policy = annotatedPolicy(annotations)
      if (policy !== undefined) service['nsmcniPolicy'] = policy
    }
    return service
  }
  return { endpoint: fieldsFromCrd(ENDPOINT_FIELDS, fields), ...rest }
}

/** The policy of nsm-cni.io/endpoint-* annotations; undefined when there are none or they are invalid. */
function annotatedPolicy(annotations: Record<string, string>): JsonObject | undefined {
  if (!Object.values(POLICY_ANNOTATIONS).some((k) => annotations[k] !== undefined)) return undefined
  try {
    const p = policyFromMetadata({ annotations })
    return p === undefined ? undefined : { ...p }
  } catch {
    return undefined
  }
}

function parseJson(text: string | undefined): Json | undefined {
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as Json
  } catch {
    return undefined
  }
}

/** A JSON copy of a caller's value (what any backend stores: undefined fields dropped, no shared objects). */
export function jsonOf(kind: KvKind, name: string, value: unknown): Json {
  const text = JSON.stringify(value) as string | undefined
  if (text === undefined) throw new TypeError(`store ${kind} ${name}: the value is not JSON`)
  return JSON.parse(text) as Json
}

/** The fields we use of an API object, or undefined for something that is not one. */
export function kobject(raw: unknown): KObject | undefined {
  if (!isObject(raw as Json) || !isObject((raw as JsonObject)['metadata'] ?? null)) return undefined
  const o = raw as JsonObject
  const m = o['metadata'] as JsonObject
  if (typeof m['name'] !== 'string') return undefined
  const annotations: Record<string, string> = {}
  if (isObject(m['annotations'] ?? null)) {
    for (const [k, v] of Object.entries(m['annotations'] as JsonObject)) if (typeof v === 'string') annotations[k] = v
  }
  return { metadata: { name: m['name'], resourceVersion: typeof m['resourceVersion'] === 'string' ? m['resourceVersion'] : '', annotations }, spec: o['spec'] }
}

export function expiresAt(obj: KObject): number | undefined {
  const text = obj.metadata.annotations[EXPIRES_AT]
  const ms = text === undefined ? NaN : Date.parse(text)
  return Number.isFinite(ms) ? ms : undefined
}

// ---- errors ---------------------------------------------------------------------------------------------

export function describe(err: unknown): string {
  const code = statusOf(err)
  const body = (err as { body?: unknown } | null)?.body
  const message = isObject((body ?? null) as Json) && typeof (body as JsonObject)['message'] === 'string' ? (body as JsonObject)['message'] as string : undefined
  if (code !== undefined) return `HTTP ${code}${message === undefined ? '' : `: ${message}`}`
  return err instanceof Error ? err.message : String(err)
}

/** Failures that mean "the engine cannot serve us now" rather than "this request is wrong". */
export function unavailable(err: unknown): boolean {
  const code = statusOf(err)
  return code === undefined || code >= 500 || code === 401 || code === 403 || code === 429
}
