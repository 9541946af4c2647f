// Unit tests for conf/networkservice.ts and conf/template.ts: every accepted form, and errors that name the
// document and the field path with a stable code.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ConfError } from '../../conf/errors.js'
import { networkServiceFromObject, parseNetworkServiceYaml, type NetworkService } from '../../conf/networkservice.js'
import { parseTemplate, renderTemplate } from '../../conf/template.js'

const seedPath = fileURLToPath(new URL('../../conf/examples/secure-intranet-connectivity.yaml', import.meta.url))

const SEED: NetworkService = {
  name: 'secure-intranet-connectivity',
  payload: 'IP',
  matches: [
    {
      sourceSelector: { app: 'firewall' },
      routes: [{ destinationSelector: { app: 'vpn-gateway' }, weight: 0 }],
      fallthrough: false,
    },
    { sourceSelector: {}, routes: [{ destinationSelector: { app: 'firewall' }, weight: 0 }], fallthrough: false },
  ],
}

t.test('the seed example file parses to the seed service', async (t) => {
  const text = readFileSync(seedPath, 'utf8')
  t.match(text, /- match: {2,}# a leftover wrapper key/, 'example keeps the leftover match: key as in ARCHITECTURE §1')
  t.strictSame(parseNetworkServiceYaml(text), [SEED])
})

const V1 = `
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: secure-intranet-connectivity
  namespace: nsm-system
  labels: { team: net }
spec:
  payload: IP
  matches:
    - source_selector:
        app: firewall
      routes:
        - destination_selector:
            app: vpn-gateway
    - routes:
        - destination_selector:
            app: firewall
`

const valid: Array<{ name: string; yaml: string; want: NetworkService[] }> = [
  {
    name: 'v1 manifest, snake_case as in the proto; its namespace is where the service lives',
    yaml: V1,
    want: [{ ...SEED, policy: { namespace: 'nsm-system', endpointNamespaces: [], endpointSelector: {}, endpointRoutes: [], endpointPools: [] } }],
  },
  {
    name: 'bare registry object, snake_case, fallthrough, weight, metadata',
    yaml: `
name: web
payload: ETHERNET
matches:
  - source_selector: { tier: front }
    fallthrough: true
    metadata: { labels: { why: local-first } }
    routes:
      - destination_selector: { node: "{{.nodeName}}" }
        weight: 10
      - destination_selector: { zone: '{{ index . "topology.kubernetes.io/zone" }}' }
  - routes: [{ destination_selector: {} }]
`,
    want: [
      {
        name: 'web',
        payload: 'ETHERNET',
        matches: [
          {
            sourceSelector: { tier: 'front' },
            routes: [
              { destinationSelector: { node: '{{.nodeName}}' }, weight: 10 },
              { destinationSelector: { zone: '{{ index . "topology.kubernetes.io/zone" }}' }, weight: 0 },
            ],
            fallthrough: true,
            metadata: { labels: { why: 'local-first' } },
          },
          { sourceSelector: {}, routes: [{ destinationSelector: {}, weight: 0 }], fallthrough: false },
        ],
      },
    ],
  },
  {
    name: 'bare object in camelCase (protojson), payload defaults to IP, lowercase payload normalised',
    yaml: 'name: a\nmatches: [{ sourceSelector: { x: "1" }, routes: [{ destinationSelector: { y: "2" } }] }]\n---\nname: b\npayload: ethernet\n',
    want: [
      { name: 'a', payload: 'IP', matches: [{ sourceSelector: { x: '1' }, routes: [{ destinationSelector: { y: '2' }, weight: 0 }], fallthrough: false }] },
      { name: 'b', payload: 'ETHERNET', matches: [] },
    ],
  },
  {
    name: 'a non-empty match:/destination: wrapper is merged',
    yaml: 'name: w\nmatches:\n  - match: { sourceSelector: { a: b } }\n    route:\n      - destination: { destinationSelector: { c: d } }\n',
    want: [{ name: 'w', payload: 'IP', matches: [{ sourceSelector: { a: 'b' }, routes: [{ destinationSelector: { c: 'd' }, weight: 0 }], fallthrough: false }] }],
  },
  {
    name: 'several documents with empty ones and a spec-less manifest',
    yaml: '---\n---\napiVersion: networkservicemesh.io/v1alpha1\nkind: NetworkService\nmetadata: { name: empty }\n---\n# only a comment\n',
    want: [{ name: 'empty', payload: 'IP', matches: [] }],
  },
  { name: 'an empty file holds no services', yaml: '', want: [] },
]

for (const c of valid) {
  t.test(`valid: ${c.name}`, async (t) => {
    t.strictSame(parseNetworkServiceYaml(c.yaml), c.want)
  })
}

const M = 'apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: { name: s }\nspec:\n'
const invalid: Array<{ name: string; yaml: string; code: string; path: string; document?: number; msg: RegExp }> = [
  {
    name: 'destination selector is a list',
    yaml: `${M}  matches:\n    - routes: []\n    - routes:\n        - destinationSelector: [app, x]\n`,
    code: 'INVALID_FIELD',
    path: 'spec.matches[1].routes[0].destinationSelector',
    msg: /^spec\.matches\[1\]\.routes\[0\]\.destinationSelector: must be a map of strings/,
  },
  {
    name: 'selector value is a number',
    yaml: `${M}  matches:\n    - source_selector: { version: 1.0 }\n`,
    code: 'INVALID_FIELD',
    path: 'spec.matches[0].source_selector.version',
    msg: /must be a string, not number 1 \(quote it in YAML\)/,
  },
  { name: 'typo in a field', yaml: `${M}  matches:\n    - sourceSelecter: { a: b }\n`, code: 'UNKNOWN_FIELD', path: 'spec.matches[0].sourceSelecter', msg: /unknown field/ },
  {
    name: 'both spellings',
    yaml: `${M}  matches:\n    - sourceSelector: { a: b }\n      source_selector: { a: c }\n`,
    code: 'INVALID_FIELD',
    path: 'spec.matches[0].source_selector',
    msg: /conflicts with sourceSelector/,
  },
  { name: 'fallthrough not boolean', yaml: `${M}  matches:\n    - fallthrough: "yes"\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].fallthrough', msg: /true or false/ },
  { name: 'negative weight', yaml: `${M}  matches:\n    - routes: [{ weight: -1 }]\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].routes[0].weight', msg: /integer/ },
  { name: 'matches not a list', yaml: `${M}  matches: { a: b }\n`, code: 'INVALID_FIELD', path: 'spec.matches', msg: /must be a list/ },
  { name: 'route entry not a map', yaml: `${M}  matches:\n    - route: [ x ]\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].route[0]', msg: /must be a map/ },
  { name: 'wrapper is a scalar', yaml: `${M}  matches:\n    - match: yes\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].match', msg: /must be a map/ },
  {
    name: 'wrapper and outside give the same key',
    yaml: `${M}  matches:\n    - match: { fallthrough: true }\n      fallthrough: false\n`,
    code: 'INVALID_FIELD',
    path: 'spec.matches[0].match.fallthrough',
    msg: /also given outside match/,
  },
  { name: 'bad template', yaml: `${M}  matches:\n    - routes: [{ destination_selector: { n: "{{.nodeName" } }]\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].routes[0].destination_selector.n', msg: /unterminated/ },
  { name: 'bad label key', yaml: `${M}  matches:\n    - source_selector: { "-bad": x }\n`, code: 'INVALID_FIELD', path: 'spec.matches[0].source_selector.-bad', msg: /label key/ },
  { name: 'unknown payload', yaml: `${M}  payload: L2\n`, code: 'INVALID_FIELD', path: 'spec.payload', msg: /IP or ETHERNET/ },
  { name: 'unknown spec field', yaml: `${M}  payloads: IP\n`, code: 'UNKNOWN_FIELD', path: 'spec.payloads', msg: /unknown field/ },
  { name: 'wrong kind', yaml: 'apiVersion: networkservicemesh.io/v1\nkind: NetworkServiceEndpoint\nmetadata: { name: x }\n', code: 'UNSUPPORTED_KIND', path: 'kind', msg: /must be NetworkService/ },
  { name: 'wrong apiVersion', yaml: 'apiVersion: v1\nkind: NetworkService\nmetadata: { name: x }\n', code: 'UNSUPPORTED_KIND', path: 'apiVersion', msg: /must be one of/ },
  { name: 'missing name', yaml: 'apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: {}\n', code: 'MISSING_FIELD', path: 'metadata.name', msg: /is required/ },
  { name: 'missing metadata', yaml: 'apiVersion: networkservicemesh.io/v1\nkind: NetworkService\n', code: 'MISSING_FIELD', path: 'metadata', msg: /is required/ },
  { name: 'invalid name', yaml: 'name: Bad_Name\n', code: 'INVALID_FIELD', path: 'name', msg: /not a valid name/ },
  { name: 'document is a list', yaml: '- a\n', code: 'INVALID_FIELD', path: '', msg: /must be a map, not a list/ },
  { name: 'error in the second document names it', yaml: 'name: ok\n---\nname: ok2\nmatches: 3\n', code: 'INVALID_FIELD', path: 'matches', document: 1, msg: /^document 2: matches: must be a list/ },
  { name: 'duplicate service across documents', yaml: 'name: ok\n---\nname: ok\n', code: 'INVALID_FIELD', path: 'metadata.name', document: 1, msg: /duplicate NetworkService ok \(also in document 1\)/ },
  { name: 'YAML syntax error has line and column', yaml: 'name: a\nmatches: [\n', code: 'YAML_SYNTAX', path: '', msg: /^Flow sequence .* at line 3, column 1/ },
  { name: 'duplicate YAML key', yaml: 'name: a\nname: b\n', code: 'YAML_SYNTAX', path: '', msg: /unique.* at line 2, column 1/ },
]

for (const c of invalid) {
  t.test(`invalid: ${c.name}`, async (t) => {
    const err = t.throws(() => parseNetworkServiceYaml(c.yaml)) as unknown
    if (!(err instanceof ConfError)) {
      t.fail(`expected ConfError, got ${String(err)}`)
      return
    }
    t.equal(err.code, c.code, 'code')
    t.equal(err.path, c.path, 'path')
    t.equal(err.document, c.document, 'document (only for files with several)')
    t.match(err.message, c.msg, 'message')
  })
}

t.test('ignoreOtherKinds skips other manifests in a bundle, still validates NetworkServices', async (t) => {
  const bundle = `apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: { name: x }\n---\n${readFileSync(seedPath, 'utf8')}`
  t.throws(() => parseNetworkServiceYaml(bundle), { code: 'UNSUPPORTED_KIND', path: 'apiVersion', document: 0 })
  t.strictSame(parseNetworkServiceYaml(bundle, { ignoreOtherKinds: true }), [SEED])
  t.throws(() => parseNetworkServiceYaml(`${bundle}---\napiVersion: v1\nkind: NetworkService\nmetadata: { name: y }\n`, { ignoreOtherKinds: true }), {
    code: 'UNSUPPORTED_KIND',
    document: 2,
  })
})

t.test('networkServiceFromObject validates objects from the registry API', async (t) => {
  t.strictSame(networkServiceFromObject({ name: 'x', matches: [{ routes: [{ destination_selector: { a: 'b' } }] }] }), {
    name: 'x',
    payload: 'IP',
    matches: [{ sourceSelector: {}, routes: [{ destinationSelector: { a: 'b' }, weight: 0 }], fallthrough: false }],
  })
  t.throws(() => networkServiceFromObject({ name: 'x', matches: [{ routes: 'a' }] }), { code: 'INVALID_FIELD', path: 'matches[0].routes' })
  t.throws(() => networkServiceFromObject(null), { code: 'INVALID_FIELD', path: '' })
})

t.test('templates', async (t) => {
  const cases: Array<{ value: string; vars: Record<string, string>; want: ReturnType<typeof renderTemplate> }> = [
    { value: 'plain', vars: {}, want: { ok: true, value: 'plain' } },
    { value: '{{.nodeName}}', vars: { nodeName: 'n1' }, want: { ok: true, value: 'n1' } },
    { value: 'pre-{{ .nodeName }}-{{.podName}}', vars: { nodeName: 'n1', podName: 'p' }, want: { ok: true, value: 'pre-n1-p' } },
    { value: '{{index . "app.kubernetes.io/name"}}', vars: { 'app.kubernetes.io/name': 'fw' }, want: { ok: true, value: 'fw' } },
    { value: '{{.nodeName}}', vars: {}, want: { ok: false, missing: ['nodeName'] } },
    { value: '{{.toString}}', vars: {}, want: { ok: false, missing: ['toString'] } },
    { value: '{{.nodeName', vars: { nodeName: 'x' }, want: { ok: false, missing: ['{{.nodeName'] } },
  ]
  for (const c of cases) t.strictSame(renderTemplate(c.value, c.vars), c.want, c.value)
  t.throws(() => parseTemplate('{{ printf "%s" .x }}'), /unsupported template/)
  t.throws(() => parseTemplate('a }} b'), /unbalanced/)
})
