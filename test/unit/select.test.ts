// Unit tests for agent/select (ARCHITECTURE §6): table-driven selection, the seed's composition among them,
// round-robin and local-first ordering, and the explain report.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseNetworkServiceYaml, type NetworkService } from '../../conf/networkservice.js'
import { RoundRobin, SelectError, explain, formatExplanation, selectEndpoints, type Decision, type EndpointCandidate } from '../../agent/select/index.js'

const SEED_FILE = fileURLToPath(new URL('../../conf/examples/secure-intranet-connectivity.yaml', import.meta.url))
const [seed] = parseNetworkServiceYaml(readFileSync(SEED_FILE, 'utf8'))
if (seed === undefined) throw new Error('seed example holds no service')
const SVC = seed.name
const NOW = 1_700_000_000_000

function ep(name: string, labels: Record<string, string>, opts: Partial<EndpointCandidate> = {}): EndpointCandidate {
  return { name, networkServiceNames: [SVC], networkServiceLabels: { [SVC]: labels }, local: true, ...opts }
}

function svc(matches: NetworkService['matches']): NetworkService {
  return { name: SVC, payload: 'IP', matches }
}
const route = (sel: Record<string, string>) => ({ destinationSelector: sel, weight: 0 })

const firewall = ep('firewall', { app: 'firewall' })
const vpn = ep('vpn-gateway', { app: 'vpn-gateway' })
const backup = ep('backup', { app: 'backup' })

const fallthroughSvc = svc([
  { sourceSelector: { app: 'firewall' }, routes: [route({ app: 'vpn-gateway' })], fallthrough: true },
  { sourceSelector: {}, routes: [route({ app: 'backup' })], fallthrough: false },
])

interface Case {
  name: string
  service?: NetworkService
  candidates: EndpointCandidate[]
  client: Record<string, string>
  exclude?: string[]
  want: string[] | RegExp
  decision: Decision['kind']
  matchIndex?: number
}

