// The cross-node mesh (issue 12), on a 2-node bed (test/lib/mesh-pods.ts startMesh: node namespaces on a
// bridge underlay, etcd in the underlay namespace, one dist/nsm-agent per node with mutual TLS), in one run:
//
// 1. NSM Request→UP through node 1's socket, the client in a pod namespace of node 1: to an endpoint on
//    node 2 (the Request forwarded to node 2's agent, a VXLAN cross-connect) and to an endpoint on node 1
//    (a KERNEL veth), interleaved one by one, each Closed before the next; BENCH_N (default 200) each after
//    10 warm-up pairs. p50/p99, and Close.
// 2. iperf3 TCP through a remote cross-connect made by the agents (client pod on node 1, endpoint pod on
//    node 2) next to raw VXLAN between the same two node namespaces (one `ip link add ... type vxlan` per
//    node, addressed in the node netns, same port, MTU 1450), alternated, BENCH_MESH_ROUNDS (3) ×
//    BENCH_MESH_SECONDS (5) each.
// 3. Heal after a node's agent dies: the client on node 1 connected to an endpoint on node 2, a standby
//    endpoint on node 1 (registered after the client's Request, so the first choice is node 2's), a ping
//    every 20 ms from the client to an address both endpoints hold (the standby answers with another IP
//    TTL); node 2's agent SIGKILLed; the time from the kill to the client's connection UP on the standby
//    (node 1's MonitorConnections) and to the first ping reply from the standby. Node 2's agent is
//    restarted between rounds (how long until it has removed its orphan half, and until node 1 forwards a
//    Request to it again, are reported too); BENCH_MESH_HEAL_ROUNDS (20) rounds. The endpoints are
//    registered as an NSE does it: through their node's agent, with a short lifetime (BENCH_MESH_EP_TTL_MS,
//    3000) refreshed every third of it while that agent answers; the agents run with --node-ttl
//    BENCH_MESH_NODE_TTL (3s).
//
// Writes the "Cross-node mesh" section of BENCHMARKS.md when every part completed. Everything (namespaces,
// processes, files) is removed at the end, also on failure or Ctrl-C (the agents and etcd die with this
// process in any case). Not part of `npm test`. Run: npx tsx bench/mesh.ts (root); about 2 minutes.
import { MonitorConnectionDefinition, MonitorScopeSelector, State, type Connection, type ConnectionEvent } from '../proto/gen/networkservice/connection'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import type { RunningAgent } from '../test/lib/agent'
import { endpointRegistration } from '../test/lib/mesh'
import { closeOn, registerService, requestOn, seenEverywhere } from '../test/lib/mesh-bed'
import { agentOf, startMesh, Teardowns, until, type Mesh, type MeshNode } from '../test/lib/mesh-pods'
import { execInNode } from '../test/lib/nodes'
import { ip, makeNetns, type TestNetns } from '../test/lib/netns'
import { startPinger } from '../test/lib/pinger'
import { machine, median, ms, stats, writeSection, type Stats } from './lib/report'
import { iperf, rawVxlan, runIn } from './lib/traffic'

const N = Number(process.env.BENCH_N ?? 200)
const ROUNDS = Number(process.env.BENCH_MESH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_MESH_SECONDS ?? 5)
const HEAL_ROUNDS = Number(process.env.BENCH_MESH_HEAL_ROUNDS ?? 20)
const EP_TTL_MS = Number(process.env.BENCH_MESH_EP_TTL_MS ?? 3000)
const NODE_TTL = process.env.BENCH_MESH_NODE_TTL ?? '3s'
const RAW_VNI = 4242
const td = new Teardowns()
const say = (s: string): void => void process.stderr.write(`${s}\n`)

const request = (n: MeshNode, id: string, client: TestNetns, ifname: string, svc: string): Promise<Connection> => requestOn(n.node, id, client.path, ifname, svc)
const close = (n: MeshNode, c: Connection): Promise<unknown> => closeOn(n.node, c)

interface Registered {
  /** Stops refreshing and unregisters the endpoint through `via` (any live agent: the registry is shared). */
  stop(via: MeshNode): Promise<void>
}

