// Prometheus metrics of a real agent (--metrics-address, ARCHITECTURE §13): the series move with real
// Requests, Closes, heals, failures and CNI calls; the registry's size and the connection table are read at
// each scrape; the shared store's operations and the local files' writes are timed; Node's process metrics are there.
import t from 'tap'
import { join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { ERRORS } from '../../pkg/codes'
import { runAgentToExit, startAgent, type RunningAgent } from '../lib/agent'
import { reach } from '../lib/cluster'
import { endpointRegistration, kernelRequest, SEED, seedAgent } from '../lib/mesh'
import { makeNetns, RUN } from '../lib/netns'
import { scrape, valueOf, type Sample } from '../lib/prometheus'
import { startEtcd } from '../lib/etcd'
import { stageNsm, resultOf } from './nsm-fixture'
import { execPlugin } from '../conformance/exec'

t.setTimeout(60_000)

function metricsOf(agent: RunningAgent): string {
  const ready = agent.logs.find((l) => l.msg === 'ready')
  if (typeof ready?.metrics !== 'string') throw new Error(`no metrics address in the ready line: ${JSON.stringify(ready)}`)
  return ready.metrics
}

// The elements that work in a Request to a local endpoint without the NSM API (nse only hands such a call on,
// and an element's call that only hands it on is not timed: agent/pipeline/chain.ts `observed`).
const ELEMENTS = ['validate', 'path', 'select', 'ipam', 'mechanism', 'persist']

t.test('Requests, Closes, heals, errors and CNI calls move their series', async (t) => {
  const fw = makeNetns(t, 'fw')
  const fw2 = makeNetns(t, 'fw2')
  const clients = [makeNetns(t, 'c1'), makeNetns(t, 'c2')]
  const agent = await startAgent(t, { args: ['--metrics-address', '127.0.0.1:0'] })
  const address = metricsOf(agent)
  let m: Sample[] = await scrape(address)
  t.ok(valueOf(m, 'process_cpu_user_seconds_total') > 0, 'Node process metrics')
  t.ok(m.some((s) => s.name === 'nodejs_heap_size_used_bytes'), 'Node heap metrics')
  t.equal(valueOf(m, 'nsm_registry_services'), 0)
  t.equal(valueOf(m, 'nsm_connections'), 0)

  await seedAgent(agent.client, fw.path, ['172.16.50.0/24'])
  const conns = await Promise.all(clients.map((c, i) => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`m${i}-${RUN}`, c.path, 'nsm0'))))
  m = await scrape(address)
  t.equal(valueOf(m, 'nsm_registry_services'), 1, 'one service registered')
  t.equal(valueOf(m, 'nsm_registry_endpoints', { node: 'local' }), 1, 'one endpoint of this node')
  t.equal(valueOf(m, 'nsm_connections', { service: SEED, mechanism: 'KERNEL', state: 'UP' }), 2, 'two KERNEL connections UP')
  t.equal(valueOf(m, 'nsm_request_duration_seconds_count', { service: SEED, outcome: 'ok' }), 2, 'two Requests timed')
  t.ok(valueOf(m, 'nsm_request_duration_seconds_sum', { service: SEED }) > 0)
  for (const e of ELEMENTS) t.equal(valueOf(m, 'nsm_pipeline_element_duration_seconds_count', { element: e, op: 'request', outcome: 'ok' }), 2, `element ${e} timed in both Requests`)
  t.ok(valueOf(m, 'nsm_pipeline_element_duration_seconds_sum', { element: 'mechanism', op: 'request' }) > 0, "the mechanism's own time")
  t.notOk(m.some((s) => s.name === 'nsm_pipeline_element_duration_seconds_count' && s.labels.element === 'nse'), 'nse handed the calls on: not timed')

  // A Request for a service nobody registered fails: counted by the CNI code of its error.
  await t.rejects(agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`bad-${RUN}`, (clients[0] ?? fw).path, 'nsm1', {}, 'no-such-service')))
  m = await scrape(address)
  const failed = m.find((s) => s.name === 'nsm_errors_total' && s.labels.operation === 'request')
  t.ok(failed !== undefined, 'a request error counted')
  const name = failed?.labels.name ?? ''
  t.ok(name in ERRORS, `named by the error model: ${name}`)
  t.equal(failed?.labels.code, String(ERRORS[name as keyof typeof ERRORS].cni), `its CNI code (${name})`)
  t.equal(valueOf(m, 'nsm_request_duration_seconds_count', { service: 'no-such-service', outcome: 'error' }), 1)

  // The endpoint goes: both connections heal, find nothing (DOWN); a second endpoint comes: they heal to it.
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'firewall-1' })
  await reach('two heals counted down', async () => valueOf(await scrape(address), 'nsm_heals_total', { reason: 'endpoint-gone', outcome: 'down' }) === 2)
  m = await scrape(address)
  t.equal(valueOf(m, 'nsm_connections', { service: SEED, state: 'DOWN' }), 2, 'both DOWN')
  t.equal(valueOf(m, 'nsm_heal_duration_seconds_count', { reason: 'endpoint-gone', outcome: 'down' }), 2, 'heal durations')
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: 'firewall-2', netns: fw2.path, labels: { app: 'firewall' }, pools: ['172.16.51.0/24'] }))
  // A connection is UP in the table a moment before its heal has returned and been counted.
  await reach('two connections UP and two heals counted healed', async () => {
    const now = await scrape(address)
    return valueOf(now, 'nsm_connections', { service: SEED, state: 'UP' }) === 2 && valueOf(now, 'nsm_heals_total', { outcome: 'healed' }) === 2
  })
  m = await scrape(address)
  t.equal(valueOf(m, 'nsm_heals_total', { outcome: 'healed' }), 2, 'two heals succeeded')
  t.equal(valueOf(m, 'nsm_registry_endpoints', { node: 'local' }), 1)

  for (const c of conns) await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)
  m = await scrape(address)
  t.equal(valueOf(m, 'nsm_close_duration_seconds_count', { service: SEED, outcome: 'ok' }), 2, 'two Closes timed')
  t.equal(valueOf(m, 'nsm_pipeline_element_duration_seconds_count', { element: 'mechanism', op: 'close' }), 2)
  t.notOk(m.some((s) => s.name === 'nsm_pipeline_element_duration_seconds_count' && s.labels.element === 'validate' && s.labels.op === 'close'), "validate's close only hands it on: not timed")
  t.equal(valueOf(m, 'nsm_connections'), 0, 'no connection left')

  // CNI calls through dist/nsm: a good ADD and DEL, and an ADD for a service nobody offers (its error code).
  const binDir = await stageNsm(t)
  const pod = makeNetns(t, 'pod')
  const conf = (service: string) => ({ cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket: agent.socket, networkService: service })
  const call = { containerId: `mx-${RUN}`, netns: pod.path, ifname: 'nsm0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web', path: binDir }
  const add = await execPlugin(join(binDir, 'nsm'), { ...call, command: 'ADD', stdin: conf(SEED) })
  t.equal(add.exitCode, 0, add.stdout)
  t.equal((await execPlugin(join(binDir, 'nsm'), { ...call, command: 'DEL', stdin: { ...conf(SEED), prevResult: resultOf(add) } })).exitCode, 0)
  const bad = await execPlugin(join(binDir, 'nsm'), { ...call, containerId: `mx2-${RUN}`, command: 'ADD', stdin: conf('nobody-offers-this') })
  t.not(bad.exitCode, 0)
  const code = String((JSON.parse(bad.stdout) as { code: number }).code)
  m = await scrape(address)
  t.equal(valueOf(m, 'nsm_cni_duration_seconds_count', { command: 'ADD', outcome: 'ok' }), 1)
  t.equal(valueOf(m, 'nsm_cni_duration_seconds_count', { command: 'DEL', outcome: 'ok' }), 1)
  t.equal(valueOf(m, 'nsm_cni_duration_seconds_count', { command: 'ADD', outcome: 'error' }), 1)
  t.equal(valueOf(m, 'nsm_errors_total', { operation: 'ADD', code }), 1, `the failed ADD counted under its code ${code}`)

  const res = await fetch(`http://${address}/other`)
  t.equal(res.status, 404, 'only /metrics is served')
})