const cases: Case[] = [
  { name: 'seed: a client reaches the firewall (second match)', candidates: [vpn, firewall], client: { app: 'web', nodeName: 'n1' }, want: ['firewall'], decision: 'match', matchIndex: 1 },
  { name: 'seed: a client without labels reaches the firewall', candidates: [vpn, firewall], client: {}, want: ['firewall'], decision: 'match', matchIndex: 1 },
  { name: 'seed: the firewall (app=firewall) reaches the vpn-gateway (first match)', candidates: [firewall, vpn], client: { app: 'firewall' }, want: ['vpn-gateway'], decision: 'match', matchIndex: 0 },
  {
    name: 'seed: the firewall with no vpn-gateway gets no endpoint (no fallthrough), not itself',
    candidates: [firewall],
    client: { app: 'firewall' },
    want: /match\[0\] applies \(client has app=firewall\) but no endpoint satisfies its routes \(app=vpn-gateway\) and it has no fallthrough/,
    decision: 'no-endpoint',
  },
  { name: 'seed: no endpoint registered at all', candidates: [], client: {}, want: /no registered, unexpired endpoint offers secure-intranet-connectivity$/, decision: 'no-endpoint' },
  { name: 'fallthrough: firewall with no vpn-gateway falls to the backup', service: fallthroughSvc, candidates: [firewall, backup], client: { app: 'firewall' }, want: ['backup'], decision: 'match', matchIndex: 1 },
  { name: 'fallthrough not needed when the first match has endpoints', service: fallthroughSvc, candidates: [vpn, backup], client: { app: 'firewall' }, want: ['vpn-gateway'], decision: 'match', matchIndex: 0 },
  {
    name: 'fallthrough into no applying match fails',
    service: svc([
      { sourceSelector: { app: 'firewall' }, routes: [route({ app: 'vpn-gateway' })], fallthrough: true },
      { sourceSelector: { app: 'other' }, routes: [route({ app: 'backup' })], fallthrough: false },
    ]),
    candidates: [backup],
    client: { app: 'firewall' },
    want: /match\[0\] applied with no endpoint and fell through, and no later match applies/,
    decision: 'no-endpoint',
  },
  {
    name: 'template: {{.nodeName}} picks the endpoint on the client node',
    service: svc([{ sourceSelector: {}, routes: [route({ node: '{{.nodeName}}' })], fallthrough: false }]),
    candidates: [ep('e1', { node: 'n1' }), ep('e2', { node: 'n2' })],
    client: { nodeName: 'n2' },
    want: ['e2'],
    decision: 'match',
    matchIndex: 0,
  },
  {
    name: 'template with literal text around it',
    service: svc([{ sourceSelector: {}, routes: [route({ zone: 'zone-{{.nodeName}}' })], fallthrough: false }]),
    candidates: [ep('e1', { zone: 'zone-n1' }), ep('e2', { zone: '{{.nodeName}}' })],
    client: { nodeName: 'n1' },
    want: ['e1'],
    decision: 'match',
  },
  {
    name: 'template naming a label the client lacks never matches',
    service: svc([{ sourceSelector: {}, routes: [route({ node: '{{.nodeName}}' })], fallthrough: false }]),
    candidates: [ep('e1', { node: '' }), ep('e2', { node: '<no value>' })],
    client: {},
    want: /node=\{\{\.nodeName\}\}: client lacks nodeName/,
    decision: 'no-endpoint',
  },
  {
    name: 'templated source selector',
    service: svc([{ sourceSelector: { home: '{{.nodeName}}' }, routes: [route({ app: 'a' })], fallthrough: false }, { sourceSelector: {}, routes: [route({ app: 'b' })], fallthrough: false }]),
    candidates: [ep('a', { app: 'a' }), ep('b', { app: 'b' })],
    client: { nodeName: 'n1', home: 'n1' },
    want: ['a'],
    decision: 'match',
    matchIndex: 0,
  },
  { name: 'empty destination selector: every candidate', service: svc([{ sourceSelector: {}, routes: [route({})], fallthrough: false }]), candidates: [vpn, firewall], client: {}, want: ['firewall', 'vpn-gateway'], decision: 'match' },
  { name: 'no matches: every candidate', service: svc([]), candidates: [vpn, firewall, backup], client: {}, want: ['backup', 'firewall', 'vpn-gateway'], decision: 'no-matches' },
  {
    name: 'no match applies: every candidate (NSM discover semantics)',
    service: svc([{ sourceSelector: { app: 'x' }, routes: [route({ app: 'firewall' })], fallthrough: false }]),
    candidates: [vpn, firewall],
    client: { app: 'y' },
    want: ['firewall', 'vpn-gateway'],
    decision: 'no-match-applied',
  },
  {
    name: 'a match with no routes yields nothing',
    service: svc([{ sourceSelector: {}, routes: [], fallthrough: false }]),
    candidates: [vpn],
    client: {},
    want: /it has no routes/,
    decision: 'no-endpoint',
  },
  {
    name: 'union over routes, each endpoint once',
    service: svc([{ sourceSelector: {}, routes: [route({ app: 'firewall' }), route({ app: 'backup' }), route({})], fallthrough: false }]),
    candidates: [firewall, backup, vpn],
    client: {},
    want: ['backup', 'firewall', 'vpn-gateway'],
    decision: 'match',
  },
  {
    name: 'endpoint must have every selector key with the same value',
    service: svc([{ sourceSelector: {}, routes: [route({ app: 'fw', tier: 'edge' })], fallthrough: false }]),
    candidates: [ep('partial', { app: 'fw' }), ep('wrong', { app: 'fw', tier: 'core' }), ep('full', { app: 'fw', tier: 'edge', extra: 'x' })],
    client: {},
    want: ['full'],
    decision: 'match',
  },
  {
    name: 'labels of another service do not count',
    candidates: [{ name: 'fw2', networkServiceNames: [SVC, 'other'], networkServiceLabels: { other: { app: 'firewall' } }, local: true }],
    client: {},
    want: /no endpoint satisfies its routes \(app=firewall\)/,
    decision: 'no-endpoint',
  },
  {
    name: 'endpoints that do not list the service are not candidates even with labels for it',
    candidates: [{ ...firewall, networkServiceNames: ['other'] }],
    client: {},
    want: /no registered, unexpired endpoint offers/,
    decision: 'no-endpoint',
  },
  {
    name: 'expired endpoints are skipped; unexpired (number or Date) kept',
    service: svc([]),
    candidates: [ep('old', {}, { expiresAt: NOW - 1 }), ep('edge', {}, { expiresAt: NOW }), ep('fresh', {}, { expiresAt: NOW + 1 }), ep('date', {}, { expiresAt: new Date(NOW + 1000) })],
    client: {},
    want: ['date', 'fresh'],
    decision: 'no-matches',
  },
  { name: 'only expired endpoints', candidates: [ep('firewall', { app: 'firewall' }, { expiresAt: NOW - 5 })], client: {}, want: /offers secure-intranet-connectivity \(skipped: firewall expired\)/, decision: 'no-endpoint' },
  { name: 'excluded endpoints are skipped', service: svc([]), candidates: [firewall, backup], client: {}, exclude: ['firewall'], want: ['backup'], decision: 'no-matches' },
  {
    name: 'local endpoints first, each group sorted',
    service: svc([]),
    candidates: [ep('r-b', {}, { local: false }), ep('l-b', {}), ep('r-a', {}, { local: false }), ep('l-a', {})],
    client: {},
    want: ['l-a', 'l-b', 'r-a', 'r-b'],
    decision: 'no-matches',
  },
  { name: 'duplicate registrations count once', service: svc([]), candidates: [firewall, { ...firewall }], client: {}, want: ['firewall'], decision: 'no-matches' },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    const input = { service: c.service ?? seed, candidates: c.candidates, clientLabels: c.client, now: NOW, ...(c.exclude ? { exclude: c.exclude } : {}) }
    const ex = explain(input)
    t.equal(ex.decision.kind, c.decision, 'decision')
    if (c.matchIndex !== undefined) t.strictSame(ex.decision, { kind: 'match', index: c.matchIndex }, 'deciding match')
    if (Array.isArray(c.want)) {
      t.strictSame(selectEndpoints(input).map((e) => e.name), c.want, 'order')
      t.strictSame(ex.order, c.want, 'explain agrees')
      t.equal(ex.chosen, c.want[0], 'chosen')
    } else {
      const err = t.throws(() => selectEndpoints(input)) as unknown
      t.ok(err instanceof SelectError, 'SelectError')
      if (err instanceof SelectError) {
        t.equal(err.code, 'NO_ENDPOINT')
        t.match(err.message, /^no endpoint for service secure-intranet-connectivity: /)
        t.match(err.message, c.want)
        t.equal(err.explanation.chosen, null)
      }
    }
  })
}