/**
 * An endpoint registered through its node's agent with a short lifetime and refreshed there every third of
 * it, as an NSE does: once that agent is gone, the refreshes fail and the registration expires.
 */
async function registerEndpoint(on: MeshNode, e: { name: string; netns: TestNetns; service: string; pool: string; routes?: string[] }): Promise<Registered> {
  const agent = agentOf(on) // this agent, not a restarted one: an NSE's refreshes go to the agent it knew
  const register = () => agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: e.name, netns: e.netns.path, service: e.service, labels: {}, pools: [e.pool], routes: e.routes ?? [], ttlMs: EP_TTL_MS }))
  let timer: NodeJS.Timeout | undefined
  const refresh = (): void => {
    timer = setTimeout(() => void register().then(refresh, () => undefined), EP_TTL_MS / 3)
  }
  await register()
  refresh()
  return {
    async stop(via) {
      clearTimeout(timer)
      await agentOf(via).client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: e.name })
    },
  }
}

/** Waits until every node's agent lists the endpoint (the store's watch reached them). */
async function seen(mesh: Mesh, name: string): Promise<void> {
  if (!(await seenEverywhere(mesh.bed, [name]))) throw new Error(`${name} not seen on every node`)
}

/** The connections an agent holds (the first event of MonitorConnections: its whole table). */
async function snapshot(a: RunningAgent): Promise<Connection[]> {
  const abort = new AbortController()
  let table: Connection[] | undefined
  await a.client
    .stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, MonitorScopeSelector.fromPartial({}), (ev: ConnectionEvent) => {
      table ??= Object.values(ev.connections)
      abort.abort()
    }, { signal: abort.signal })
    .catch((err: unknown) => {
      if (table === undefined) throw err
    })
  if (table === undefined) throw new Error(`no connection table from ${a.socket}: the stream ended without one`)
  return table
}

/** The nodes a connection's path goes through (n1 → n2 for a remote endpoint). */
const pathOf = (c: Connection): string => (c.path?.pathSegments ?? []).map((s) => s.name).join(' → ')

// ------------------------------------------------------------------------------------ 1. Request latency

async function requestLatency(mesh: Mesh, client: TestNetns): Promise<{ local: Stats; remote: Stats; closeLocal: Stats; closeRemote: Stats; paths: string }> {
  const [n1, n2] = mesh.nodes as [MeshNode, MeshNode]
  const regs = [
    await registerEndpoint(n1, { name: 'bench-ep-local', netns: makeNetns(td, 'el'), service: 'bench-local', pool: '172.31.1.0/24' }),
    await registerEndpoint(n2, { name: 'bench-ep-remote', netns: makeNetns(td, 'er'), service: 'bench-remote', pool: '172.31.2.0/24' }),
  ]
  await seen(mesh, 'bench-ep-local')
  await seen(mesh, 'bench-ep-remote')
  const samples = { local: [] as number[], remote: [] as number[], closeLocal: [] as number[], closeRemote: [] as number[] }
  const paths = new Set<string>()
  for (let i = 0; i < N + 10; i++) {
    for (const kind of ['local', 'remote'] as const) {
      const t0 = performance.now()
      const c = await request(n1, `bench-${kind}-${i}`, client, kind === 'local' ? 'nsml' : 'nsmr', `bench-${kind}`)
      const t1 = performance.now()
      await close(n1, c)
      const t2 = performance.now()
      paths.add(`${kind} ${pathOf(c)}`)
      if (i >= 10) {
        samples[kind].push(t1 - t0)
        samples[kind === 'local' ? 'closeLocal' : 'closeRemote'].push(t2 - t1)
      }
    }
  }
  for (const r of regs) await r.stop(n1)
  return { local: stats(samples.local), remote: stats(samples.remote), closeLocal: stats(samples.closeLocal), closeRemote: stats(samples.closeRemote), paths: [...paths].join(', ') }
}

// ------------------------------------------------------------------------------------ 2. throughput

