// The agent's registries through the real socket: NSM NetworkServiceRegistry and
// NetworkServiceEndpointRegistry (Register, Find, Find+watch, Unregister, expiry), our RegisterEndpoint
// with its extension, validation (INVALID_ARGUMENT naming the field, nothing changed), and persistence
// across a restart. Registered endpoints get real namespaces: the agent's healing unregisters an
// endpoint whose netns is gone.
import t, { type Test } from 'tap'
import { NetworkService, NetworkServiceEndpoint, NetworkServiceEndpointRegistryDefinition as NSE_REG, NetworkServiceRegistryDefinition as NS_REG, type NetworkServiceEndpointResponse, type NetworkServiceResponse } from '../../proto/gen/registry/registry.js'
import { AgentDefinition, EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import { GrpcCallError } from '../../agent/client/client.js'
import { GrpcStatus } from '../../pkg/codes.js'
import { collect, startAgent, type RunningAgent } from '../lib/agent.js'
import { makeNetns } from '../lib/netns.js'

const seed = NetworkService.fromPartial({
  name: 'secure-intranet-connectivity',
  payload: 'IP',
  matches: [
    { sourceSelector: { app: 'firewall' }, routes: [{ destinationSelector: { app: 'vpn-gateway' } }] },
    { routes: [{ destinationSelector: { app: 'firewall' } }] },
  ],
})

/** An endpoint message; with `t`, its url is a fresh real netns removed at teardown. */
function nse(name: string, extra: Partial<NetworkServiceEndpoint> = {}, t?: Test): NetworkServiceEndpoint {
  return NetworkServiceEndpoint.fromPartial({
    name,
    networkServiceNames: ['secure-intranet-connectivity'],
    networkServiceLabels: { 'secure-intranet-connectivity': { labels: { app: name.startsWith('fw') ? 'firewall' : 'vpn-gateway' } } },
    url: t === undefined ? '' : `file://${makeNetns(t, 'rg').path}`,
    ...extra,
  })
}

async function findEndpoints(agent: RunningAgent, query: Partial<NetworkServiceEndpoint> = {}): Promise<NetworkServiceEndpoint[]> {
  const out: NetworkServiceEndpoint[] = []
  await agent.client.stream(NSE_REG, NSE_REG.methods.find, { networkServiceEndpoint: NetworkServiceEndpoint.fromPartial(query), watch: false }, (r) => {
    if (r.networkServiceEndpoint !== undefined) out.push(r.networkServiceEndpoint)
  })
  return out
}

async function findServices(agent: RunningAgent): Promise<NetworkService[]> {
  const out: NetworkService[] = []
  await agent.client.stream(NS_REG, NS_REG.methods.find, { networkService: undefined, watch: false }, (r) => {
    if (r.networkService !== undefined) out.push(r.networkService)
  })
  return out
}

async function rejects(t: Test, p: Promise<unknown>, code: number, message: RegExp, what: string): Promise<void> {
  try {
    await p
    t.fail(`${what}: expected an error`)
  } catch (err) {
    t.ok(err instanceof GrpcCallError, `${what}: a gRPC error`)
    t.equal((err as GrpcCallError).code, code, `${what}: status ${code}`)
    t.match((err as GrpcCallError).message, message, `${what}: message`)
  }
}

t.test('network services: register, find, validation, unregister', async (t) => {
  const agent = await startAgent(t)
  const stored = await agent.client.unary(NS_REG, NS_REG.methods.register, seed)
  t.equal(stored.name, seed.name)
  t.same((await findServices(agent)).map((s) => s.name), [seed.name])

  const bad = NetworkService.fromPartial({ name: 'other', matches: [{ routes: [{ destinationSelector: { 'bad key!': 'x' } }] }] })
  await rejects(t, agent.client.unary(NS_REG, NS_REG.methods.register, bad), GrpcStatus.INVALID_ARGUMENT, /network_service\.matches\[0\]\.routes\[0\]\.destination_selector/, 'bad selector key')
  await rejects(t, agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: 'Bad_Name' })), GrpcStatus.INVALID_ARGUMENT, /network_service\.name/, 'bad name')
  t.same((await findServices(agent)).map((s) => s.name), [seed.name], 'nothing changed')

  await agent.client.unary(NS_REG, NS_REG.methods.unregister, NetworkService.fromPartial({ name: seed.name }))
  t.same(await findServices(agent), [])
})

