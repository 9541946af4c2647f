// The pipeline's select element (agent/pipeline/select.ts) on what the client's connection says: a request
// naming `network_service_endpoint_name` goes to that endpoint or fails with NO_ENDPOINT naming it and the
// service (never another); the agent's own answer re-sent on a refresh still works; healing away from the
// named endpoint (it is excluded) is not pinned to it; RESELECT_REQUESTED drops the stickiness and tries the
// previous endpoint last. The element after select is a recording test element (chain elements are the
// test doubles here), which can refuse an endpoint the way a failing build does.
import t from 'tap'
import type { NetworkService } from '../../conf/networkservice.js'
import { State, type Connection } from '../../proto/gen/networkservice/connection.js'
import { select, type SelectOptions } from '../../agent/pipeline/select.js'
import type { Handler, PipelineRequest } from '../../agent/pipeline/chain.js'
import type { DatapathRecord, EndpointInfo } from '../../agent/pipeline/types.js'
import { RoundRobin } from '../../agent/select/index.js'
import { AgentError } from '../../agent/errors.js'

const SVC = 'secure-intranet-connectivity'
const NOW = 1_700_000_000_000
const FIELD = 'connection.network_service_endpoint_name'

function ep(name: string, labels: Record<string, string> = {}, more: Partial<EndpointInfo> = {}): EndpointInfo {
  return { name, networkServiceNames: [SVC], networkServiceLabels: { [SVC]: labels }, local: true, node: '', netns: `/var/run/netns/${name}`, pools: ['10.0.0.0/24'], routes: [], ...more }
}

const anyService: NetworkService = { name: SVC, payload: 'IP', matches: [] }
/** Only app=firewall endpoints serve clients. */
const firewallsOnly: NetworkService = { name: SVC, payload: 'IP', matches: [{ sourceSelector: {}, routes: [{ destinationSelector: { app: 'firewall' }, weight: 0 }], fallthrough: false }] }

function previousOn(endpointName: string): DatapathRecord {
  return {
    version: 2,
    connectionId: 'c1',
    service: SVC,
    endpointName,
    clientNetns: '/var/run/netns/client',
    clientIfname: 'nsm0',
    mtu: 1500,
    ipContext: { src: [], dst: [], srcRoutes: [], dstRoutes: [] },
    mechanism: { type: 'KERNEL', endpointNetns: `/var/run/netns/${endpointName}`, endpointIfname: 'nsm-x' },
    p2p: { connectionId: 'c1', clientId: '/var/run/netns/client', endpointId: endpointName, pairs: [] },
    clientLabels: {},
  }
}

interface Setup {
  endpoints: EndpointInfo[]
  service?: NetworkService
  exclude?: string[]
  /** Endpoints whose build fails as an endpoint's fault (BAD_NETNS): select tries the next. */
  failing?: string[]
}

/** The select element over a recording next element; `tried` lists the endpoints in the order tried. */
function element(s: Setup): { handler: Handler; tried: string[]; roundRobin: RoundRobin } {
  const tried: string[] = []
  const roundRobin = new RoundRobin()
  const opts: SelectOptions = {
    service: (name) => (name === SVC ? (s.service ?? anyService) : undefined),
    endpoints: () => s.endpoints,
    roundRobin,
    now: () => NOW,
    exclude: () => s.exclude ?? [],
  }
  const next: Handler = {
    async request(r) {
      const name = r.state.endpoint?.name ?? '(none)'
      tried.push(name)
      if (s.failing?.includes(name)) throw new AgentError('BAD_NETNS', `netns of ${name} is gone`)
      return { ...r.connection, networkServiceEndpointName: name, state: State.UP }
    },
    close: async () => undefined,
  }
  return { handler: select(opts).wrap(next), tried, roundRobin }
}

function request(conn: Partial<Connection>, previous?: DatapathRecord): PipelineRequest {
  const connection: Connection = { id: 'c1', networkService: SVC, mechanism: undefined, context: undefined, labels: {}, path: undefined, networkServiceEndpointName: '', payload: '', state: State.UP, ...conn }
  return {
    connection,
    mechanismPreferences: [],
    ctx: { signal: new AbortController().signal, metadata: new Map(), attachment: undefined },
    state: { clientLabels: {}, ...(previous === undefined ? {} : { previous }) },
  }
}

t.test('network_service_endpoint_name: that endpoint, also when selection would rotate elsewhere', async (t) => {
  const { handler, tried, roundRobin } = element({ endpoints: [ep('a'), ep('b'), ep('c')] })
  for (let i = 0; i < 3; i++) {
    const conn = await handler.request(request({ id: `c${i}`, networkServiceEndpointName: 'b' }))
    t.equal(conn.networkServiceEndpointName, 'b')
  }
  t.same(tried, ['b', 'b', 'b'], 'only the named one, every time')
  t.equal(roundRobin.peek(SVC), 0, 'pinned requests take no round-robin turn')
  const free = await handler.request(request({ id: 'free' }))
  t.equal(free.networkServiceEndpointName, 'a', 'an unpinned request starts where the rotation was')
})