async function throughput(mesh: Mesh, client: TestNetns): Promise<{ mesh: number[]; raw: number[]; mtu: number; how: string }> {
  const [n1, n2] = mesh.nodes as [MeshNode, MeshNode]
  const ep = makeNetns(td, 'et')
  const reg = await registerEndpoint(n2, { name: 'bench-ep-iperf', netns: ep, service: 'bench-iperf', pool: '172.31.3.0/24' })
  await seen(mesh, 'bench-ep-iperf')
  const c = await request(n1, 'bench-iperf', client, 'nsmt', 'bench-iperf')
  const dst = (c.context?.ipContext?.dstIpAddrs[0] ?? '').split('/')[0] ?? ''
  const link = (JSON.parse(ip(client.name, '-j', '-d', 'link', 'show', 'dev', 'nsmt')) as Array<{ mtu: number; linkinfo?: { info_kind?: string; info_data?: { id?: number } } }>)[0]
  const mtu = link?.mtu ?? 0
  const how = `${link?.linkinfo?.info_kind ?? '?'} id ${link?.linkinfo?.info_data?.id ?? '?'} in the client pod, path ${pathOf(c)}`
  say(`  the cross-connect: ${how}, ${c.context?.ipContext?.srcIpAddrs.join(',') ?? ''} → ${dst}, MTU ${mtu}`)
  const rawAddr = rawVxlan(td, n1.node, n2.node, { vni: RAW_VNI, mtu, subnet: '192.168.252' })
  await runIn(client, 'ping', ['-c', '1', '-W', '5', dst], 10_000)
  await runIn(n1.node, 'ping', ['-c', '1', '-W', '5', rawAddr], 10_000)
  const viaMesh: number[] = []
  const raw: number[] = []
  for (let i = 0; i < ROUNDS; i++) {
    viaMesh.push(await iperf(ep, client, dst, SECONDS))
    raw.push(await iperf(n2.node, n1.node, rawAddr, SECONDS))
    say(`  round ${i + 1}/${ROUNDS}: cross-connect ${viaMesh.at(-1)?.toFixed(2)} Gbit/s, raw VXLAN ${raw.at(-1)?.toFixed(2)} Gbit/s`)
  }
  await close(n1, c)
  await reg.stop(n1)
  return { mesh: viaMesh, raw, mtu, how }
}

// ------------------------------------------------------------------------------------ 3. heal

