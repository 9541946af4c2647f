// conf/networkservice.ts: NetworkService documents (what `nsmctl apply -f` and the registry accept), parsed and
// validated into one domain type.
//
// Needs: the `yaml` package (agent and nsmctl only: never import this from the CNI plugin), conf/template.ts,
// conf/endpoint-policy.ts (a manifest's registration policy).
// Contract: `parseNetworkServiceYaml` reads every document of a file and returns one NetworkService each
// (empty documents are skipped), or throws a ConfError naming the document and the field path. Accepted forms:
//   - the 2019 v1alpha1 manifest (ARCHITECTURE §1): camelCase `sourceSelector`/`destinationSelector`, `route`,
//     with the leftover empty `match:` and `destination:` wrapper keys (a non-empty wrapper map is merged);
//   - the v1 manifest (`apiVersion: networkservicemesh.io/v1`, `kind: NetworkService`, `spec`), snake_case as
//     in NSM's registry.proto (`source_selector`, `routes`, `destination_selector`, `weight`, `fallthrough`);
//   - a bare registry object `{ name, payload, matches }` (the proto's JSON form, either spelling).
// Field spellings may be mixed (camel and snake); giving both spellings of one field is an error. Unknown
// fields are errors (a typo must not silently widen a selector). Selector values must be strings; values
// with `{{ }}` must be templates conf/template.ts can render.
import { parseAllDocuments } from 'yaml'
import { ConfError, type ConfErrorOptions } from './errors.js'
import { isValidLabelKey, isValidServiceName } from './names.js'
import { parseTemplate } from './template.js'
import { policyFromMetadata, type ServicePolicy } from './endpoint-policy.js'

export { isValidLabelKey, isValidServiceName } from './names.js'

export type Payload = 'IP' | 'ETHERNET'

export interface Destination {
  destinationSelector: Record<string, string>
  /** As in the proto (uint32, 0 when absent); selection does not weigh by it yet. */
  weight: number
}

export interface Match {
  sourceSelector: Record<string, string>
  routes: Destination[]
  fallthrough: boolean
  metadata?: { labels: Record<string, string> }
}

export interface NetworkService {
  name: string
  payload: Payload
  matches: Match[]
  /** Who may offer it as an endpoint pod (manifest form only: metadata.namespace, nsm-cni.io/ annotations). */
  policy?: ServicePolicy
}

export const API_GROUP = 'networkservicemesh.io'
export const API_VERSIONS: readonly string[] = [`${API_GROUP}/v1`, `${API_GROUP}/v1alpha1`]
const PAYLOADS: readonly Payload[] = ['IP', 'ETHERNET']

export interface ParseOptions {
  /**
   * Skip documents of another kind (a manifest bundle holding CRDs, Deployments, ...) instead of failing on
   * them. Documents that claim `kind: NetworkService` are still validated in full.
   */
  ignoreOtherKinds?: boolean
}

/** Parses every YAML document in `text` into a NetworkService; throws ConfError. */
export function parseNetworkServiceYaml(text: string, options: ParseOptions = {}): NetworkService[] {
  const docs = parseAllDocuments(text)
  const out: NetworkService[] = []
  const seen = new Map<string, number>()
  for (const [index, doc] of docs.entries()) {
    // Documents are numbered in messages only when the file has several.
    const i = docs.length > 1 ? index : undefined
    const err = doc.errors[0]
    if (err !== undefined) {
      // prettyErrors puts "at line L, column C" on the first line; the rest is a source excerpt.
      throw new ConfError('YAML_SYNTAX', (err.message.split('\n')[0] ?? err.code).replace(/:$/, ''), opts('', i, err))
    }
    let value: unknown
    try {
      value = doc.toJS({ maxAliasCount: 100 })
    } catch (e) {
      throw new ConfError('YAML_SYNTAX', e instanceof Error ? e.message : String(e), opts('', i, e))
    }
    if (value === null || value === undefined) continue
    if (options.ignoreOtherKinds === true && isOtherKind(value)) continue
    const ns = networkServiceFromObject(value, i)
    const prev = seen.get(ns.name)
    if (prev !== undefined) {
      throw new ConfError('INVALID_FIELD', `duplicate NetworkService ${ns.name} (also in document ${prev + 1})`, opts('metadata.name', i))
    }
    seen.set(ns.name, index)
    out.push(ns)
  }
  return out
}

