// Issue 10 items 6, 7 and 21 in-process: the registration policy's parts (a manifest's metadata, the agent
// config's rules, the judgement, the registry keeping a service's policy) and registering a pod's offers
// as one store write.
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { judgeOffer, policyFromMetadata, serviceRule, type OfferRule } from '../../conf/endpoint-policy.js'
import { parseNetworkServiceYaml } from '../../conf/networkservice.js'
import { parseConfigFile } from '../../agent/config/settings.js'
import { Registry } from '../../agent/registry/registry.js'
import { serviceCodec, storedEndpointCodec, type StoredEndpoint, type StoredService } from '../../agent/registry/records.js'
import { FileStore, MemoryStore } from '../../agent/registry/store.js'
import { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { EndpointExtension, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'

const ALLOW = ['/var/run/netns/*', '/run/netns/*']
const pod = (namespace: string, labels: Record<string, string> = {}) => ({ namespace, name: 'p', labels })
const offer = (service: string, cidrs: string[] = ['172.16.0.0/24'], routes: string[] = []) => ({ service, cidrs, routes })

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-policy-unit-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a manifest\'s metadata: namespace and nsm-cni.io/endpoint-* annotations', async (t) => {
  t.equal(policyFromMetadata({ name: 'x' }), undefined, 'nothing declared')
  t.same(policyFromMetadata({ name: 'x', namespace: 'ops' }), { namespace: 'ops', endpointNamespaces: [], endpointSelector: {}, endpointRoutes: [], endpointPools: [] })
  t.same(
    policyFromMetadata({
      annotations: {
        'nsm-cni.io/endpoint-namespaces': ' a, b ,*',
        'nsm-cni.io/endpoint-selector': 'app=fw, tier=edge',
        'nsm-cni.io/endpoint-routes': '10.60.0.0/16,fd00::/8',
        'nsm-cni.io/endpoint-pools': '172.16.0.0/12',
        'other.io/kept': 'not ours',
      },
    }),
    { namespace: '', endpointNamespaces: ['a', 'b', '*'], endpointSelector: { app: 'fw', tier: 'edge' }, endpointRoutes: ['10.60.0.0/16', 'fd00::/8'], endpointPools: ['172.16.0.0/12'] },
  )
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ namespace: 'Ops' }, /^metadata\.namespace: "Ops" is not a namespace/],
    [{ annotations: { 'nsm-cni.io/endpoint-namespace': 'a' } }, /^metadata\.annotations\["nsm-cni\.io\/endpoint-namespace"\]: unknown annotation/],
    [{ annotations: { 'nsm-cni.io/endpoint-namespaces': 'a,B_' } }, /endpoint-namespaces"\]\[1\]: "B_" is not a namespace/],
    [{ annotations: { 'nsm-cni.io/endpoint-selector': 'app' } }, /endpoint-selector"\]: "app": expected key=value/],
    [{ annotations: { 'nsm-cni.io/endpoint-selector': 'app=a b' } }, /"a b" is not a label value/],
    [{ annotations: { 'nsm-cni.io/endpoint-routes': '10.0.0.0/33' } }, /endpoint-routes"\]\[0\]: "10\.0\.0\.0\/33" is not a CIDR prefix/],
    [{ annotations: { 'nsm-cni.io/endpoint-pools': '10.0.0.1/8' } }, /has host bits set \(the prefix is 10\.0\.0\.0\/8\)/],
    [{ annotations: { 'nsm-cni.io/endpoint-routes': 42 } }, /endpoint-routes"\]: must be a string/],
  ]
  for (const [metadata, message] of bad) t.throws(() => policyFromMetadata(metadata), { name: 'ConfError', message }, message.source)
  const [svc] = parseNetworkServiceYaml('apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata:\n  name: s\n  namespace: team\nspec: {}\n')
  t.same(svc?.policy?.namespace, 'team', 'the manifest parser carries it')
  t.throws(() => parseNetworkServiceYaml('---\napiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: {name: a}\n---\napiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata:\n  name: s\n  namespace: Bad\n'), {
    message: /^document 2: metadata\.namespace: "Bad" is not a namespace/,
  })
})

t.test('judging an offer', async (t) => {
  t.equal(serviceRule('s', undefined), undefined, 'no policy: no rule')
  t.equal(serviceRule('s', ServicePolicy.fromPartial({ endpointSelector: { a: 'b' } })), undefined, 'no namespace and no list: no rule')
  t.same(serviceRule('s', ServicePolicy.fromPartial({ namespace: 'ops' }))?.namespaces, ['ops'], 'own namespace by default')
  t.same(serviceRule('s', ServicePolicy.fromPartial({ namespace: 'ops', endpointNamespaces: ['x'] }))?.namespaces, ['x'], 'the list replaces it')
  t.match(judgeOffer(offer('s'), pod('a'), []), /pod a\/p may not offer service s: the service declares no namespace/)
  const own = serviceRule('s', ServicePolicy.fromPartial({ namespace: 'ops', endpointSelector: { app: 'fw' }, endpointRoutes: ['10.60.0.0/16', 'fd00::/8'], endpointPools: ['172.16.0.0/12'] })) as OfferRule
  t.equal(judgeOffer(offer('s', ['172.16.5.0/24'], ['10.60.1.0/24', 'fd00:1::/64']), pod('ops', { app: 'fw', x: 'y' }), [own]), undefined, 'admitted')
  t.match(judgeOffer(offer('s'), pod('dev', { app: 'fw' }), [own]), /service s admits namespaces ops/)
  t.match(judgeOffer(offer('s'), pod('ops'), [own]), /needs labels app=fw/)
  t.match(judgeOffer(offer('s', ['172.16.0.0/24'], ['10.0.0.0/8']), pod('ops', { app: 'fw' }), [own]), /bounds routes to 10\.60\.0\.0\/16, fd00::\/8, not 10\.0\.0\.0\/8/)
  t.match(judgeOffer(offer('s', ['172.16.0.0/24'], ['10.60.0.0/15']), pod('ops', { app: 'fw' }), [own]), /not 10\.60\.0\.0\/15/, 'a wider prefix is outside')
  t.match(judgeOffer(offer('s', ['::ffff:10.60.0.0/120'], []), pod('ops', { app: 'fw' }), [own]), /bounds pools/, 'no crossing between families')
  const anyNs: OfferRule = { source: 'agent config endpointPolicy[0]', services: ['*'], namespaces: ['*'], selector: {}, routes: [], pools: [] }
  t.equal(judgeOffer(offer('s', ['10.0.0.0/24'], ['0.0.0.0/0']), pod('dev'), [own, anyNs]), undefined, 'any rule that admits it whole is enough')
  t.match(judgeOffer(offer('t'), pod('dev'), [{ ...anyNs, services: ['s'] }]), /declares no namespace/, 'a rule for another service does not count')
})

t.test('the agent config\'s endpointPolicy', async (t) => {
  const rules = parseConfigFile('/etc/nsm/agent.yaml', 'endpointPolicy:\n  - services: [a, "*"]\n    namespaces: [ops]\n    podSelector: {app: fw}\n    routes: [10.0.0.0/8]\n    pools: ["fd00::/8"]\n').endpointPolicy
  t.same(rules, [{ source: 'agent config endpointPolicy[0]', services: ['a', '*'], namespaces: ['ops'], selector: { app: 'fw' }, routes: ['10.0.0.0/8'], pools: ['fd00::/8'] }])
  const bad: Array<[string, string]> = [
    ['endpointPolicy: {}', '/etc/nsm/agent.yaml: endpointPolicy: must be a list of rules'],
    ['endpointPolicy: [{services: [a]}]', '/etc/nsm/agent.yaml: endpointPolicy[0].namespaces: must be a non-empty list of strings'],
    ['endpointPolicy: [{services: [A], namespaces: [x]}]', '/etc/nsm/agent.yaml: endpointPolicy[0].services[0]: "A" is not a service name nor "*"'],
    ['endpointPolicy: [{services: [a], namespaces: [x], podSelecter: {}}]', '/etc/nsm/agent.yaml: endpointPolicy[0].podSelecter: unknown key (known: services, namespaces, podSelector, routes, pools)'],
    ['endpointPolicy: [{services: [a], namespaces: [x], routes: [10.0.0.1/8]}]', '/etc/nsm/agent.yaml: endpointPolicy[0].routes[0]: 10.0.0.1/8 has host bits set (the prefix is 10.0.0.0/8)'],
    ['endpointPolicy: [{services: [a], namespaces: [x], podSelector: {app: [1]}}]', '/etc/nsm/agent.yaml: endpointPolicy[0].podSelector.app: [1] is not a label value'],
  ]
  for (const [text, message] of bad) t.throws(() => parseConfigFile('/etc/nsm/agent.yaml', text), { name: 'ConfigError', message }, message)
})

t.test('the registry keeps a service\'s policy: stored, refreshed, dropped, validated; old files read', async (t) => {
  const dir = tmp(t)
  const path = join(dir, 'services.json')
  const open = () => Registry.open({ services: new FileStore(path, serviceCodec), endpoints: new MemoryStore(), netnsAllow: ALLOW, defaultTtlMs: 60_000 })
  const r1 = await open()
  const policy = ServicePolicy.fromPartial({ namespace: 'ops', endpointRoutes: ['10.60.0.0/16'] })
  await r1.registerService(NetworkService.fromPartial({ name: 's' }), policy)
  await r1.registerService(NetworkService.fromPartial({ name: 's', payload: 'ETHERNET' }))
  t.same(r1.servicePolicy('s'), policy, 'a plain Register keeps the policy')
  await t.rejects(r1.registerService(NetworkService.fromPartial({ name: 's' }), ServicePolicy.fromPartial({ endpointRoutes: ['10.60.0.1/16'] })), {
    code: 'INVALID_ARGUMENT',
    field: 'policy.endpoint_routes[0]',
  })
  await t.rejects(r1.registerService(NetworkService.fromPartial({ name: 's' }), ServicePolicy.fromPartial({ namespace: '*' })), { code: 'INVALID_ARGUMENT', field: 'policy.namespace' })
  t.same(r1.servicePolicy('s'), policy, 'a refused policy changed nothing')
  r1.close()
  const r2 = await open()
  t.same(r2.servicePolicy('s'), policy, 'persisted')
  t.equal(r2.service('s')?.payload, 'ETHERNET')
  await r2.registerService(NetworkService.fromPartial({ name: 's' }), null)
  t.equal(r2.servicePolicy('s'), undefined, 'null drops it')
  r2.close()
  // A services.json written before policies existed: NSM's NetworkService JSON per key.
  writeFileSync(path, JSON.stringify({ version: 1, items: { old: { name: 'old', payload: 'IP', matches: [] } } }))
  const r3 = await open()
  t.equal(r3.service('old')?.name, 'old')
  t.equal(r3.servicePolicy('old'), undefined)
  r3.close()
  t.same(serviceCodec.fromJSON(serviceCodec.toJSON({ service: NetworkService.fromPartial({ name: 'x' }), policy })), { service: NetworkService.fromPartial({ name: 'x' }), policy })
})

/** A store that counts its writes. */
class CountingStore<T> extends MemoryStore<T> {
  writes = 0
  fail = false
  override async put(key: string, value: T): Promise<void> {
    this.writes++
    return super.put(key, value)
  }
  override async delete(key: string): Promise<boolean> {
    this.writes++
    return super.delete(key)
  }
  override async apply(puts: ReadonlyArray<readonly [string, T]>, deletes: readonly string[]): Promise<void> {
    this.writes++
    if (this.fail) throw new Error('disk full')
    return super.apply(puts, deletes)
  }
}

t.test('item 21: 1,000 offers are one store write to register and one to unregister; all or nothing', async (t) => {
  const endpoints = new CountingStore<StoredEndpoint>()
  const registry = await Registry.open({ services: new MemoryStore<StoredService>(), endpoints, netnsAllow: ALLOW, defaultTtlMs: 60_000 })
  t.teardown(() => registry.close())
  const regs = Array.from({ length: 1000 }, (_, i) => ({
    endpoint: NetworkServiceEndpoint.fromPartial({ name: `e${i}`, networkServiceNames: [`s${i}`], url: 'file:///run/netns/x' }),
    extension: EndpointExtension.fromPartial({ cidrPools: ['10.0.0.0/24'] }),
  }))
  await registry.registerEndpoints(regs)
  t.equal(endpoints.writes, 1, 'one write for 1,000 registrations')
  t.equal(registry.findEndpoints().length, 1000)
  await registry.unregisterEndpoints(regs.map((r) => r.endpoint.name))
  t.equal(endpoints.writes, 2, 'one write for 1,000 unregistrations')
  t.equal(registry.findEndpoints().length, 0)

  const withBad = [...regs.slice(0, 10), { endpoint: NetworkServiceEndpoint.fromPartial({ name: 'Bad', networkServiceNames: ['s'] }), extension: undefined }]
  await t.rejects(registry.registerEndpoints(withBad), { code: 'INVALID_ARGUMENT', field: 'network_service_endpoint.name' })
  await t.rejects(registry.registerEndpoints([regs[0]!, regs[0]!]), { message: /registered twice in one call/ })
  endpoints.fail = true
  await t.rejects(registry.registerEndpoints(regs.slice(0, 10)), /disk full/)
  t.equal(registry.findEndpoints().length, 0, 'nothing registered by a refused or failed batch')
})

t.test('item 21: the file store writes a batch once, and a failed batch leaves file and view as they were', async (t) => {
  const dir = tmp(t)
  const path = join(dir, 'reg', 'endpoints.json')
  const store = new FileStore(path, storedEndpointCodec)
  await store.load()
  const value = (name: string): StoredEndpoint => ({ endpoint: NetworkServiceEndpoint.fromPartial({ name }), extension: EndpointExtension.fromPartial({ endpointName: name }) })
  await store.apply([['a', value('a')], ['b', value('b')]], [])
  await store.apply([['c', value('c')]], ['a'])
  t.same(Object.keys((JSON.parse(readFileSync(path, 'utf8')) as { items: object }).items).sort(), ['b', 'c'])
  // Make the next write fail (root ignores modes: a file where the store's directory should be).
  const blocker = join(dir, 'blocked')
  const blocked = new FileStore(join(blocker, 'endpoints.json'), storedEndpointCodec)
  await blocked.load()
  writeFileSync(blocker, 'not a directory')
  await t.rejects(blocked.apply([['a', value('a')], ['b', value('b')]], []))
  rmSync(blocker)
  mkdirSync(blocker)
  await blocked.apply([['z', value('z')]], [])
  t.same(Object.keys((JSON.parse(readFileSync(join(blocker, 'endpoints.json'), 'utf8')) as { items: object }).items), ['z'], 'the failed batch was put back: none of it was written later')
})
