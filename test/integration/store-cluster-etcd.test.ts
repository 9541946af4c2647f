// Issue 11 with a real etcd: three agents (node names n1, n2, n3) on one etcd share the registry. An
// endpoint registered on one node is seen by the others, stamped with its node, and so is a service; node
// records list every agent and expire when one is SIGKILLed, as do its short-lived endpoints.
// etcd SIGKILLed under load: registrations fail at once with the store error (108 / UNAVAILABLE), reads keep
// being served from the watched state, and once etcd is back every agent re-syncs on its own: every
// acknowledged registration is seen everywhere.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join, resolve } from 'node:path'
import { writeFileSync } from 'node:fs'
import { AgentDefinition, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni'
import { startAgent, type RunningAgent } from '../lib/agent'
import { endpointNames, registerOn, until } from '../lib/cluster'
import { startEtcd } from '../lib/etcd'
import { endpointRegistration, kernelRequest } from '../lib/mesh'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { makeNetns, uniqueName } from '../lib/netns'
import { GrpcCallError } from '../../agent/client/client'

const ROOT = resolve(import.meta.dirname, '../..')
const RUN = uniqueName('cl').slice(-6)
const etcd = await startEtcd(t)
const netns = makeNetns(t, 'ep')

async function agent(node: string, extra: string[] = []): Promise<RunningAgent> {
  return startAgent(t, { args: ['--node-name', node, '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', `/nsm-${RUN}`, '--node-ttl', '3s', ...extra] })
}
const agents = { n1: await agent('n1', ['--underlay-address', '192.0.2.1']), n2: await agent('n2'), n3: await agent('n3') }

const names = endpointNames

const register = (a: RunningAgent, name: string, ttlMs = 3_600_000) => registerOn(a, { name, netns: netns.path, service: `svc-${RUN}`, pool: '172.30.200.0/24', ttlMs })

t.test('an endpoint registered on n1 is seen on n2 and n3, stamped with its node', async (t) => {
  const name = `ep-a-${RUN}`
  await register(agents.n1, name)
  for (const a of [agents.n2, agents.n3]) {
    const took = await until(async () => (await names(a)).includes(name))
    t.not(took, -1, 'seen')
    t.comment(`seen after ${took} ms`)
  }
  const onN3 = (await agents.n3.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: name })).endpoints[0]
  t.equal(onN3?.extension?.nodeName, 'n1', 'the extension names the node it lives on')
  t.equal(onN3?.extension?.netnsPath, netns.path)
  const table = execFileSync(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', agents.n3.socket, 'get', 'endpoints'], { encoding: 'utf8' })
  t.match(table, new RegExp(`${name}\\s.*\\sn1\\s`), 'nsmctl get endpoints on n3 shows NODE n1')
  await agents.n2.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name })
  t.not(await until(async () => !(await names(agents.n1)).includes(name) && !(await names(agents.n3)).includes(name)), -1, 'unregistered on n2: gone on n1 and n3')
})

