// Issue 12 item 5: endpoints that serve the NSM API themselves (agent/pipeline/nse.ts). The stub NSE
// (test/lib/stub-nse.ts, from the NSM protos) runs inside its pod netns and is registered with NSM's
// registry Register as `unix:///…/nse.sock`, no netns. A client's Request through a real agent reaches it
// with the KERNEL mechanism the agent proposes; the NSE does its own IPAM and names its netns as
// file:///proc/<pid>/ns/net; the agent builds the veth there with exactly the answered addresses and
// routes, and traffic flows. Close closes it at the NSE too. The NSE killed: the connection heals to a
// second NSE.
import t from 'tap'
import { join } from 'node:path'
import { NetworkServiceEndpointRegistryDefinition, NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { State } from '../../proto/gen/networkservice/connection'
import { connectionsOf, startAgent, tempDir, type RunningAgent } from '../lib/agent'
import { linkNames, makeNetns, RUN, sh } from '../lib/netns'
import { kernelRequest } from '../lib/mesh'
import { until } from '../lib/cluster'
import { runStubNse, startStubNse } from '../lib/stub-nse'

t.setTimeout(120_000)

const register = (agent: RunningAgent, name: string, service: string, socket: string) =>
  agent.client.unary(NetworkServiceEndpointRegistryDefinition, NetworkServiceEndpointRegistryDefinition.methods.register, {
    name,
    networkServiceNames: [service],
    networkServiceLabels: {},
    url: `unix://${socket}`,
    expirationTime: { seconds: Math.floor(Date.now() / 1000) + 600, nanos: 0 },
    initialRegistrationTime: undefined,
    pathIds: [],
  })

t.test('a Request reaches an endpoint serving the NSM API; its IPAM and netns are honoured; it heals to another', async (t) => {
  const agent = await startAgent(t)
  const svc = `api-${RUN}`
  await agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: svc, payload: 'IP', matches: [], pathIds: [] })
  const dir = tempDir(t, 'nsm-nse-api-')
  const podA = makeNetns(t, 'na')
  const a = await runStubNse(t, podA.name, ['--socket', join(dir, 'a.sock'), '--name', `nse-a-${RUN}`, '--pool', '10.70.0.0/24', '--route', '10.71.0.0/16'])
  await register(agent, `nse-a-${RUN}`, svc, join(dir, 'a.sock'))
  const client = makeNetns(t, 'cl')
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`api1-${RUN}`, client.path, 'nsm0', {}, svc))
  t.equal(conn.networkServiceEndpointName, `nse-a-${RUN}`)
  t.same(conn.context?.ipContext?.srcIpAddrs, ['10.70.0.1/32'], "the NSE's own IPAM: the client's address from its pool")
  t.same(conn.context?.ipContext?.dstIpAddrs, ['10.70.0.0/32'])
  t.ok(conn.context?.ipContext?.srcRoutes.some((r) => r.prefix === '10.71.0.0/16' && r.nextHop === '10.70.0.0'), "the NSE's route")
  t.ok(linkNames(podA.name).some((l) => l.startsWith('nsm')), "the veth's other end is in the NSE's netns (named by inodeURL /proc/<pid>/ns/net)")
  t.match(sh('ip', ['netns', 'exec', client.name, 'ping', '-c', '1', '-W', '2', '10.70.0.0']), / 0% packet loss/, 'traffic to the NSE')
  t.match(sh('ip', ['-n', client.name, 'route']), /10\.71\.0\.0\/16 via 10\.70\.0\.0/)

  // A second NSE; the first one dies: its netns (a /proc path) vanishes and the connection heals to b.
  const podB = makeNetns(t, 'nb')
  await runStubNse(t, podB.name, ['--socket', join(dir, 'b.sock'), '--name', `nse-b-${RUN}`, '--pool', '10.80.0.0/24'])
  await register(agent, `nse-b-${RUN}`, svc, join(dir, 'b.sock'))
  await a.kill()
  const healed = await until(async () => (await connectionsOf(agent)).some((c) => c.id === `api1-${RUN}` && c.networkServiceEndpointName === `nse-b-${RUN}` && c.state === State.UP), 10_000)
  t.not(healed, -1, `healed to the second NSE (${healed} ms)`)
  t.match(sh('ip', ['netns', 'exec', client.name, 'ping', '-c', '1', '-W', '2', '10.80.0.0']), / 0% packet loss/, 'traffic to the second NSE')
  t.same(linkNames(client.name).filter((l) => l !== 'lo'), ['nsm0'], 'same interface name')

  const [now] = (await connectionsOf(agent)).filter((c) => c.id === `api1-${RUN}`)
  if (now === undefined) throw new Error('connection gone')
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, now)
  t.same(linkNames(client.name), ['lo'], 'Close removed the veth')
  t.same(linkNames(podB.name), ['lo'])
})

t.test("an NSE answering with the host's netns is refused: nothing built, the connection closed at the NSE", async (t) => {
  const agent = await startAgent(t)
  const svc = `api-bad-${RUN}`
  await agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: svc, payload: 'IP', matches: [], pathIds: [] })
  const dir = tempDir(t, 'nsm-nse-host-')
  // In this process (the host netns): it answers file:///proc/<pid>/ns/net, the host's, which the policy refuses.
  const nse = await startStubNse({ socket: join(dir, 'h.sock'), name: `nse-h-${RUN}`, pool: '10.90.0.0/24' })
  t.teardown(() => nse.close())
  await register(agent, `nse-h-${RUN}`, svc, join(dir, 'h.sock'))
  const client = makeNetns(t, 'cl')
  const err = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`apih-${RUN}`, client.path, 'nsm0', {}, svc)).catch((e: unknown) => e as Error)
  t.match(String((err as Error).message), /inodeURL.*(host|not allowed|refused)/i, `refused naming the field: ${(err as Error).message}`)
  t.same(linkNames(client.name), ['lo'], 'nothing built')
  t.same(nse.closes.map((c) => c.id), [`apih-${RUN}`], 'the connection was closed at the NSE')
  t.equal(nse.allocations().size, 0, "the NSE's pair was freed")
})
