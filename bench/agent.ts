// The node agent (issue 4): Request→UP and Close latency through the unix socket (local endpoint,
// KERNEL mechanism) at concurrency 1 and 16, agent RSS with 1,000 live connections, heal time after
// the serving endpoint is unregistered, and iperf3 throughput through a cross-connect next to a raw
// veth pair, all in one run. Reference rows: the same cross-connect built in-process by pkg/netlink
// (the kernel's share of a Request), and a raw veth for throughput.
// Run: npx tsx bench/agent.ts (root). BENCH_N sets the latency iterations. The run goes on with the table
// benchmark (bench/agent-table.ts, issue 10); BENCH_ONLY=agent runs only this section, BENCH_ONLY=table only that one.
import { execFileSync, spawn } from 'node:child_process'
import { NetworkServiceDefinition } from '../proto/gen/networkservice/networkservice'
import { MonitorConnectionDefinition, State, type Connection, type ConnectionEvent } from '../proto/gen/networkservice/connection'
import { NetworkServiceRegistryDefinition } from '../proto/gen/registry/registry'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import type { AgentClient } from '../agent/client/client'
import { startAgent } from '../test/lib/agent'
import { kernelRequest, seedServices, serviceMessage } from '../test/lib/mesh'
import { tableSection } from './agent-table'
import { inProcessReference, netns as benchNetns, nsPath, pool, registerEndpoint, rssMiB, sh, teardownList } from './lib/agent'
import { machine, ms, stats, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 300)
const ONLY = process.env.BENCH_ONLY ?? ''
const cleanups = teardownList()
const netns = (name: string): string => benchNetns(cleanups, name)

/**
 * `total` connections requested by `concurrency` workers, then closed by as many: each call timed alone,
 * so Request latency is not mixed with the (kernel-bound, rtnl-serialized) veth deletions of Close.
 */
async function latency(client: AgentClient, clients: string[], concurrency: number, total: number): Promise<{ req: number[]; close: number[]; reqWall: number }> {
  const req: number[] = []
  const close: number[] = []
  const conns: Connection[] = []
  const t0 = performance.now()
  await pool(concurrency, total, async (i) => {
    const r = kernelRequest(`lat-${concurrency}-${i}`, nsPath(clients[i % clients.length] as string), `nsm${Math.floor(i / clients.length)}`)
    const a = performance.now()
    conns.push(await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, r))
    req.push(performance.now() - a)
  })
  const reqWall = performance.now() - t0
  await pool(concurrency, conns.length, async (i) => {
    const a = performance.now()
    await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conns[i] as Connection)
    close.push(performance.now() - a)
  })
  return { req, close, reqWall }
}


function iperf(serverNs: string, clientNs: string, addr: string): number {
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', addr], { stdio: 'ignore' })
  try {
    execFileSync('sleep', ['0.5'])
    const out = JSON.parse(sh('ip', 'netns', 'exec', clientNs, 'iperf3', '-c', addr, '-t', '3', '-J')) as { end: { sum_received: { bits_per_second: number } } }
    return out.end.sum_received.bits_per_second / 1e9
  } finally {
    server.kill('SIGKILL')
  }
}