t.test('a service registered on n2 is seen on n1', async (t) => {
  const svc = `shared-svc-${RUN}`
  await agents.n2.client.unary(AgentDefinition, AgentDefinition.methods.registerService, { service: { name: svc, payload: 'ETHERNET', matches: [], pathIds: [] }, policy: ServicePolicy.fromPartial({ namespace: 'ops' }) })
  const seen = await until(async () => {
    const out = execFileSync(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', agents.n1.socket, 'get', 'services', '-o', 'json'], { encoding: 'utf8' })
    return (JSON.parse(out) as Array<{ name: string; payload: string }>).some((s) => s.name === svc && s.payload === 'ETHERNET')
  })
  t.not(seen, -1)
})

t.test('address claims: n1 and n2 each make 64 connections at once from one pool (two endpoints sharing it): 128 distinct pairs', async (t) => {
  const svc = `claims-svc-${RUN}`
  const pool = '172.30.220.0/24'
  await agents.n1.client.unary(AgentDefinition, AgentDefinition.methods.registerService, { service: { name: svc, payload: 'IP', matches: [], pathIds: [] }, policy: undefined })
  const sides = await Promise.all(
    (['n1', 'n2'] as const).map(async (node) => {
      const ep = makeNetns(t, 'ce')
      const client = makeNetns(t, 'cc')
      await agents[node].client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: `claims-ep-${node}-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: [pool] }))
      return { node, a: agents[node], client }
    }),
  )
  // Both endpoints are seen by both agents before the race (each agent uses only its own).
  t.not(await until(async () => (await names(agents.n1)).filter((n) => n.startsWith('claims-ep-')).length === 2 && (await names(agents.n2)).filter((n) => n.startsWith('claims-ep-')).length === 2), -1)
  const made = await Promise.all(
    sides.flatMap(({ node, a, client }) =>
      Array.from({ length: 64 }, (_, i) => a.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`cl-${node}-${i}-${RUN}`, client.path, `nsm${i}`, {}, svc)).then((c) => ({ a, c }))),
    ),
  )
  const addresses = made.flatMap(({ c }) => [...(c.context?.ipContext?.srcIpAddrs ?? []), ...(c.context?.ipContext?.dstIpAddrs ?? [])])
  t.equal(made.length, 128)
  t.equal(new Set(addresses).size, 256, '128 pairs, 256 distinct addresses: the whole /24, no address twice')
  t.same(new Set(made.map(({ c }) => c.networkServiceEndpointName.split('-')[2])), new Set(['n1', 'n2']), 'each agent used its own endpoint')
  const refused = await agents.n1.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`cl-extra-${RUN}`, sides[0]!.client.path, 'extra0', {}, svc)).then(
    () => undefined,
    (e: unknown) => e,
  )
  t.match(refused, { agentCode: 'POOL_EXHAUSTED' }, 'the 129th pair: the pool is full across both nodes')
  const claimsIn = () => (JSON.parse(execFileSync(process.execPath, [join(ROOT, 'dist/nsmctl'), 'store', 'export', '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', `/nsm-${RUN}`], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })) as { claims: object }).claims
  t.equal(Object.keys(claimsIn()).length, 256, 'one claim per address in etcd')
  await Promise.all(made.map(({ a, c }) => a.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)))
  t.same(claimsIn(), {}, 'Close released every claim')
  for (const { node, a } of sides) await a.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: `claims-ep-${node}-${RUN}` })
})

t.test('node records: every agent listed; a SIGKILLed agent\'s record and short-lived endpoints expire on the others', async (t) => {
  const nodes = async (a: RunningAgent) => (await a.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})).nodes
  t.not(await until(async () => (await nodes(agents.n2)).length === 3), -1, 'three nodes')
  const list = await nodes(agents.n2)
  t.same(list.map((n) => n.name), ['n1', 'n2', 'n3'])
  t.equal(list[0]?.underlayAddress, '192.0.2.1')
  t.equal((await agents.n2.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})).store, 'etcd')
  const short = `ep-short-${RUN}`
  const long = `ep-long-${RUN}`
  await register(agents.n3, short, 2_000)
  await register(agents.n3, long)
  t.not(await until(async () => (await names(agents.n1)).includes(short)), -1)
  await agents.n3.stop('SIGKILL')
  const gone = await until(async () => !(await names(agents.n1)).includes(short), 15_000)
  t.not(gone, -1, 'the endpoint with a 2 s lifetime expired in etcd after n3 died')
  t.comment(`expired ${gone} ms after the SIGKILL`)
  t.ok((await names(agents.n1)).includes(long), 'one with an hour to live is still there')
  const left = await until(async () => !(await nodes(agents.n1)).some((n) => n.name === 'n3'), 15_000)
  t.not(left, -1, 'n3\'s node record expired')
  t.comment(`n3's node record gone ${left} ms after the SIGKILL`)
  await agents.n1.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: long })
})

t.test('etcd SIGKILLed under load: clear store errors, reads served, every acknowledged registration seen after the restart', async (t) => {
  const acknowledged = new Set<string>()
  const refused: string[] = []
  let stop = false
  const load = async (a: RunningAgent, tag: string) => {
    for (let i = 0; !stop; i++) {
      const name = `ld-${tag}-${i}-${RUN}`
      try {
        await register(a, name)
        acknowledged.add(name)
      } catch (err) {
        refused.push(err instanceof GrpcCallError ? `${err.code} ${err.agentCode ?? ''} ${err.message}` : String(err))
      }
      await new Promise((r) => setTimeout(r, 30))
    }
  }
  const loads = [load(agents.n1, 'a'), load(agents.n2, 'b')]
  await new Promise((r) => setTimeout(r, 500))
  await etcd.kill()
  await new Promise((r) => setTimeout(r, 2000))
  const during = refused.length
  t.ok(during > 0, `registrations during the outage were refused (${during})`)
  t.match(refused[0], /^14 STORE_FAILURE .*store is unreachable/, 'UNAVAILABLE with the stable name STORE_FAILURE (CNI 108), naming the store')
  const before = await names(agents.n1)
  t.ok(before.length > 0, 'reads are served from the last watched state while etcd is down')
  await etcd.start()
  const recovered = await until(async () => {
    try {
      await register(agents.n1, `after-${RUN}`)
      return true
    } catch {
      return false
    }
  }, 20_000)
  t.not(recovered, -1, 'registrations succeed again once etcd is back')
  t.comment(`first registration after the restart succeeded ${recovered} ms after etcd started`)
  await new Promise((r) => setTimeout(r, 500))
  stop = true
  await Promise.all(loads)
  acknowledged.add(`after-${RUN}`)
  for (const a of [agents.n1, agents.n2]) {
    const seen = await until(async () => {
      const have = new Set(await names(a))
      return [...acknowledged].every((n) => have.has(n))
    })
    const have = new Set(await names(a))
    t.same([...acknowledged].filter((n) => !have.has(n)), [], `every acknowledged registration is seen (${acknowledged.size})`)
    t.not(seen, -1)
  }
})

t.test('migration: a file-store agent\'s services and endpoints exported, imported into etcd, served by an etcd agent', async (t) => {
  const nsmctl = (...args: string[]) => execFileSync(process.execPath, [join(ROOT, 'dist/nsmctl'), ...args], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
  const single = await startAgent(t, { args: ['--node-name', 'solo'] })
  await single.client.unary(AgentDefinition, AgentDefinition.methods.registerService, { service: { name: `mig-svc-${RUN}`, payload: 'IP', matches: [], pathIds: [] }, policy: ServicePolicy.fromPartial({ namespace: 'ops' }) })
  await register(single, `mig-ep-${RUN}`)
  await register(single, `mig-short-${RUN}`, 1_000)
  await single.stop()
  await new Promise((r) => setTimeout(r, 1100))
  const exported = nsmctl('store', 'export', '--store', 'file', '--state-dir', single.stateDir)
  const doc = JSON.parse(exported) as { from: string; services: Record<string, { nsmcniPolicy?: { namespace: string } }>; endpoints: Record<string, unknown> }
  t.equal(doc.from, 'file')
  t.equal(doc.services[`mig-svc-${RUN}`]?.nsmcniPolicy?.namespace, 'ops', 'the policy is exported with its service')
  t.same(Object.keys(doc.endpoints).sort(), [`mig-ep-${RUN}`, `mig-short-${RUN}`])
  const file = join(single.dir, 'export.json')
  writeFileSync(file, exported)
  const prefix = `/mig-${RUN}`
  const out = execFileSync(process.execPath, [join(ROOT, 'dist/nsmctl'), 'store', 'import', '-f', file, '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', prefix], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })
  t.match(out, /imported 1 services, 1 endpoints, 0 claims into etcd/, 'the expired endpoint is left out')
  const moved = await startAgent(t, { args: ['--node-name', 'moved', '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', prefix] })
  t.same(await names(moved), [`mig-ep-${RUN}`], 'the etcd agent serves the imported endpoint')
  const back = JSON.parse(nsmctl('store', 'export', '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', prefix)) as typeof doc
  t.same(back.services, { [`mig-svc-${RUN}`]: doc.services[`mig-svc-${RUN}`] }, 'exported back from etcd: the same service and policy')
  t.throws(() => nsmctl('store', 'import', '-f', file, '--store', 'etcd'), /--store etcd: needs --etcd-endpoints/, 'a backend without its flags is a usage error')
  writeFileSync(file, JSON.stringify({ nsmCniStore: 1, services: { Bad_Name: {} } }))
  t.throws(() => nsmctl('store', 'import', '-f', file, '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', prefix), /services\.Bad_Name: not a valid name/, 'a bad document is refused whole')
})