async function heal(mesh: Mesh, client: TestNetns): Promise<{ up: number[]; ping: number[]; orphan: number[]; reforward: number[] }> {
  const [n1, n2] = mesh.nodes as [MeshNode, MeshNode]
  const SVC = 'bench-heal'
  const TARGET = '10.61.0.1'
  const STANDBY_TTL = 100 // the standby answers with it (the primary with 64): the ping tells them apart
  const primary = makeNetns(td, 'hp')
  const standby = makeNetns(td, 'hs')
  for (const ns of [primary, standby]) execInNode(ns, 'ip', ['addr', 'add', `${TARGET}/32`, 'dev', 'lo'])
  execInNode(standby, 'sysctl', ['-qw', `net.ipv4.ip_default_ttl=${STANDBY_TTL}`])
  const up: number[] = []
  const ping: number[] = []
  const orphan: number[] = []
  const reforward: number[] = []
  let restartedAt = 0
  const n1Agent = agentOf(n1)
  for (let round = 0; round < HEAL_ROUNDS; round++) {
    const [onN2, onN1, id] = [`bench-heal-n2-${round}`, `bench-heal-n1-${round}`, `bench-heal-${round}`]
    const p = await registerEndpoint(n2, { name: onN2, netns: primary, service: SVC, pool: '172.31.4.0/24', routes: ['10.61.0.0/16'] })
    await seen(mesh, onN2)
    // The standby registers after the client's Request: the first choice can only be node 2's endpoint.
    // From the second round on, node 2's agent has just restarted: node 1 may refuse to forward to it for a
    // while (what it answers is shown once, and the time until it forwards again is measured).
    let c: Connection | undefined
    let refusal = ''
    await until(`round ${round}: node 1 forwarding to node 2 again`, async () => {
      c = await request(n1, id, client, 'nsmh', SVC).catch((err: unknown) => {
        refusal ||= err instanceof Error ? err.message : String(err)
        return undefined
      })
      return c !== undefined
    }, 180_000)
    if (round > 0) reforward.push(performance.now() - restartedAt)
    if (refusal !== '' && round === 1) say(`  node 1 refused the first Request after node 2's restart: ${refusal}`)
    if (c === undefined) throw new Error('unreachable')
    if (c.networkServiceEndpointName !== onN2) throw new Error(`round ${round}: connected to ${c.networkServiceEndpointName}, not ${onN2}`)
    const s = await registerEndpoint(n1, { name: onN1, netns: standby, service: SVC, pool: '172.31.5.0/24', routes: ['10.61.0.0/16'] })
    await seen(mesh, onN1)
    // The client's connection as node 1 reports it: UP on the standby is the heal.
    const monitor = new AbortController()
    let healedAt = 0
    let healedPath = ''
    const watching = n1Agent.client
      .stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, MonitorScopeSelector.fromPartial({}), (ev: ConnectionEvent) => {
        const conn = ev.connections[id]
        if (healedAt === 0 && conn?.state === State.UP && conn.networkServiceEndpointName === onN1) {
          healedAt = Date.now()
          healedPath = pathOf(conn)
        }
      }, { signal: monitor.signal })
      .catch(() => undefined)
    const pings = startPinger(td, client.name, TARGET, 20)
    await until(`round ${round}: pings through node 2`, () => pings.replies.length >= 3, 5000)
    const killedAt = Date.now()
    await n2.stop('SIGKILL')
    const viaStandby = (r: { at: number; ttl: number }): boolean => r.at >= killedAt && r.ttl > 64
    await until(`round ${round}: UP on the standby and a reply through it`, () => healedAt > 0 && pings.replies.some(viaStandby), 60_000).catch(async (err: unknown) => {
      const last = pings.replies.at(-1)
      const table = await snapshot(n1Agent)
      say(`round ${round}: UP on the standby seen: ${healedAt > 0}; ${pings.replies.length} replies, the last ${last === undefined ? '-' : `${Math.round(last.at - killedAt)} ms after the kill, ttl ${last.ttl}`}`)
      say(`node 1's connections: ${JSON.stringify(table.map((x) => ({ id: x.id, endpoint: x.networkServiceEndpointName, state: State[x.state], path: pathOf(x) })))}`)
      say(`node 1's agent log since the kill:\n${n1Agent.logs.filter((l) => Date.parse(String(l.time ?? '')) >= killedAt || l.level === 'warn' || l.level === 'error').slice(-30).map((l) => JSON.stringify(l)).join('\n')}`)
      throw err
    })
    up.push(healedAt - killedAt)
    ping.push((pings.replies.find(viaStandby)?.at ?? NaN) - killedAt)
    await pings.stop()
    monitor.abort()
    await watching
    await p.stop(n1) // its node's agent is dead: unregistered through node 1 (the registry is shared)
    await close(n1, { ...c, networkServiceEndpointName: onN1 })
    await s.stop(n1)
    // Node 2's agent back (as a DaemonSet restarts it): it removes the half it held for the moved connection.
    const back = await n2.start()
    restartedAt = performance.now()
    let last = 'its table is not empty'
    const empty = async (): Promise<boolean> => {
      const table = await snapshot(back).catch((err: unknown) => void (last = String(err)))
      return table?.length === 0
    }
    orphan.push(await until(`round ${round}: node 2's orphan half removed`, empty, 30_000).catch((err: unknown) => Promise.reject(new Error(`${String(err)}: ${last}`))))
    say(`heal round ${round + 1}/${HEAL_ROUNDS}: UP on the standby ${up.at(-1)} ms after the kill, first reply through it ${Math.round(ping.at(-1) ?? NaN)} ms (path then ${healedPath}); restarted node 2 empty after ${Math.round(orphan.at(-1) ?? NaN)} ms${round > 0 ? `; node 1 forwarded to it again ${Math.round(reforward.at(-1) ?? NaN)} ms after it was ready` : ''}`)
  }
  return { up, ping, orphan, reforward }
}

