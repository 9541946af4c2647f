// `npm run demo -- --nodes 3`: the seed scenario (ARCHITECTURE §1) across nodes (§12), on one machine.
//
// The bed is test/lib/mesh-pods.ts's (startMesh, makePod, cni; shared with bench/mesh.ts): nodes are network
// namespaces on a bridge underlay, one dist/nsm-agent in each (`ip netns exec`), sharing a real etcd that
// runs in the underlay namespace on an address of the bridge (never on a host interface), the agents talking
// to each other over mutual TLS with node certificates from a throwaway CA. Pods are ordinary namespaces,
// each ADDed through dist/nsm (the conflist [loopback, nsm]) to the agent of ITS node: client on n1,
// firewall on n2, vpn-gateway on n3, and a second vpn-gateway on n1 standing by. The demo prints the
// topology (which connection goes from which pod on which node to which, over a KERNEL veth or VXLAN), pings
// the intranet address behind the gateway through the firewall, SIGKILLs n3's agent and times the switch to
// the standby gateway (it answers with another IP TTL, so the client's own ping shows which gateway
// replied), then tears everything down (CNI DEL, agents SIGTERMed, etcd stopped, namespaces removed) and
// checks that nothing is left. Needs root.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import { agentOf, cni, delPods, makePod, nsmctl, RUN_PREFIX, startMesh, Teardowns, until, type Mesh, type MeshNode, type Pod } from '../test/lib/mesh-pods'
import { RUN, sh } from '../test/lib/netns'
import { startPinger } from '../test/lib/pinger'

