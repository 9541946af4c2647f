// Issue 10 items 6 and 7: the registration policy, through dist/nsm and a real agent. An operator's service
// lives in namespace `ops` with its own endpoint; a pod of another namespace that annotates itself as an
// endpoint of it is refused (112, nothing registered, logged), and every later client reaches the
// operator's endpoint, never the intruder. Within the admitted namespace the service's selector and its
// bounds on offered routes and pools hold. The agent config's endpointPolicy admits what it names, and
// `nsmctl apply` carries a manifest's policy to the agent.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { makeNetns, uniqueName } from '../lib/netns'
import { tempDir } from '../lib/agent'
import { resultOf, startMesh } from './nsm-fixture'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const RUN = uniqueName('pol').slice(-6)
const SVC = `ops-svc-${RUN}`
const OPEN = `open-svc-${RUN}`
const EMPTY_PREV = { cniVersion: '1.1.0', interfaces: [], ips: [] }

const dir = tempDir(t, 'nsm-policy-')
const config = join(dir, 'agent.yaml')
// The agent's own rule: any pod of namespace `lab` labelled tier=edge may offer OPEN.
// And any pod of namespace `bulk` may offer any service.
writeFileSync(config, `endpointPolicy:\n  - services: [${OPEN}]\n    namespaces: [lab]\n    podSelector: { tier: edge }\n  - services: ['*']\n    namespaces: [bulk]\n`)
const mesh = await startMesh(t, { agentArgs: ['--config', config] })
const conf = mesh.conf({ labels: {} })

const endpoints = async (service: string) =>
  (await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints.filter((e) => e.endpoint?.networkServiceNames.includes(service))

/** ADD of an endpoint pod (no interface of its own): the outcome, and its DEL in teardown. */
async function offer(t: Teardown, namespace: string, name: string, labels: Record<string, string>, entry: string) {
  const pod = makeNetns(t, 'p')
  mesh.pod(namespace, name, { labels, annotations: { 'endpoint.networkservicemesh.io': entry } })
  const call = { containerId: `${name}-${RUN}`, netns: pod.path, ifname: 'eth0', args: `K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name}` }
  t.teardown(() => mesh.cni({ ...call, command: 'DEL', stdin: conf }).then(() => undefined))
  return mesh.cni({ ...call, command: 'ADD', stdin: { ...conf, prevResult: EMPTY_PREV } })
}

t.test('a pod of another namespace cannot join the operator\'s service; 4 later clients all reach the operator\'s endpoint', async (t) => {
  await mesh.admit(SVC, { namespace: 'ops' })
  const opsEp = makeNetns(t, 'o')
  await mesh.endpoint({ name: `ops-ep-${RUN}`, netns: opsEp.path, service: SVC, pools: ['172.30.120.0/24'] })
  t.teardown(() => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: `ops-ep-${RUN}` }).then(() => undefined, () => undefined))

  const out = await offer(t, 'evil', 'intruder', { app: 'x' }, `${SVC}?cidr=172.30.121.0/24&route=10.0.0.0/8`)
  t.equal(out.exitCode, 1)
  t.equal(out.json?.code, 112, out.stdout)
  t.match(String(out.json?.msg), /endpoint\.networkservicemesh\.io\[0\].*pod evil\/intruder may not offer service ops-svc-.*admits namespaces ops/)
  t.same((await endpoints(SVC)).map((e) => e.endpoint?.name), [`ops-ep-${RUN}`], 'nothing registered for the intruder')
  t.ok(mesh.agent.logs.some((l) => l.msg === 'endpoint offer refused by the registration policy' && l.pod === 'evil/intruder' && l.service === SVC), 'the refusal is logged')

  for (let i = 0; i < 4; i++) {
    const client = makeNetns(t, 'c')
    const call = { containerId: `cl${i}-${RUN}`, netns: client.path, ifname: 'eth0' }
    const c = mesh.conf({ networkService: SVC })
    t.teardown(() => mesh.cni({ ...call, command: 'DEL', stdin: c }).then(() => undefined))
    const res = resultOf(await mesh.cni({ ...call, command: 'ADD', stdin: c }))
    const ips = (res.ips as Array<{ address: string }>).map((x) => x.address)
    t.match(ips[0], /^172\.30\.120\./, `client ${i} got an address of the operator's pool`)
    t.notOk(JSON.stringify(res.routes ?? []).includes('10.0.0.0/8'), `client ${i} got no route from the intruder`)
  }
})

t.test('in the admitted namespace: the selector, and the bounds on offered routes and pools', async (t) => {
  const svc = `bounded-${RUN}`
  await mesh.admit(svc, { namespace: 'fw', endpointSelector: { app: 'firewall' }, endpointRoutes: ['10.60.0.0/16'], endpointPools: ['172.30.0.0/16'] })
  const noLabel = await offer(t, 'fw', 'unlabelled', { app: 'other' }, `${svc}?cidr=172.30.130.0/24`)
  t.equal(noLabel.json?.code, 112, noLabel.stdout)
  t.match(String(noLabel.json?.msg), /needs labels app=firewall/)
  const wideRoute = await offer(t, 'fw', 'wide-route', { app: 'firewall' }, `${svc}?cidr=172.30.131.0/24&route=0.0.0.0/0`)
  t.equal(wideRoute.json?.code, 112, wideRoute.stdout)
  t.match(String(wideRoute.json?.msg), /bounds routes to 10\.60\.0\.0\/16, not 0\.0\.0\.0\/0/)
  const widePool = await offer(t, 'fw', 'wide-pool', { app: 'firewall' }, `${svc}?cidr=10.1.0.0/24`)
  t.equal(widePool.json?.code, 112, widePool.stdout)
  t.match(String(widePool.json?.msg), /bounds pools to 172\.30\.0\.0\/16, not 10\.1\.0\.0\/24/)
  t.same(await endpoints(svc), [], 'none of the refused offers registered anything')
  const ok = await offer(t, 'fw', 'good', { app: 'firewall' }, `${svc}?cidr=172.30.132.0/24&route=10.60.1.0/24`)
  t.equal(ok.exitCode, 0, ok.stdout)
  t.equal((await endpoints(svc)).length, 1, 'the admitted offer is registered')
})