async function main(): Promise<void> {
  const ep = netns('ep')
  const ep2 = netns('ep2')
  const clients = Array.from({ length: 20 }, (_, i) => netns(`c${i}`))
  const agent = await startAgent(cleanups)
  const client = agent.client
  for (const s of seedServices()) await client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
  await registerEndpoint(client, 'fw-1', ep, ['10.200.0.0/16'])

  await latency(client, clients, 1, 20) // warm-up
  const c1 = await latency(client, clients, 1, N)
  const c16 = await latency(client, clients, 16, N)
  const ref = await inProcessReference(clients[0] as string, ep, N)

  // 1,000 live connections: 20 client namespaces × 50 interfaces.
  const rssBefore = rssMiB(agent.pid)
  // Created 16 at a time (as pods arrive), measured once the agent is idle again (steady state).
  const live: Connection[] = []
  for (let i = 0; i < 1000; i += 16) {
    const batch = Array.from({ length: Math.min(16, 1000 - i) }, (_, k) => i + k)
    live.push(
      ...(await Promise.all(
        batch.map((j) => client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`live-${j}`, nsPath(clients[j % 20] as string), `nsm${Math.floor(j / 20)}`))),
      )),
    )
  }
  // Read once the agent has been idle long enough to collect its garbage (agent/idle-gc.ts: 2 s of quiet).
  await new Promise((r) => setTimeout(r, 5000))
  const rss1000 = rssMiB(agent.pid)
  for (let i = 0; i < live.length; i += 50) {
    await Promise.all(live.slice(i, i + 50).map((c) => client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)))
  }

  // Throughput through a cross-connect vs a raw veth pair: alternated, 5 runs of 3 s each, medians
  // (single runs on this shared 2-core machine vary by ±30 %).
  const xc = await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest('perf', nsPath(clients[0] as string), 'nsmperf'))
  const dst = (xc.context?.ipContext?.dstIpAddrs[0] ?? '').split('/')[0] ?? ''
  const r1 = netns('raw1')
  const r2 = netns('raw2')
  sh('ip', 'link', 'add', 'rawa', 'netns', r1, 'type', 'veth', 'peer', 'name', 'rawb', 'netns', r2)
  sh('ip', '-n', r1, 'addr', 'add', '192.168.250.1/24', 'dev', 'rawa')
  sh('ip', '-n', r2, 'addr', 'add', '192.168.250.2/24', 'dev', 'rawb')
  sh('ip', '-n', r1, 'link', 'set', 'rawa', 'up')
  sh('ip', '-n', r2, 'link', 'set', 'rawb', 'up')
  const meshRuns: number[] = []
  const rawRuns: number[] = []
  for (let i = 0; i < 5; i++) {
    meshRuns.push(iperf(ep, clients[0] as string, dst))
    rawRuns.push(iperf(r2, r1, '192.168.250.2'))
  }
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number
  const viaMesh = median(meshRuns)
  const raw = median(rawRuns)
  await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, xc)

  // Heal: a connection on fw-1, a second endpoint appears, fw-1 is unregistered; time until UP again.
  await registerEndpoint(client, 'fw-2', ep2, ['10.200.0.0/16'])
  const healTimes: number[] = []
  for (let i = 0; i < 10; i++) {
    const conn = await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`heal-${i}`, nsPath(clients[1] as string), 'nsmheal'))
    const serving = conn.networkServiceEndpointName
    const controller = new AbortController()
    let t0 = 0
    const up = new Promise<number>((res) => {
      void client
        .stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, (ev: ConnectionEvent) => {
          const c = ev.connections[conn.id]
          if (t0 > 0 && c !== undefined && c.state === State.UP && c.networkServiceEndpointName !== serving) res(performance.now() - t0)
        }, { signal: controller.signal })
        .catch(() => undefined)
    })
    await new Promise((r) => setTimeout(r, 50))
    t0 = performance.now()
    await client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: serving })
    healTimes.push(await up)
    controller.abort()
    await registerEndpoint(client, serving, serving === 'fw-1' ? ep : ep2, ['10.200.0.0/16'])
    await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  }
  await agent.stop('SIGTERM')

  const s1 = stats(c1.req)
  const s1c = stats(c1.close)
  const s16 = stats(c16.req)
  const s16c = stats(c16.close)
  const sref = stats(ref)
  const sh_ = stats(healTimes)
  const md = `## Node agent: Request, Close, RSS, heal, throughput (issue 4)

${new Date().toISOString().slice(0, 10)}, ${machine()}. Command: \`npx tsx bench/agent.ts\` (root; \`BENCH_N\`=${N}).
\`dist/nsm-agent\` as a real process; calls through its unix socket with agent/client (@grpc/grpc-js), as nsmctl makes them; local
endpoint, KERNEL mechanism (veth, /32 pair, routes), each Request durable in the table before the reply.

| measure | p50 ms | p99 ms | target |
|---|---|---|---|
| Request→UP, concurrency 1 | ${ms(s1.p50)} | ${ms(s1.p99)} | p50 ≤ 5, p99 ≤ 20 |
| Close, concurrency 1 | ${ms(s1c.p50)} | ${ms(s1c.p99)} | |
| Request→UP, concurrency 16 (${(N / (c16.reqWall / 1000)).toFixed(0)} requests/s) | ${ms(s16.p50)} | ${ms(s16.p99)} | |
| Close, concurrency 16 | ${ms(s16c.p50)} | ${ms(s16c.p99)} | |
| reference: the same cross-connect built in-process by pkg/netlink | ${ms(sref.p50)} | ${ms(sref.p99)} | |
| heal: endpoint unregistered → MonitorConnections UP on the other (10 runs) | ${ms(sh_.p50)} | ${ms(sh_.p99)} (max ${ms(Math.max(...healTimes))}) | ≤ 1000 |

| measure | value | target |
|---|---|---|
| agent RSS idle after the latency runs | ${rssBefore.toFixed(1)} MiB | |
| agent RSS with 1,000 live connections (made 16 at a time, read 5 s after the last: the agent collects its garbage once idle 2 s) | ${rss1000.toFixed(1)} MiB | ≤ 150 MiB |
| iperf3 through a cross-connect (median of 5 × 3 s: ${meshRuns.map((x) => x.toFixed(1)).join(', ')}) | ${viaMesh.toFixed(2)} Gbit/s | ≥ 95 % of raw veth |
| iperf3 through a raw veth pair (alternated with the above: ${rawRuns.map((x) => x.toFixed(1)).join(', ')}) | ${raw.toFixed(2)} Gbit/s | |
| ratio | ${((viaMesh / raw) * 100).toFixed(0)} % | |`
  writeSection('agent', md)
  process.stdout.write(`${md}\n`)
}

try {
  if (ONLY === '' || ONLY === 'agent') await main()
  if (ONLY === '' || ONLY === 'table') await tableSection()
} finally {
  await cleanups.run()
}