/**
 * Validates one already-decoded document (a manifest with apiVersion/kind/spec, or a bare registry object
 * with name/payload/matches) into a NetworkService; throws ConfError.
 */
export function networkServiceFromObject(value: unknown, document?: number): NetworkService {
  const v = new Validator(document)
  const root = v.map(value, '')
  if ('apiVersion' in root || 'kind' in root || 'spec' in root || 'metadata' in root) {
    v.only(root, '', ['apiVersion', 'kind', 'metadata', 'spec', 'status'])
    const apiVersion = v.string(root.apiVersion, 'apiVersion')
    if (!API_VERSIONS.includes(apiVersion)) {
      throw v.error('UNSUPPORTED_KIND', 'apiVersion', `must be one of ${API_VERSIONS.join(', ')}, not ${apiVersion}`)
    }
    const kind = v.string(root.kind, 'kind')
    if (kind !== 'NetworkService') throw v.error('UNSUPPORTED_KIND', 'kind', `must be NetworkService, not ${kind}`)
    const metadata = v.map(root.metadata, 'metadata')
    const name = v.name(metadata.name, 'metadata.name')
    const spec = root.spec === null || root.spec === undefined ? {} : v.map(root.spec, 'spec')
    v.only(spec, 'spec', ['payload', 'matches'])
    const policy = policyFromMetadata(metadata, 'metadata', document)
    return { name, payload: v.payload(spec.payload, 'spec.payload'), matches: v.matches(spec.matches, 'spec.matches'), ...(policy === undefined ? {} : { policy }) }
  }
  v.only(root, '', ['name', 'payload', 'matches'])
  return { name: v.name(root.name, 'name'), payload: v.payload(root.payload, 'payload'), matches: v.matches(root.matches, 'matches') }
}

type Obj = Record<string, unknown>

/** Walks one document, building error paths as it goes. */
class Validator {
  constructor(private readonly document: number | undefined) {}

  error(code: ConstructorParameters<typeof ConfError>[0], path: string, detail: string): ConfError {
    return new ConfError(code, detail, opts(path, this.document))
  }