t.test('a pod offering two services, one of them refused: nothing is registered', async (t) => {
  const svc = `pair-${RUN}`
  await mesh.admit(svc, { namespace: 'lab' })
  const out = await offer(t, 'lab', 'two', { tier: 'core' }, `${svc}?cidr=172.30.140.0/24, ${OPEN}?cidr=172.30.141.0/24`)
  t.equal(out.json?.code, 112, out.stdout)
  t.match(String(out.json?.msg), /endpoint\.networkservicemesh\.io\[1\].*agent config endpointPolicy\[0\] needs labels tier=edge/)
  t.same([...(await endpoints(svc)), ...(await endpoints(OPEN))], [], 'the admitted first offer was not registered either')
})

t.test('the agent config admits what it names: an unregistered service, namespace lab, tier=edge', async (t) => {
  const out = await offer(t, 'lab', 'edge', { tier: 'edge' }, `${OPEN}?cidr=172.30.150.0/24`)
  t.equal(out.exitCode, 0, out.stdout)
  t.equal((await endpoints(OPEN)).length, 1)
  const elsewhere = await offer(t, 'other', 'edge', { tier: 'edge' }, `${OPEN}?cidr=172.30.151.0/24`)
  t.equal(elsewhere.json?.code, 112, elsewhere.stdout)
})

t.test('a service registered without a policy (NSM Register) admits no endpoint pod', async (t) => {
  const svc = `bare-${RUN}`
  await mesh.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: svc, payload: 'IP', matches: [], pathIds: [] })
  const out = await offer(t, 'default', 'bare', {}, `${svc}?cidr=172.30.160.0/24`)
  t.equal(out.json?.code, 112, out.stdout)
  // Only the agent's catch-all rule for namespace bulk names it.
  t.match(String(out.json?.msg), /pod default\/bare may not offer service bare-\w+: agent config endpointPolicy\[1\] admits namespaces bulk$/)
})

t.test('nsmctl apply carries a manifest\'s policy; a bad policy annotation is refused naming it', async (t) => {
  const svc = `applied-${RUN}`
  const manifest = join(dir, 'svc.yaml')
  const nsmctl = (file: string) => execFileSync(process.execPath, [join(import.meta.dirname, '../../dist/nsmctl'), '--socket', mesh.socket, 'apply', '-f', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  writeFileSync(manifest, `apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata:\n  name: ${svc}\n  namespace: team\n  annotations:\n    nsm-cni.io/endpoint-namespaces: team,partners\n    nsm-cni.io/endpoint-routes: 10.70.0.0/16\nspec:\n  payload: IP\n`)
  t.match(nsmctl(manifest), `networkservice/${svc} applied (endpoint pods: namespaces team,partners; routes within 10.70.0.0/16)`)
  const ok = await offer(t, 'partners', 'p1', {}, `${svc}?cidr=172.30.170.0/24&route=10.70.5.0/24`)
  t.equal(ok.exitCode, 0, ok.stdout)
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, `apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata:\n  name: ${svc}\n  annotations:\n    nsm-cni.io/endpoint-routes: 10.70.0.1/16\nspec:\n  payload: IP\n`)
  t.throws(() => nsmctl(bad), /metadata\.annotations\["nsm-cni\.io\/endpoint-routes"\]\[0\]: 10\.70\.0\.1\/16 has host bits set/)
})

t.test('item 21: a pod offering 1,000 services is registered in one write, and DEL removes all of them', async (t) => {
  const names = Array.from({ length: 1000 }, (_, i) => `bulk${i}-${RUN}`)
  const pod = makeNetns(t, 'b')
  mesh.pod('bulk', 'many', { annotations: { 'endpoint.networkservicemesh.io': names.map((n) => `${n}?cidr=172.30.180.0/24`).join(',') } })
  const call = { containerId: `bulk-${RUN}`, netns: pod.path, ifname: 'eth0', args: 'K8S_POD_NAMESPACE=bulk;K8S_POD_NAME=many' }
  const started = Date.now()
  const out = await mesh.cni({ ...call, command: 'ADD', stdin: { ...conf, prevResult: EMPTY_PREV } })
  t.comment(`ADD of a pod offering 1,000 services: ${Date.now() - started} ms`)
  t.equal(out.exitCode, 0, out.stdout.slice(0, 300))
  const all = (await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints
  t.equal(all.filter((e) => e.endpoint?.name.startsWith('bulk')).length, 1000, '1,000 endpoints registered')
  const del = await mesh.cni({ ...call, command: 'DEL', stdin: conf })
  t.equal(del.exitCode, 0, del.stdout)
  const left = (await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints
  t.equal(left.filter((e) => e.endpoint?.name.startsWith('bulk')).length, 0, 'DEL removed all of them')
})
