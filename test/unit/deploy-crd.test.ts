// deploy/crds against the resources that will be stored in them: the example NetworkService, and an NSE as
// the agent would register it, validate against the CRD's openAPIV3Schema (checked with the subset of
// OpenAPI v3 that the CRDs use: type, properties, additionalProperties, items, enum, required, minimum,
// maximum); wrong shapes are refused with the field path; and the example CR means the same service as
// the seed's 2019 YAML when our NetworkService parser reads both.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'
import { parseNetworkServiceYaml } from '../../conf/networkservice'

const ROOT = join(import.meta.dirname, '../..')
interface Schema {
  type?: string
  properties?: Record<string, Schema>
  additionalProperties?: Schema
  items?: Schema
  enum?: unknown[]
  required?: string[]
  minimum?: number
  maximum?: number
}

/** Problems of `value` against `schema`, each as "path: why"; empty when it validates. */
function validate(schema: Schema, value: unknown, path = ''): string[] {
  const at = path === '' ? '(root)' : path
  const kind = Array.isArray(value) ? 'array' : value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value
  if (schema.type !== undefined && schema.type !== kind && !(schema.type === 'number' && kind === 'integer')) {
    return [`${at}: expected ${schema.type}, got ${kind}`]
  }
  const out: string[] = []
  if (schema.enum !== undefined && !schema.enum.includes(value)) out.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`)
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) out.push(`${at}: below ${schema.minimum}`)
    if (schema.maximum !== undefined && value > schema.maximum) out.push(`${at}: above ${schema.maximum}`)
  }
  if (Array.isArray(value) && schema.items !== undefined) value.forEach((v, i) => out.push(...validate(schema.items!, v, `${path}[${i}]`)))
  if (kind === 'object') {
    const obj = value as Record<string, unknown>
    for (const r of schema.required ?? []) if (!(r in obj)) out.push(`${path === '' ? '' : `${path}.`}${r}: required`)
    for (const [k, v] of Object.entries(obj)) {
      const sub = schema.properties?.[k] ?? schema.additionalProperties
      const p = path === '' ? k : `${path}.${k}`
      // metadata is `type: object` with no properties: the API server validates it itself.
      if (sub === undefined) {
        if (schema.properties !== undefined) out.push(`${p}: unknown field (the API server would prune it)`)
        continue
      }
      out.push(...validate(sub, v, p))
    }
  }
  return out
}

function crdSchema(file: string): Schema {
  const crd = parse(readFileSync(join(ROOT, 'deploy/crds', file), 'utf8')) as { spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> } }
  return crd.spec.versions[0]!.schema.openAPIV3Schema
}
const nsSchema = crdSchema('networkservices.yaml')
const nseSchema = crdSchema('networkserviceendpoints.yaml')
const exampleText = readFileSync(join(ROOT, 'deploy/examples/networkservice-secure-intranet-connectivity.yaml'), 'utf8')

/** Where a schema breaks the API server's structural-schema rules (every node typed; properties and
 *  additionalProperties never together), as "path: why". */
function unstructural(schema: Schema, path = '(root)'): string[] {
  const out: string[] = []
  if (schema.type === undefined) out.push(`${path}: no type`)
  if (schema.properties !== undefined && schema.additionalProperties !== undefined) out.push(`${path}: both properties and additionalProperties`)
  for (const [k, sub] of Object.entries(schema.properties ?? {})) out.push(...unstructural(sub, `${path}.${k}`))
  if (schema.additionalProperties !== undefined) out.push(...unstructural(schema.additionalProperties, `${path}.*`))
  if (schema.items !== undefined) out.push(...unstructural(schema.items, `${path}[]`))
  return out
}

t.test('both CRD schemas are structural', async (t) => {
  t.same(unstructural(nsSchema), [])
  t.same(unstructural(nseSchema), [])
  t.same(unstructural({ type: 'object', properties: { a: { properties: {} } } }), ['(root).a: no type'], 'the check can fail')
})

t.test('the example NetworkService validates against its CRD', async (t) => {
  const docs = parseAllDocuments(exampleText).map((d) => d.toJS() as unknown)
  t.equal(docs.length, 1)
  t.same(validate(nsSchema, docs[0]), [])
})

t.test('an NSE as the agent registers it validates', async (t) => {
  const nse = {
    apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkServiceEndpoint',
    metadata: { name: 'firewall-7f2c', namespace: 'nsm-system' },
    spec: {
      name: 'firewall-7f2c',
      network_service_names: ['secure-intranet-connectivity'],
      network_service_labels: { 'secure-intranet-connectivity': { labels: { app: 'firewall', nodeName: 'worker-1' } } },
      url: 'file:///var/run/netns/cni-1234',
      expiration_time: { seconds: 1_900_000_000, nanos: 500 },
      initial_registration_time: { seconds: 1_899_999_000, nanos: 0 },
    },
  }
  t.same(validate(nseSchema, nse), [])
})

t.test('wrong shapes are refused with the field path', async (t) => {
  const cases: Array<[Schema, unknown, string]> = [
    [nsSchema, { metadata: {} }, 'spec: required'],
    [nsSchema, { spec: { payload: 'ip' } }, 'spec.payload: "ip" not in ["IP","ETHERNET"]'],
    [nsSchema, { spec: { matches: [{ sourceSelector: { app: 'x' } }] } }, 'spec.matches[0].sourceSelector: unknown field (the API server would prune it)'],
    [nsSchema, { spec: { matches: [{ routes: [{ destination_selector: { app: 1 } }] }] } }, 'spec.matches[0].routes[0].destination_selector.app: expected string, got integer'],
    [nsSchema, { spec: { matches: [{ routes: [{ weight: -1 }] }] } }, 'spec.matches[0].routes[0].weight: below 0'],
    [nsSchema, { spec: { matches: [{ fallthrough: 'yes' }] } }, 'spec.matches[0].fallthrough: expected boolean, got string'],
    [nseSchema, { spec: { network_service_names: 'svc' } }, 'spec.network_service_names: expected array, got string'],
    [nseSchema, { spec: { network_service_labels: { svc: { app: 'x' } } } }, 'spec.network_service_labels.svc.app: unknown field (the API server would prune it)'],
    [nseSchema, { spec: { expiration_time: '2030-01-01T00:00:00Z' } }, 'spec.expiration_time: expected object, got string'],
    [nseSchema, { spec: { expiration_time: { seconds: 1, nanos: 1_000_000_000 } } }, 'spec.expiration_time.nanos: above 999999999'],
  ]
  for (const [schema, value, problem] of cases) t.same(validate(schema, value), [problem], problem)
})

t.test('the v1 example means the same service as the seed YAML of 2019', async (t) => {
  const [parsed] = parseNetworkServiceYaml(exampleText)
  const [fromSeed] = parseNetworkServiceYaml(readFileSync(join(ROOT, 'conf/examples/secure-intranet-connectivity.yaml'), 'utf8'))
  t.ok(parsed)
  // The custom resource adds where the service lives and who may offer it (the seed has no namespace).
  if (parsed === undefined) return
  const { policy, ...fromCr } = parsed
  t.same(policy, { namespace: 'nsm-system', endpointNamespaces: ['default'], endpointSelector: {}, endpointRoutes: ['10.60.0.0/16'], endpointPools: [] })
  t.strictSame(fromCr, fromSeed)
  t.equal(fromCr?.matches[0]?.sourceSelector['app'], 'firewall', 'the firewall match comes first')
})