const ROOT = resolve(import.meta.dirname, '..')
const listEndpoints = async (n: MeshNode) => (await agentOf(n).client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints

// ------------------------------------------------------------------------------------ topology

interface ConnJson {
  id: string
  networkService?: string
  networkServiceEndpointName?: string
  state?: string
  mechanism?: { cls?: string; type?: string; parameters?: Record<string, string> }
  context?: { ipContext?: { srcIpAddrs?: string[]; dstIpAddrs?: string[] } }
  labels?: Record<string, string>
  path?: { pathSegments?: Array<{ name?: string; id?: string }> }
}
interface EndpointJson {
  endpoint?: { name?: string }
  extension?: { netnsPath?: string; nodeName?: string }
}

/** Every node's connections (nsmctl get connections -o json on its socket), with the node that lists it. */
export function connections(mesh: Mesh): Array<{ node: MeshNode; conn: ConnJson }> {
  return mesh.nodes.filter((n) => n.agent !== undefined).flatMap((node) => (JSON.parse(nsmctl(node, 'get', 'connections', '-o', 'json')) as ConnJson[]).map((conn) => ({ node, conn })))
}

/**
 * One line per connection: client pod → endpoint pod, node → node, and the mechanism. A remote connection
 * is listed by both nodes under one id — the client's half (KERNEL: the interface handed to the pod) and the
 * endpoint's (REMOTE VXLAN: its VNI and the underlay addresses) — and shown once, joined.
 */
export function describeConnections(mesh: Mesh, pods: Pod[]): string[] {
  const live = mesh.nodes.find((n) => n.agent !== undefined)
  const endpoints = live === undefined ? [] : (JSON.parse(nsmctl(live, 'get', 'endpoints', '-o', 'json')) as EndpointJson[])
  const podIn = (path: string | undefined): string | undefined => pods.find((p) => path === `/var/run/netns/${p.netns}`)?.name
  const nodeOf = (ip: string | undefined): string => mesh.nodes.find((n) => n.node.underlay === ip)?.name ?? '?'
  const halves = new Map<string, Array<{ node: MeshNode; conn: ConnJson }>>()
  for (const h of connections(mesh)) halves.set(h.conn.id, [...(halves.get(h.conn.id) ?? []), h])
  return [...halves.values()].map((hs) => {
    const conn = (hs.find((h) => h.conn.mechanism?.type === 'KERNEL') ?? hs[0])?.conn as ConnJson
    const vxlan = hs.find((h) => h.conn.mechanism?.type === 'VXLAN')?.conn.mechanism?.parameters
    const ep = endpoints.find((e) => e.endpoint?.name === conn.networkServiceEndpointName)
    const from = conn.labels?.nodeName ?? '?'
    const to = ep?.extension?.nodeName ?? conn.path?.pathSegments?.at(-1)?.name ?? '?'
    const how =
      vxlan !== undefined
        ? `VXLAN vni ${vxlan.vni ?? '?'} (underlay ${vxlan.src_ip ?? '?'} → ${vxlan.dst_ip ?? '?'}, ${nodeOf(vxlan.src_ip)} → ${nodeOf(vxlan.dst_ip)})`
        : from === to
          ? 'KERNEL veth'
          : `remote, the far half not listed (${to}'s agent down)`
    const state = String(conn.state ?? 'UP')
    const addrs = `${conn.context?.ipContext?.srcIpAddrs?.join(',') ?? '-'} → ${conn.context?.ipContext?.dstIpAddrs?.join(',') ?? '-'}`
    const ends = `${conn.labels?.podName ?? '?'} → ${podIn(ep?.extension?.netnsPath) ?? conn.networkServiceEndpointName ?? '?'}`
    return `${ends.padEnd(30)} ${`${from} → ${to}`.padEnd(8)}  ${how}  ${state}  ${addrs}`
  })
}

// ------------------------------------------------------------------------------------ the demo

const SERVICE = 'secure-intranet-connectivity'
const INTRANET = '10.60.0.1'
/** The standby gateway answers with this IP TTL (the first one with the default, 64): the client's ping tells them apart. */
const STANDBY_TTL = 100
const say = (s = ''): void => void process.stdout.write(`${s}\n`)
const indent = (text: string): string =>
  text
    .trimEnd()
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')

/** Runs the demo on `count` nodes (≥ 3); the exit code. */
export async function runNodesDemo(count: number): Promise<number> {
  if (!Number.isInteger(count) || count < 3 || count > 250) {
    process.stderr.write(`demo: --nodes ${count}: the scenario needs 3 to 250 nodes (client, firewall and vpn-gateway each on its own)\n`)
    return 2
  }
  const t0 = performance.now()
  const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`
  const td = new Teardowns()
  const pids: number[] = []
  let mesh: Mesh | undefined
  let pods: Pod[] = []
  let failed = false
  // Ctrl-C may reach this process twice (the terminal's process group, and a wrapper relaying it): once is enough.
  let stopping = false
  const interrupted = (): void => {
    if (stopping) return
    stopping = true
    process.stderr.write('demo: interrupted, tearing down\n')
    void td.run().finally(() => process.exit(130))
  }
  process.on('SIGINT', interrupted)
  process.on('SIGTERM', interrupted)
  try {
    // Short lifetimes, so a dead node's endpoints and record go within seconds (a real cluster keeps the defaults).
    const config = `endpointPolicy:\n  - services: [${SERVICE}]\n    namespaces: [demo]\n    podSelector: { role: endpoint }\n    routes: [10.60.0.0/16]\n`
    mesh = await startMesh(td, { count, config, agentArgs: ['--node-ttl', '3s', '--endpoint-ttl', '3s'] })
    const m = mesh
    const [n1, n2, n3] = m.nodes as [MeshNode, MeshNode, MeshNode]
    for (const n of m.nodes) if (n.agent !== undefined) pids.push(n.agent.pid)
    say(`${count} nodes: ${m.nodes.map((n) => `${n.name} = netns ${n.node.name}`).join(', ')}, on bridge br0 in ${m.underlay} (run prefix ${RUN_PREFIX})`)
    say(`etcd on ${m.etcd.endpoints.join(',')} (in the underlay namespace only); a throwaway CA and node certificates n1..n${count} (DNS SAN = node name)`)
    say(`one nsm-agent per node: --store etcd, --underlay-address, --listen <underlay>:7443 with mutual TLS`)
    say()
    say(`nsmctl get nodes (on n1):`)
    say(indent(nsmctl(n1, 'get', 'nodes')))
    say(indent(nsmctl(n1, 'apply', '-f', join(ROOT, 'conf/examples/secure-intranet-connectivity.yaml'))))
    await until('the service seen on every node', async () =>
      m.nodes.every((n) => (JSON.parse(nsmctl(n, 'get', 'services', '-o', 'json')) as Array<{ name: string }>).some((s) => s.name === SERVICE)),
    )

    const gateway = { labels: { app: 'vpn-gateway', role: 'endpoint' }, annotations: { 'endpoint.networkservicemesh.io': `${SERVICE}?app=vpn-gateway&cidr=172.16.2.0/24&route=10.60.0.0/16` } }
    pods = [
      makePod(td, { name: 'vpn-gateway', short: 'vpngw', on: n3, ...gateway }),
      makePod(td, {
        name: 'firewall',
        short: 'fw',
        on: n2,
        labels: { app: 'firewall', role: 'endpoint' },
        annotations: { 'endpoint.networkservicemesh.io': `${SERVICE}?app=firewall&cidr=172.16.1.0/24&route=10.60.0.0/16`, 'ns.networkservicemesh.io': `${SERVICE}/nsm0?app=firewall` },
      }),
      makePod(td, { name: 'client', short: 'client', on: n1, labels: { app: 'web' }, annotations: { 'ns.networkservicemesh.io': `${SERVICE}/nsm0` } }),
      makePod(td, { name: 'vpn-gateway-2', short: 'vpngw2', on: n1, ...gateway }),
    ]
    const [gw, fw, client, gw2] = pods as [Pod, Pod, Pod, Pod]
    // CNI DEL of every pod before its namespace goes (teardowns run last-in first-out).
    td.teardown(() => {
      if (!delPods(pods)) failed = true
    })
    sh('ip', ['netns', 'exec', fw.netns, 'nft', '-f', '-'], { input: 'add table inet demo\nadd chain inet demo forwarded { type filter hook forward priority 0; }\nadd rule inet demo forwarded counter\n' })
    sh('ip', ['netns', 'exec', gw2.netns, 'sysctl', '-qw', `net.ipv4.ip_default_ttl=${STANDBY_TTL}`])

    const seenEverywhere = (pod: Pod): Promise<number> =>
      until(`${pod.name}'s endpoint seen from every node`, async () => {
        const lists = await Promise.all(m.nodes.filter((n) => n.agent !== undefined).map((n) => listEndpoints(n)))
        return lists.every((eps) => eps.some((e) => e.extension?.netnsPath === `/var/run/netns/${pod.netns}`))
      })
    // In this order: the firewall can only pick the gateway on n3, and the client the firewall; the second
    // gateway comes last, standing by.
    for (const p of [gw, fw, client, gw2]) {
      cni('ADD', p)
      if (p.annotations['endpoint.networkservicemesh.io'] !== undefined) await seenEverywhere(p)
      if (p.name.startsWith('vpn-gateway')) sh('ip', ['netns', 'exec', p.netns, 'ip', 'addr', 'add', `${INTRANET}/32`, 'dev', 'lo'])
    }
    say()
    say(`pods (CNI ADD through dist/nsm to their node's agent, conflist [loopback, nsm]):`)
    for (const p of pods) say(`  ${p.name.padEnd(14)} on ${p.on.name}  [${p.netns}]  ${p.name.startsWith('vpn') ? `endpoint, intranet ${INTRANET} behind it${p === gw2 ? ` (standby; answers with IP TTL ${STANDBY_TTL})` : ''}` : p === fw ? 'endpoint and client (app=firewall), nftables counter on forwarded traffic' : 'client'}`)
    say()
    say('endpoints (nsmctl get endpoints on n2):')
    say(indent(nsmctl(n2, 'get', 'endpoints')))
    say()
    say('connections (nsmctl get connections -o json on each node, the two halves of each joined by id):')
    for (const line of describeConnections(m, pods)) say(`  ${line}`)
    say()

    const counter = (): number => Number(/packets (\d+)/.exec(sh('ip', ['netns', 'exec', fw.netns, 'nft', 'list', 'chain', 'inet', 'demo', 'forwarded']))?.[1] ?? 'NaN')
    const before = counter()
    const ping = spawnSync('ip', ['netns', 'exec', client.netns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', INTRANET], { encoding: 'utf8' })
    const after = counter()
    say(`client$ ping -c 3 ${INTRANET}`)
    for (const line of ping.stdout.trim().split('\n').filter((l) => /bytes from|packets transmitted/.test(l))) say(`  ${line}`)
    say(`firewall forward counter: ${before} → ${after} packets`)
    if (!/ 3 received/.test(ping.stdout) || !(after >= before + 6)) throw new Error(`the ping did not go through the firewall: ${ping.stdout}${ping.stderr}`)
    say()

    // The heal: a ping every 50 ms from the client, n3's agent SIGKILLed, the first reply from the standby.
    const pinger = startPinger(td, client.netns, INTRANET, 50)
    if (pinger.child.pid !== undefined) pids.push(pinger.child.pid)
    const { replies } = pinger
    await until('the ping running', () => replies.length >= 3, 5000)
    const killedPid = n3.agent?.pid
    const killedAt = Date.now()
    await n3.stop('SIGKILL')
    say(`SIGKILL n3's agent (pid ${killedPid}); the client pings ${INTRANET} every 50 ms`)
    const viaStandby = (r: { ttl: number }): boolean => r.ttl > 64
    await until('a reply through vpn-gateway-2', () => replies.some((r) => r.at >= killedAt && viaStandby(r)), 20_000)
    const first = replies.find((r) => r.at >= killedAt && viaStandby(r)) as { at: number; ttl: number }
    const lastOld = [...replies].reverse().find((r) => !viaStandby(r))
    say(`  healed: first reply through vpn-gateway-2 (ttl=${first.ttl}) ${Math.round(first.at - killedAt)} ms after the kill`)
    say(`  last reply through vpn-gateway on n3: ${lastOld === undefined ? '-' : `${Math.round(lastOld.at - killedAt)} ms after the kill`} (its datapath outlives the agent; the silent gap was ${lastOld === undefined ? '-' : `${Math.max(0, Math.round(first.at - lastOld.at))} ms`})`)
    await pinger.stop()
    say()
    say('connections after the heal:')
    for (const line of describeConnections(m, pods)) say(`  ${line}`)
    const p2 = spawnSync('ip', ['netns', 'exec', client.netns, 'ping', '-c', '2', '-i', '0.2', '-W', '2', INTRANET], { encoding: 'utf8' })
    for (const line of p2.stdout.trim().split('\n').filter((l) => /bytes from|packets transmitted/.test(l))) say(`  client$ ${line}`)
    if (!/ 2 received/.test(p2.stdout)) throw new Error(`no ping after the heal: ${p2.stdout}${p2.stderr}`)

    // n3's agent comes back (as a DaemonSet would restart it) to DEL its pod and reconcile what it left.
    const back = await n3.start()
    pids.push(back.pid)
    // The half it held for the firewall's old connection is an orphan now: the restarted agent removes it.
    const orphans = (): number => (JSON.parse(nsmctl(n3, 'get', 'connections', '-o', 'json')) as unknown[]).length + (JSON.parse(sh('ip', ['-n', gw.netns, '-j', 'link'])) as Array<{ ifname: string }>).filter((l) => l.ifname !== 'lo').length
    const orphanMs = await until("n3's orphan half removed", () => orphans() === 0, 15_000)
    say(`n3's agent restarted (pid ${back.pid}): the orphan half in vpn-gateway removed ${Math.round(orphanMs)} ms after it was ready`)
  } catch (err) {
    failed = true
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`)
    if (mesh !== undefined && !stopping) saveLogs(mesh)
  } finally {
    failed = (await tearDown(td, mesh, pods, pids)) || failed
    process.off('SIGINT', interrupted)
    process.off('SIGTERM', interrupted)
    say(`${failed ? 'demo FAILED' : 'demo OK'} in ${elapsed()}`)
  }
  return failed ? 1 : 0
}

/** On failure: the agents' and etcd's logs into a directory that outlives the run (named on stderr). */
function saveLogs(mesh: Mesh): void {
  const out = join(tmpdir(), `nsm-demo-nodes-logs-${RUN}`)
  mkdirSync(out, { recursive: true })
  for (const n of mesh.nodes) {
    const a = n.agent
    if (a !== undefined) writeFileSync(join(out, `${n.name}.log`), `${a.logs.map((l) => JSON.stringify(l)).join('\n')}\n${a.stderr()}`)
  }
  writeFileSync(join(out, 'etcd.log'), mesh.etcd.log())
  process.stderr.write(`logs kept in ${out}\n`)
}

/** CNI DEL, then what each node still holds, then agents, etcd and namespaces; true when something was left. */
async function tearDown(td: Teardowns, mesh: Mesh | undefined, pods: Pod[], pids: number[]): Promise<boolean> {
  let left = false
  // What names this run's processes: the agents' dirs, etcd's data dir (and the run prefix, in `ip netns exec`).
  const marks = mesh === undefined ? [] : [...mesh.nodes.map((n) => n.node.dir), mesh.etcd.dataDir]
  if (mesh?.etcd.pid !== undefined) pids.push(mesh.etcd.pid)
  if (mesh !== undefined) {
    if (!delPods(pods)) left = true
    const podNetns = pods.map((p) => ({ netns: p.netns }))
    pods.length = 0 // DEL done: the teardown's own DEL has nothing left to do
    const conns = (() => {
      try {
        return connections(mesh).length
      } catch {
        return NaN
      }
    })()
    const links = [...podNetns, ...mesh.nodes.map((n) => ({ netns: n.node.name }))].flatMap(({ netns }) =>
      existsSync(`/var/run/netns/${netns}`) ? (JSON.parse(sh('ip', ['-n', netns, '-j', 'link'])) as Array<{ ifname: string }>).filter((l) => !['lo', 'ul0'].includes(l.ifname)).map((l) => `${netns}/${l.ifname}`) : [],
    )
    say()
    say(`after CNI DEL: ${conns} connections listed by the agents, ${links.length} links left in the nodes${links.length > 0 ? ` (${links.join(', ')})` : ''}`)
    if (conns !== 0 || links.length > 0) left = true
  }
  await td.run()
  for (const e of td.errors) process.stderr.write(`teardown: ${e}\n`)
  const namespaces = sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(RUN_PREFIX))
  const alive = pids.filter((pid) => existsSync(`/proc/${pid}`))
  const strays = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((d) => {
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8')
        return cmd.includes(RUN_PREFIX) || marks.some((m) => cmd.includes(m))
      } catch {
        return false
      }
    })
  say(`torn down: ${namespaces.length} namespaces with prefix ${RUN_PREFIX} left, ${alive.length + strays.length} processes left`)
  return left || namespaces.length > 0 || alive.length > 0 || strays.length > 0 || td.errors.length > 0
}