t.test('round-robin per service; explain never advances; returns the caller objects', async (t) => {
  const rr = new RoundRobin()
  const cands = [ep('c', {}), ep('a', {}), ep('b', {}), ep('r', {}, { local: false })]
  const service = svc([])
  const input = { service, candidates: cands, clientLabels: {}, now: NOW, roundRobin: rr }
  const firsts: string[] = []
  for (let i = 0; i < 4; i++) {
    t.equal(explain(input).roundRobinCursor, i)
    t.equal(explain(input).roundRobinCursor, i, 'explain is side-effect free')
    const order = selectEndpoints(input)
    t.equal(order[order.length - 1]?.name, 'r', 'the remote endpoint stays after the local ones')
    firsts.push(order[0]?.name ?? '')
  }
  t.strictSame(firsts, ['a', 'b', 'c', 'a'])
  t.equal(selectEndpoints(input)[0], cands[2], 'same object the caller passed in')
  t.equal(rr.peek('other'), 0, 'another service has its own cursor')
  t.throws(() => selectEndpoints({ ...input, candidates: [] }), SelectError)
  t.equal(rr.peek(SVC), 5, 'a failed selection does not advance the cursor')
  const restored = RoundRobin.from(rr.toJSON())
  t.equal(restored.peek(SVC), 5, 'round-trips through JSON')
  restored.forget(SVC)
  t.equal(restored.peek(SVC), 0)
  t.strictSame(RoundRobin.from({ x: -1, y: 1.5, z: 2 }).toJSON(), { z: 2 }, 'bad persisted cursors are dropped')
})