t.test('network_service_endpoint_name that cannot serve: NO_ENDPOINT naming the endpoint and the service, nothing tried', async (t) => {
  const other = ep('db-1', {}, { networkServiceNames: ['storage'], networkServiceLabels: { storage: {} } })
  const old = ep('old-1', {}, { expiresAt: NOW - 1000 })
  const vpn = ep('vpn-1', { app: 'vpn-gateway' })
  const { handler, tried } = element({ endpoints: [ep('a', { app: 'firewall' }), other, old, vpn], service: firewallsOnly })
  const cases: Array<[string, RegExp]> = [
    ['missing-1', /endpoint missing-1 is not registered \(network service secure-intranet-connectivity\)/],
    ['db-1', /endpoint db-1 does not offer this service \(it offers storage\) \(network service secure-intranet-connectivity\)/],
    ['old-1', /endpoint old-1 expired at 2023-11-14T22:13:19\.000Z \(network service secure-intranet-connectivity\)/],
    ['vpn-1', /endpoint vpn-1 is not chosen by network service secure-intranet-connectivity: .*app=firewall/],
  ]
  for (const [name, why] of cases) {
    await t.rejects(handler.request(request({ networkServiceEndpointName: name })), { name: 'AgentError', code: 'NO_ENDPOINT', field: FIELD, message: why }, name)
  }
  t.same(tried, [], 'never another endpoint')
})

t.test('network_service_endpoint_name whose build fails: the error, not another endpoint', async (t) => {
  const { handler, tried } = element({ endpoints: [ep('a'), ep('b')], failing: ['b'] })
  await t.rejects(handler.request(request({ networkServiceEndpointName: 'b' })), { code: 'BAD_NETNS' })
  t.same(tried, ['b'])
})

t.test("a refresh re-sending the agent's own answer stays where it is", async (t) => {
  const { handler, tried } = element({ endpoints: [ep('a'), ep('b'), ep('c')] })
  const conn = await handler.request(request({ networkServiceEndpointName: 'c' }, previousOn('c')))
  t.equal(conn.networkServiceEndpointName, 'c')
  const unpinned = await handler.request(request({}, previousOn('b')))
  t.equal(unpinned.networkServiceEndpointName, 'b', 'without the name: sticky to the previous endpoint')
  t.same(tried, ['c', 'b'])
})

t.test('healing away from the named endpoint (it is excluded): the name is not a pin', async (t) => {
  const { handler, tried } = element({ endpoints: [ep('a'), ep('b')], exclude: ['a'] })
  const conn = await handler.request(request({ networkServiceEndpointName: 'a', state: State.DOWN }, previousOn('a')))
  t.equal(conn.networkServiceEndpointName, 'b')
  t.same(tried, ['b'], 'the excluded one is never tried')
  const alone = element({ endpoints: [ep('a')], exclude: ['a'] })
  await t.rejects(alone.handler.request(request({ networkServiceEndpointName: 'a', state: State.DOWN }, previousOn('a'))), { code: 'NO_ENDPOINT', message: /no endpoint for service secure-intranet-connectivity/ }, 'nothing else: NO_ENDPOINT from selection')
  t.same(alone.tried, [])
})

t.test('RESELECT_REQUESTED: the previous endpoint is left when another can serve, chosen again when it is the only one', async (t) => {
  const { handler, tried } = element({ endpoints: [ep('a'), ep('b'), ep('c')] })
  const moved = await handler.request(request({ state: State.RESELECT_REQUESTED }, previousOn('a')))
  t.not(moved.networkServiceEndpointName, 'a', 'moved off the previous endpoint')
  t.equal(tried.length, 1, 'the first one tried serves')
  const echoed = await handler.request(request({ state: State.RESELECT_REQUESTED, networkServiceEndpointName: 'b' }, previousOn('b')))
  t.not(echoed.networkServiceEndpointName, 'b', 'the old answer echoed back (naming the endpoint being left) is no pin')
  const named = await handler.request(request({ state: State.RESELECT_REQUESTED, networkServiceEndpointName: 'c' }, previousOn('a')))
  t.equal(named.networkServiceEndpointName, 'c', 'naming another endpoint: that one')

  const only = element({ endpoints: [ep('a')] })
  const again = await only.handler.request(request({ state: State.RESELECT_REQUESTED }, previousOn('a')))
  t.equal(again.networkServiceEndpointName, 'a', 'the only candidate: chosen again')

  const failing = element({ endpoints: [ep('a'), ep('b')], failing: ['b'] })
  const back = await failing.handler.request(request({ state: State.RESELECT_REQUESTED }, previousOn('a')))
  t.equal(back.networkServiceEndpointName, 'a', 'the others failing: back to the previous one, last')
  t.same(failing.tried, ['b', 'a'])
})

t.test('without RESELECT_REQUESTED a re-request is sticky; RESELECT_REQUESTED on a new connection is an ordinary request', async (t) => {
  const { handler, tried } = element({ endpoints: [ep('a'), ep('b')] })
  for (const state of [State.UP, State.DOWN, State.REFRESH_REQUESTED]) {
    const conn = await handler.request(request({ state }, previousOn('b')))
    t.equal(conn.networkServiceEndpointName, 'b', `state ${State[state]}: stays on b`)
  }
  t.same(tried, ['b', 'b', 'b'])
  const other = element({ endpoints: [ep('a'), ep('b')] })
  const fresh = await other.handler.request(request({ id: 'new', state: State.RESELECT_REQUESTED }))
  t.equal(fresh.networkServiceEndpointName, 'a', 'the first in order, as for any new request')
})
