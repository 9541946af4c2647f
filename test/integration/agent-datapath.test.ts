// dist/nsm-agent as a real process building real datapaths: Request/Close over its unix socket,
// SIGKILL + restart with a ping flowing across it (the datapath is never torn down), and 100
// concurrent requests and closes that leave zero links, addresses and reservations behind.
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { MonitorConnectionDefinition, State, type ConnectionEvent } from '../../proto/gen/networkservice/connection'
import type { AgentClient } from '../../agent/client/client'
import { collect, startAgent } from '../lib/agent'
import { ip, linkNames, makeNetns, type TestNetns } from '../lib/netns'
import { kernelRequest, seedAgent } from '../lib/mesh'

async function setup(client: AgentClient, fw: TestNetns, pools: string[], name = 'firewall-1'): Promise<void> {
  await seedAgent(client, fw.path, pools, name)
}

t.test('Request and Close through the socket; SIGKILL and restart keep the datapath flowing', async (t) => {
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  const first = await startAgent(t)
  await setup(first.client, fw, ['172.16.1.0/24'])
  const conn = await first.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest('r1-nsm0', client.path, 'nsm0', { app: 'web' }))
  t.equal(conn.state, State.UP)
  t.same(conn.context?.ipContext?.srcIpAddrs, ['172.16.1.1/32'])
  t.ok(linkNames(client.name).includes('nsm0'))

  // A ping runs across the SIGKILL and the restart.
  const pinger = spawn('ip', ['netns', 'exec', client.name, 'ping', '-i', '0.05', '-c', '60', '-W', '1', '172.16.1.0'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => {
    pinger.kill('SIGKILL')
  })
  let pingOut = ''
  pinger.stdout.on('data', (d: Buffer) => (pingOut += d.toString()))
  const pingDone = new Promise<void>((res) => pinger.on('exit', () => res()))
  await first.stop('SIGKILL')
  const second = await startAgent(t, { dir: first.dir })
  const reconciled = second.logs.find((l) => l.msg === 'reconciled connections with the kernel')
  t.match(reconciled, { kept: 1, rebuilt: 0, closed: 0 }, 'the restarted agent kept the intact datapath')
  await pingDone
  const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut)
  t.ok(m !== null && m[1] === m[2], `no ping lost across the restart (${m?.[0] ?? pingOut})`)
  t.equal(linkNames(client.name).filter((n) => n === 'nsm0').length, 1, 'nothing duplicated')
  const stored = JSON.parse(readFileSync(join(second.stateDir, 'connections.json'), 'utf8')) as { connections: unknown[] }
  t.equal(stored.connections.length, 1)

  await second.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  await second.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(fw.name), ['lo'])
  const exit = await second.stop('SIGTERM')
  t.equal(exit.code, 0)
  const after = JSON.parse(readFileSync(join(second.stateDir, 'connections.json'), 'utf8')) as { connections: unknown[] }
  t.same(after.connections, [], 'no connection left in the table')
})

t.test('100 concurrent requests, then 100 concurrent closes: zero links, addresses, reservations left', async (t) => {
  const fw = makeNetns(t, 'fw')
  const clients = Array.from({ length: 10 }, () => makeNetns(t, 'c'))
  const agent = await startAgent(t)
  await setup(agent.client, fw, ['172.16.0.0/22', 'fd00:9::/64'])
  const reqs = Array.from({ length: 100 }, (_, i) => kernelRequest(`cc-${i}`, (clients[i % 10] as TestNetns).path, `nsm${Math.floor(i / 10)}`))
  const conns = await Promise.all(reqs.map((r) => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, r))).catch((err: unknown) => {
    throw new Error(`${String(err)}\nagent stderr: ${agent.stderr()}\nlogs: ${JSON.stringify(agent.logs.filter((l) => l.level !== 'info'))}`)
  })
  const addrs = conns.flatMap((c) => [...(c.context?.ipContext?.srcIpAddrs ?? []), ...(c.context?.ipContext?.dstIpAddrs ?? [])])
  t.equal(new Set(addrs).size, addrs.length, 'no address handed out twice')
  t.equal(addrs.length, 400)
  t.equal(linkNames(fw.name).length, 101, 'one endpoint-side interface per connection')
  await Promise.all(conns.map((c) => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)))
  for (const c of clients) t.same(linkNames(c.name), ['lo'])
  t.same(linkNames(fw.name), ['lo'])
  t.equal(ip(fw.name, '-o', 'addr', 'show').trim().split('\n').filter((l) => !l.includes(' lo ')).length, 0, 'no address left')
  const status = await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.ok(status !== undefined)
  await agent.stop('SIGTERM')
  const table = JSON.parse(readFileSync(join(agent.stateDir, 'connections.json'), 'utf8')) as { connections: unknown[] }
  t.same(table.connections, [], 'no reservation left (allocations live in the table records)')
})

t.test('heal through the agent: unregistering the serving endpoint shows DOWN then UP on MonitorConnections', async (t) => {
  const client = makeNetns(t, 'cl')
  const a = makeNetns(t, 'fa')
  const b = makeNetns(t, 'fb')
  const agent = await startAgent(t)
  await setup(agent.client, a, ['172.16.1.0/24'], 'fw-a')
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest('mh-nsm0', client.path, 'nsm0'))
  t.equal(conn.networkServiceEndpointName, 'fw-a')
  await setup(agent.client, b, ['172.16.1.0/24'], 'fw-b')
  const events = collect<ConnectionEvent>((on, signal) =>
    agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, on, { signal }),
  )
  t.teardown(() => events.cancel())
  await events.until(() => true) // the initial state transfer
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'fw-a' })
  const down = await events.until((e) => e.connections['mh-nsm0']?.state === State.DOWN)
  const up = await events.until((e) => e.connections['mh-nsm0']?.state === State.UP && e.connections['mh-nsm0']?.networkServiceEndpointName === 'fw-b')
  t.ok(events.items.indexOf(down) < events.items.indexOf(up), 'DOWN before UP')
  t.same(up.connections['mh-nsm0']?.context?.ipContext?.srcIpAddrs, conn.context?.ipContext?.srcIpAddrs, 'kept its address (fw-b has the same pool)')
  t.same(linkNames(a.name), ['lo'])
  t.ok(linkNames(client.name).includes('nsm0'))
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(b.name), ['lo'])
})