t.test('network services: Find with watch streams registrations and removals', async (t) => {
  const agent = await startAgent(t)
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: 'before', payload: 'ETHERNET' }))
  const watch = collect<NetworkServiceResponse>((on, signal) =>
    agent.client.stream(NS_REG, NS_REG.methods.find, { networkService: NetworkService.fromPartial({}), watch: true }, on, { signal }),
  )
  t.teardown(() => watch.cancel())
  const existing = await watch.until((r) => r.networkService?.name === 'before')
  t.equal(existing.networkService?.payload, 'ETHERNET', 'existing services first')
  await agent.client.unary(NS_REG, NS_REG.methods.register, seed)
  await watch.until((r) => r.networkService?.name === seed.name && !r.deleted)
  await agent.client.unary(NS_REG, NS_REG.methods.unregister, NetworkService.fromPartial({ name: 'before' }))
  const removed = await watch.until((r) => r.networkService?.name === 'before' && r.deleted)
  t.ok(removed.deleted)
  // A filtered watch sees only its service.
  const only = collect<NetworkServiceResponse>((on, signal) =>
    agent.client.stream(NS_REG, NS_REG.methods.find, { networkService: NetworkService.fromPartial({ name: 'later' }), watch: true }, on, { signal }),
  )
  t.teardown(() => only.cancel())
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: 'other' }))
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: 'later' }))
  await only.until((r) => r.networkService?.name === 'later')
  t.same(only.items.map((r) => r.networkService?.name), ['later'], 'filtered by name')
})

t.test('endpoints: register, find with query, watch (update, unregister, expiry)', async (t) => {
  const agent = await startAgent(t)
  const watch = collect<NetworkServiceEndpointResponse>((on, signal) =>
    agent.client.stream(NSE_REG, NSE_REG.methods.find, { networkServiceEndpoint: NetworkServiceEndpoint.fromPartial({}), watch: true }, on, { signal }),
  )
  t.teardown(() => watch.cancel())

  const fwMsg = nse('fw-1', {}, t)
  const fw = await agent.client.unary(NSE_REG, NSE_REG.methods.register, fwMsg)
  t.ok(fw.expirationTime !== undefined, 'the registry sets an expiration time')
  t.ok(fw.initialRegistrationTime !== undefined)
  await agent.client.unary(NSE_REG, NSE_REG.methods.register, nse('vpn-1', {}, t))
  await watch.until((r) => r.networkServiceEndpoint?.name === 'vpn-1' && !r.deleted)

  t.same((await findEndpoints(agent)).map((e) => e.name), ['fw-1', 'vpn-1'])
  const byLabel = await findEndpoints(agent, { networkServiceLabels: { 'secure-intranet-connectivity': { labels: { app: 'firewall' } } } })
  t.same(byLabel.map((e) => e.name), ['fw-1'], 'label query')

  // Refresh keeps the first registration time.
  const again = await agent.client.unary(NSE_REG, NSE_REG.methods.register, fwMsg)
  t.same(again.initialRegistrationTime, fw.initialRegistrationTime, 'refresh keeps initial_registration_time')

  await agent.client.unary(NSE_REG, NSE_REG.methods.unregister, NetworkServiceEndpoint.fromPartial({ name: 'fw-1' }))
  const gone = await watch.until((r) => r.networkServiceEndpoint?.name === 'fw-1' && r.deleted)
  t.ok(gone.deleted, 'watch sees the unregister')

  // Expiry: an endpoint registered to expire soon disappears and watchers are told.
  const soon = Date.now() + 300
  await agent.client.unary(NSE_REG, NSE_REG.methods.register, nse('vpn-2', { expirationTime: { seconds: Math.floor(soon / 1000), nanos: (soon % 1000) * 1e6 } }, t))
  await watch.until((r) => r.networkServiceEndpoint?.name === 'vpn-2' && r.deleted)
  t.same((await findEndpoints(agent)).map((e) => e.name), ['vpn-1'], 'expired endpoint no longer found')
  t.ok(agent.logs.some((l) => l.msg === 'endpoint expired' && l.endpoint === 'vpn-2'), 'agent logged the expiry')
})