t.test('explain reports every match, route and candidate for nsmctl explain', async (t) => {
  const ex = explain({ service: seed, candidates: [firewall, vpn, ep('old', { app: 'firewall' }, { expiresAt: NOW - 1 }), { ...backup, networkServiceNames: ['x'] }], clientLabels: { app: 'web' }, now: NOW })
  t.strictSame(
    ex.candidates.map((c) => [c.name, c.status]),
    [['firewall', 'candidate'], ['vpn-gateway', 'candidate'], ['old', 'expired'], ['backup', 'not-offering']],
  )
  t.strictSame(ex.matches.map((m) => [m.index, m.applies, m.outcome, m.reason]), [
    [0, false, 'not-applied', 'client lacks app=firewall (has app=web)'],
    [1, true, 'chosen', 'empty source selector applies to every client'],
  ])
  t.strictSame(ex.matches[1]?.routes, [{ index: 0, destinationSelector: { app: 'firewall' }, rendered: { app: 'firewall' }, missing: [], endpoints: ['firewall'] }])
  t.strictSame(ex.qualified, ['firewall'])
  t.equal(ex.summary, 'match[1] applies (empty source selector applies to every client) and 1 endpoint(s) satisfy its routes; firewall is tried first (local, round-robin cursor 0)')

  const ft = explain({ service: fallthroughSvc, candidates: [backup], clientLabels: { app: 'firewall' }, now: NOW })
  t.strictSame(ft.matches.map((m) => m.outcome), ['fell-through', 'chosen'])
  t.match(ft.summary, /match\[1\] applies .* after fallthrough from match\[0\]/)

  const stop = explain({ service: svc([...seed.matches.slice(0, 1), ...seed.matches]), candidates: [firewall], clientLabels: { app: 'firewall' }, now: NOW })
  t.strictSame(stop.matches.map((m) => m.outcome), ['no-endpoint', 'not-reached', 'not-reached'], 'matches after the deciding one are not reached')
  t.equal(ex.clientLabels.app, 'web')
})

t.test('formatExplanation: what nsmctl explain prints', async (t) => {
  const service = svc([
    { sourceSelector: { app: 'firewall' }, routes: [route({ app: 'vpn-gateway', node: '{{.nodeName}}' })], fallthrough: true },
    ...seed.matches.slice(1),
  ])
  const text = formatExplanation(
    explain({ service, candidates: [firewall, ep('vpn-gateway', { app: 'vpn-gateway', node: 'n2' }, { local: false }), ep('old', {}, { expiresAt: NOW })], clientLabels: { app: 'firewall', nodeName: 'n1' }, now: NOW }),
  )
  t.equal(
    text,
    [
      'service:  secure-intranet-connectivity',
      'client:   app=firewall,nodeName=n1',
      '',
      'endpoints:',
      '  NAME         WHERE   STATUS     LABELS',
      '  firewall     local   candidate  app=firewall',
      '  vpn-gateway  remote  candidate  app=vpn-gateway,node=n2',
      '  old          local   expired    -',
      '',
      'matches:',
      '  [0] source app=firewall, fallthrough: applies (client has app=firewall) → fell-through',
      '      route[0] app=vpn-gateway,node={{.nodeName}} = app=vpn-gateway,node=n1 → no endpoint',
      '  [1] source (any client): applies (empty source selector applies to every client) → chosen',
      '      route[0] app=firewall → firewall',
      '',
      'order:    firewall',
      'result:   match[1] applies (empty source selector applies to every client) and 1 endpoint(s) satisfy its routes after fallthrough from match[0]; firewall is tried first (local, round-robin cursor 0)',
      '',
    ].join('\n'),
  )
  const none = formatExplanation(explain({ service: svc([]), candidates: [], clientLabels: {}, now: NOW }))
  t.match(none, /client: {3}\(no labels\)\n\nendpoints: none registered\n\nmatches: {2}none \(every candidate qualifies\)\n\norder: {4}\(none\)\nresult: {3}no registered, unexpired endpoint offers secure-intranet-connectivity\n$/)
  const stopped = formatExplanation(explain({ service: seed, candidates: [firewall], clientLabels: { app: 'firewall' }, now: NOW }))
  t.match(stopped, /\[0\] source app=firewall: applies \(client has app=firewall\) → no-endpoint\n {6}route\[0\] app=vpn-gateway → no endpoint\n {2}\[1\] source \(any client\): not reached/)
  const web = formatExplanation(explain({ service: seed, candidates: [firewall], clientLabels: { app: 'web' }, now: NOW }))
  t.match(web, /\[0\] source app=firewall: does not apply \(client lacks app=firewall \(has app=web\)\)/)
  const missing = formatExplanation(explain({ service, candidates: [firewall], clientLabels: { app: 'firewall' }, now: NOW }))
  t.match(missing, /route\[0\] app=vpn-gateway,node=\{\{\.nodeName\}\} \(needs client label nodeName\) → no endpoint/)
})