  map(value: unknown, path: string): Obj {
    if (value === undefined) throw this.error('MISSING_FIELD', path, 'is required')
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw this.error('INVALID_FIELD', path, `must be a map, not ${describe(value)}`)
    }
    return value as Obj
  }

  only(obj: Obj, path: string, allowed: readonly string[]): void {
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) {
        throw this.error('UNKNOWN_FIELD', join(path, key), `unknown field (expected one of ${allowed.join(', ')})`)
      }
    }
  }

  string(value: unknown, path: string): string {
    if (value === undefined || value === null) throw this.error('MISSING_FIELD', path, 'is required')
    if (typeof value !== 'string') throw this.error('INVALID_FIELD', path, `must be a string, not ${describe(value)}`)
    return value
  }

  name(value: unknown, path: string): string {
    const name = this.string(value, path)
    if (!isValidServiceName(name)) {
      throw this.error('INVALID_FIELD', path, `${JSON.stringify(name)} is not a valid name (lowercase DNS-1123 subdomain, ≤ 253 characters)`)
    }
    return name
  }

  payload(value: unknown, path: string): Payload {
    if (value === undefined || value === null) return 'IP'
    const p = this.string(value, path).toUpperCase()
    const found = PAYLOADS.find((x) => x === p)
    if (found === undefined) throw this.error('INVALID_FIELD', path, `must be IP or ETHERNET, not ${JSON.stringify(value)}`)
    return found
  }

  /** One of several spellings of a field; both present is an error. Returns the key used and its value. */
  pick(obj: Obj, path: string, keys: readonly string[]): { key: string; value: unknown } | undefined {
    const present = keys.filter((k) => obj[k] !== undefined)
    if (present.length > 1) {
      throw this.error('INVALID_FIELD', join(path, present[1] ?? ''), `conflicts with ${present[0] ?? ''}: give only one`)
    }
    const key = present[0]
    return key === undefined ? undefined : { key, value: obj[key] }
  }

  /** Resolves a leftover wrapper key (`match:`, `destination:`): empty is dropped, a map is merged in. */
  unwrap(obj: Obj, path: string, wrapper: string): Obj {
    const inner = obj[wrapper]
    const rest: Obj = { ...obj }
    delete rest[wrapper]
    if (inner === null || inner === undefined) return rest
    const m = this.map(inner, join(path, wrapper))
    for (const [k, val] of Object.entries(m)) {
      if (k in rest) throw this.error('INVALID_FIELD', join(join(path, wrapper), k), `also given outside ${wrapper}: give it once`)
      rest[k] = val
    }
    return rest
  }

  matches(value: unknown, path: string): Match[] {
    if (value === undefined || value === null) return []
    if (!Array.isArray(value)) throw this.error('INVALID_FIELD', path, `must be a list, not ${describe(value)}`)
    return value.map((item: unknown, i) => this.match(item, `${path}[${i}]`))
  }

  match(value: unknown, path: string): Match {
    const obj = this.unwrap(this.map(value, path), path, 'match')
    const source = this.pick(obj, path, ['sourceSelector', 'source_selector'])
    const routes = this.pick(obj, path, ['routes', 'route'])
    this.only(obj, path, ['sourceSelector', 'source_selector', 'routes', 'route', 'fallthrough', 'metadata'])
    const fall = obj.fallthrough
    if (fall !== undefined && fall !== null && typeof fall !== 'boolean') {
      throw this.error('INVALID_FIELD', join(path, 'fallthrough'), `must be true or false, not ${describe(fall)}`)
    }
    const match: Match = {
      sourceSelector: source === undefined ? {} : this.selector(source.value, join(path, source.key)),
      routes: routes === undefined ? [] : this.routes(routes.value, join(path, routes.key)),
      fallthrough: fall === true,
    }
    if (obj.metadata !== undefined && obj.metadata !== null) {
      const mp = join(path, 'metadata')
      const md = this.map(obj.metadata, mp)
      this.only(md, mp, ['labels'])
      match.metadata = { labels: this.selector(md.labels, join(mp, 'labels')) }
    }
    return match
  }

  routes(value: unknown, path: string): Destination[] {
    if (value === null) return []
    if (!Array.isArray(value)) throw this.error('INVALID_FIELD', path, `must be a list, not ${describe(value)}`)
    return value.map((item: unknown, i) => {
      const p = `${path}[${i}]`
      const obj = this.unwrap(this.map(item, p), p, 'destination')
      const sel = this.pick(obj, p, ['destinationSelector', 'destination_selector'])
      this.only(obj, p, ['destinationSelector', 'destination_selector', 'weight'])
      const w = obj.weight ?? 0
      if (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > 0xffffffff) {
        throw this.error('INVALID_FIELD', join(p, 'weight'), `must be an integer from 0 to 4294967295, not ${describe(w)}`)
      }
      return { destinationSelector: sel === undefined ? {} : this.selector(sel.value, join(p, sel.key)), weight: w }
    })
  }

  selector(value: unknown, path: string): Record<string, string> {
    if (value === undefined || value === null) return {}
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw this.error('INVALID_FIELD', path, `must be a map of strings, not ${describe(value)}`)
    }
    const out: Record<string, string> = {}
    for (const [k, val] of Object.entries(value as Obj)) {
      const kp = join(path, k)
      if (!isValidLabelKey(k)) throw this.error('INVALID_FIELD', kp, 'is not a valid label key')
      if (typeof val !== 'string') {
        throw this.error('INVALID_FIELD', kp, `must be a string, not ${describe(val)} (quote it in YAML)`)
      }
      try {
        parseTemplate(val)
      } catch (e) {
        throw this.error('INVALID_FIELD', kp, e instanceof Error ? e.message : String(e))
      }
      out[k] = val
    }
    return out
  }
}

function isOtherKind(value: unknown): boolean {
  return typeof value === 'object' && value !== null && 'kind' in value && (value as Obj).kind !== 'NetworkService'
}

function opts(path: string, document: number | undefined, cause?: unknown): ConfErrorOptions {
  const o: ConfErrorOptions = { path }
  if (document !== undefined) o.document = document
  if (cause !== undefined) o.cause = cause
  return o
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'a map'
  return `${typeof value} ${JSON.stringify(value)}`
}