t.test('endpoint validation: field named, nothing stored', async (t) => {
  const agent = await startAgent(t)
  const past = Math.floor(Date.now() / 1000) - 10
  const cases: Array<[string, NetworkServiceEndpoint, RegExp]> = [
    ['no name', nse(''), /network_service_endpoint\.name: is required/],
    ['no services', nse('a', { networkServiceNames: [], networkServiceLabels: {} }), /network_service_endpoint\.network_service_names/],
    ['labels for unlisted service', nse('a', { networkServiceLabels: { other: { labels: {} } } }), /network_service_labels\[other\]/],
    ['netns outside allowlist', nse('a', { url: 'file:///etc/passwd' }), /network_service_endpoint\.url: netns \/etc\/passwd is outside the allowlist/],
    ['bad url scheme', nse('a', { url: 'http://x' }), /network_service_endpoint\.url/],
    ['expired already', nse('a', { expirationTime: { seconds: past, nanos: 0 } }), /expiration_time: is in the past/],
  ]
  for (const [what, msg, re] of cases) {
    await rejects(t, agent.client.unary(NSE_REG, NSE_REG.methods.register, msg), GrpcStatus.INVALID_ARGUMENT, re, what)
  }
  t.same(await findEndpoints(agent), [], 'nothing registered')
})

t.test('RegisterEndpoint with extension; ListEndpoints; persistence across restart', async (t) => {
  const first = await startAgent(t)
  await first.client.unary(NS_REG, NS_REG.methods.register, seed)
  const vpnNetns = makeNetns(t, 'rv').path
  const extension = EndpointExtension.fromPartial({
    netnsPath: vpnNetns,
    cidrPools: ['172.16.1.0/24', 'fd00:1::/64'],
    routes: [{ prefix: '10.0.0.0/8', nextHop: '' }],
  })
  const reg = await first.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, { endpoint: nse('vpn-1', { url: '' }), extension })
  t.equal(reg.extension?.endpointName, 'vpn-1', 'extension keyed by endpoint name')

  const badPool = EndpointExtension.fromPartial({ ...extension, cidrPools: ['172.16.1.0/33'] })
  await rejects(t, first.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, { endpoint: nse('vpn-2'), extension: badPool }), GrpcStatus.INVALID_ARGUMENT, /extension\.cidr_pools\[0\]/, 'bad pool')
  const badNetns = EndpointExtension.fromPartial({ netnsPath: '/tmp/x' })
  await rejects(t, first.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, { endpoint: nse('vpn-2'), extension: badNetns }), GrpcStatus.INVALID_ARGUMENT, /extension\.netns_path/, 'netns outside allowlist')
  await rejects(t, first.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'nope' }), GrpcStatus.NOT_FOUND, /nope is not registered/, 'unknown endpoint')

  const listed = await first.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
  t.same(listed.endpoints.map((e) => e.endpoint?.name), ['vpn-1'], 'only the valid registration is stored')
  t.same(listed.endpoints[0]?.extension?.cidrPools, ['172.16.1.0/24', 'fd00:1::/64'])

  t.same(await first.stop(), { code: 0, signal: null })
  const second = await startAgent(t, { dir: first.dir })
  const after = await second.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: 'vpn-1' })
  t.same(after.endpoints[0]?.extension?.routes, [{ prefix: '10.0.0.0/8', nextHop: '' }], 'extension survives a restart')
  t.same((await findServices(second)).map((s) => s.name), [seed.name], 'service survives a restart')
})