// ------------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const mesh = await startMesh(td, { count: 2, agentArgs: ['--node-ttl', NODE_TTL] })
  const [n1] = mesh.nodes as [MeshNode]
  for (const name of ['bench-local', 'bench-remote', 'bench-iperf', 'bench-heal']) await registerService(n1.node, name)
  const client = makeNetns(td, 'cl')
  say(`bed ready: 2 nodes, etcd on ${mesh.etcd.endpoints.join(',')}. 1. Request latency (n=${N} each, interleaved)`)
  const lat = await requestLatency(mesh, client)
  say(`  remote p50 ${ms(lat.remote.p50)} ms, local p50 ${ms(lat.local.p50)} ms; paths: ${lat.paths}`)
  say(`2. iperf3 (${ROUNDS} × ${SECONDS} s each)`)
  const tp = await throughput(mesh, client)
  say(`3. heal (${HEAL_ROUNDS} rounds)`)
  const h = await heal(mesh, client)

  const [up, first, orphan, reforward] = [stats(h.up), stats(h.ping), stats(h.orphan), stats(h.reforward)]
  const md = `## Cross-node mesh (\`bench/mesh.ts\`)

Two test-bed nodes (network namespaces on a bridge underlay, test/lib/mesh-bed.ts through test/lib/mesh-pods.ts
startMesh), etcd in the underlay namespace, one \`dist/nsm-agent\` per node (\`--store etcd\`, peer listener
with mutual TLS, \`--node-ttl ${NODE_TTL}\`); the client in a pod namespace of node 1, Requests on node 1's
socket; endpoints registered through their node's agent with a ${EP_TTL_MS / 1000} s lifetime, refreshed every third of it.
${machine()}.

| what | value |
|---|---|
| Request→UP, endpoint on the other node (forwarded over mTLS, VXLAN pair; n=${lat.remote.n}, interleaved) p50 / p99 | ${ms(lat.remote.p50)} / ${ms(lat.remote.p99)} ms |
| Request→UP, endpoint on the same node (KERNEL veth; n=${lat.local.n}, interleaved) p50 / p99 | ${ms(lat.local.p50)} / ${ms(lat.local.p99)} ms |
| Close, other node / same node, p50 / p99 | ${ms(lat.closeRemote.p50)} / ${ms(lat.closeRemote.p99)}, ${ms(lat.closeLocal.p50)} / ${ms(lat.closeLocal.p99)} ms |
| iperf3 TCP through a remote cross-connect (${tp.how}, MTU ${tp.mtu}; median of ${ROUNDS} × ${SECONDS} s: ${tp.mesh.map((x) => x.toFixed(1)).join(', ')}) | ${median(tp.mesh).toFixed(2)} Gbit/s |
| iperf3 TCP over raw VXLAN between the same node namespaces (same MTU, alternated: ${tp.raw.map((x) => x.toFixed(1)).join(', ')}) | ${median(tp.raw).toFixed(2)} Gbit/s |
| ratio | ${((median(tp.mesh) / median(tp.raw)) * 100).toFixed(0)} % |
| heal, node 2's agent SIGKILLed: from the kill to the client's connection UP on the standby on node 1 (node 1's MonitorConnections; ${up.n} rounds) p50 / p99 | ${ms(up.p50)} / ${ms(up.p99)} ms |
| heal: from the kill to the first ping reply through the standby (a ping every 20 ms) p50 / p99 | ${ms(first.p50)} / ${ms(first.p99)} ms |
| node 2's agent restarted: ready to its orphan half removed p50 / p99 | ${ms(orphan.p50)} / ${ms(orphan.p99)} ms |
| node 2's agent restarted: ready to node 1 forwarding a Request to it again (refused UNAVAILABLE before, the peer channel still backing off; ${reforward.n} restarts) p50 / p99 | ${ms(reforward.p50)} / ${ms(reforward.p99)} ms |

The endpoint's half on node 2 keeps forwarding after its agent dies (the kernel holds it): the client's pings
are answered by the old endpoint until the heal moves the connection, so the outage is shorter than the heal.`
  writeSection('mesh', md)
  process.stdout.write(`${md}\n`)
}

// Ctrl-C may arrive twice (the terminal's process group, and tsx relaying it): one teardown, then exit.
let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return
    stopping = true
    void td.run().finally(() => process.exit(130))
  })
}

try {
  await main()
} finally {
  await td.run()
  for (const e of td.errors) say(`cleanup: ${e}`)
}