t.test('the shared store: each Kv operation timed by backend, operation and kind', async (t) => {
  const etcd = await startEtcd(t)
  const fw = makeNetns(t, 'fw')
  const agent = await startAgent(t, { args: ['--metrics-address', '127.0.0.1:0', '--node-name', 'node-m', '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', `/nsm-metrics-${RUN}`] })
  const address = metricsOf(agent)
  await seedAgent(agent.client, fw.path, ['172.16.52.0/24'])
  const m = await scrape(address)
  t.ok(valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'etcd', operation: 'list', outcome: 'ok' }) > 0, 'lists at start')
  t.ok(valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'etcd', kind: 'endpoints', outcome: 'ok' }) > 0, 'the endpoint registration written')
  t.ok(valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'etcd', kind: 'services', outcome: 'ok' }) > 0, 'the service registration written')
  t.equal(valueOf(m, 'nsm_registry_endpoints', { node: 'local' }), 1)
})

t.test('the local files: each connection-journal write and registry snapshot timed (backend file)', async (t) => {
  const fw = makeNetns(t, 'fw')
  const client = makeNetns(t, 'c')
  const agent = await startAgent(t, { args: ['--metrics-address', '127.0.0.1:0'] })
  const address = metricsOf(agent)
  const journal = (m: Sample[], operation: string): number => valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'file', kind: 'connections', operation, outcome: 'ok' })
  let m = await scrape(address)
  const appendsBefore = journal(m, 'append')
  t.ok(journal(m, 'compact') >= 1, 'the connection table compacted at open (snapshot written, journal cleared)')
  await seedAgent(agent.client, fw.path, ['172.16.53.0/24'])
  m = await scrape(address)
  t.ok(valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'file', kind: 'registry', operation: 'snapshot', outcome: 'ok' }) >= 1, 'the registry file written after the registrations')
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`fj-${RUN}`, client.path, 'nsm0'))
  m = await scrape(address)
  const afterRequest = journal(m, 'append')
  t.ok(afterRequest > appendsBefore, `the Request's record appended to the journal (${appendsBefore} → ${afterRequest} writes)`)
  t.ok(valueOf(m, 'nsm_store_operation_duration_seconds_sum', { backend: 'file', kind: 'connections', operation: 'append' }) > 0, 'with their durations')
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  m = await scrape(address)
  t.ok(journal(m, 'append') > afterRequest, "the Close's removal appended too")
  t.equal(valueOf(m, 'nsm_store_operation_duration_seconds_count', { backend: 'file', outcome: 'error' }), 0, 'no failed write')
})

t.test('--metrics-address is checked and off by default', async (t) => {
  const bad = await runAgentToExit(t, ['--metrics-address', 'nowhere'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--metrics-address: "nowhere" must be HOST:PORT/)
  const agent = await startAgent(t)
  t.notOk('metrics' in (agent.logs.find((l) => l.msg === 'ready') ?? {}), 'no metrics without the flag')
})
