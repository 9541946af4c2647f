// Issue 11 on the Kubernetes API (the project's fixture: the one stand-in allowed): two agents with
// `--store kubernetes` share the registry through the NetworkService / NetworkServiceEndpoint custom
// resources and their node records through NsmNode objects. What one registers the other sees, stamped
// with its node; the objects are NSM's CRD form; a SIGKILLed agent's short-lived endpoint and its node
// record are collected by the survivor; with the API server away, registrations fail at once with the store
// error and reads are served, and after it is back the agents re-sync on their own.
import t from 'tap'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { startAgent, type RunningAgent } from '../lib/agent'
import { endpointNames, registerOn, until } from '../lib/cluster'
import { startK8sFixture } from '../lib/k8s-fixture'
import { makeNetns, uniqueName } from '../lib/netns'
import { GrpcCallError } from '../../agent/client/client'
import { KubernetesKv } from '../../agent/store/kubernetes'
import { serviceCodec } from '../../agent/registry/records'

const RUN = uniqueName('ck').slice(-6)
const f = await startK8sFixture(t)
const kubeconfig = f.writeKubeconfig()
const netns = makeNetns(t, 'ep')

const agent = (node: string): Promise<RunningAgent> =>
  startAgent(t, { args: ['--node-name', node, '--store', 'kubernetes', '--kubeconfig', kubeconfig, '--store-namespace', 'nsm-system', '--node-ttl', '3s'] })
const a1 = await agent('k1')
const a2 = await agent('k2')

const names = endpointNames

const register = (a: RunningAgent, name: string, ttlMs = 3_600_000) => registerOn(a, { name, netns: netns.path, service: `svc-${RUN}`, pool: '172.30.210.0/24', ttlMs })

t.test('an endpoint registered on k1 is a NetworkServiceEndpoint object that k2 sees, stamped with k1', async (t) => {
  const name = `ep-${RUN}`
  await register(a1, name)
  const took = await until(async () => (await names(a2)).includes(name))
  t.not(took, -1, 'seen on k2')
  t.comment(`seen after ${took} ms`)
  const onK2 = (await a2.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: name })).endpoints[0]
  t.equal(onK2?.extension?.nodeName, 'k1')
  const obj = f.get('networkserviceendpoints', 'nsm-system', name) as { spec: Record<string, unknown> } | undefined
  t.same(obj?.spec['network_service_names'], [`svc-${RUN}`], 'stored in NSM\'s snake_case spec')
  t.match(obj?.spec['expiration_time'], { seconds: Number, nanos: Number }, 'timestamps as {seconds, nanos}')
  await a2.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name })
  t.not(await until(async () => !(await names(a1)).includes(name)), -1, 'unregistered on k2: gone on k1')
  t.equal(f.get('networkserviceendpoints', 'nsm-system', name), undefined, 'the object is deleted')
})

t.test('node records as NsmNode objects; a SIGKILLed agent\'s short endpoint and record are collected by the other', async (t) => {
  const nodes = async (a: RunningAgent) => (await a.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})).nodes.map((n) => n.name)
  t.not(await until(async () => (await nodes(a1)).length === 2), -1)
  t.same(await nodes(a1), ['k1', 'k2'])
  t.equal((await a1.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})).store, 'kubernetes')
  const short = `short-${RUN}`
  await register(a2, short, 2_000)
  t.not(await until(async () => (await names(a1)).includes(short)), -1)
  await a2.stop('SIGKILL')
  const gone = await until(async () => !(await names(a1)).includes(short), 15_000)
  t.not(gone, -1, 'expired: collected by k1')
  t.comment(`collected ${gone} ms after the SIGKILL`)
  t.not(await until(async () => !(await nodes(a1)).includes('k2'), 15_000), -1, 'k2\'s node record collected')
})

t.test('the API server away: store errors at once, reads served; back: registrations succeed', async (t) => {
  const kept = `kept-${RUN}`
  await register(a1, kept)
  await f.stop()
  const err = await register(a1, `during-${RUN}`).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(err instanceof GrpcCallError, 'refused')
  t.match((err as GrpcCallError).message, /STORE_FAILURE.*store is unreachable/)
  t.equal((err as GrpcCallError).code, 14, 'UNAVAILABLE')
  t.ok((await names(a1)).includes(kept), 'reads served from the watched state')
  await f.start()
  t.not(
    await until(
      () =>
        register(a1, `after-${RUN}`).then(
          () => true,
          () => false,
        ),
      20_000,
    ),
    -1,
    'registrations succeed once the API server is back',
  )
  t.ok(f.get('networkserviceendpoints', 'nsm-system', `after-${RUN}`) !== undefined)
  t.equal(f.get('networkserviceendpoints', 'nsm-system', `during-${RUN}`), undefined, 'the refused one was not stored')
})

t.test('a NetworkService applied with kubectl declares its registration policy in nsm-cni.io/endpoint-* annotations', async (t) => {
  const name = `applied-${RUN}`
  f.put('networkservices', {
    apiVersion: 'networkservicemesh.io/v1',
    kind: 'NetworkService',
    metadata: { namespace: 'nsm-system', name, annotations: { 'nsm-cni.io/endpoint-namespaces': 'team,partners', 'nsm-cni.io/endpoint-routes': '10.70.0.0/16', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } },
    spec: { payload: 'IP', matches: [] },
  })
  const kv = new KubernetesKv({ kubeconfig, namespace: 'nsm-system' })
  t.teardown(() => kv.close())
  const stored = serviceCodec.fromJSON((await kv.get('services', name))?.value)
  t.equal(stored.service.name, name)
  t.same(stored.policy?.endpointNamespaces, ['team', 'partners'])
  t.same(stored.policy?.endpointRoutes, ['10.70.0.0/16'])
  f.put('networkservices', { apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { namespace: 'nsm-system', name: `${name}-bad`, annotations: { 'nsm-cni.io/endpoint-routes': 'nonsense' } }, spec: { payload: 'IP' } })
  t.equal(serviceCodec.fromJSON((await kv.get('services', `${name}-bad`))?.value).policy, undefined, 'an invalid annotation gives no policy (nobody admitted), not an error')
})
