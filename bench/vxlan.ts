// The VXLAN mechanism (issue 12): iperf3 through a remote cross-connect — a client pod on node 1 and an
// endpoint pod on node 2, each holding its half built by agent/mechanisms/vxlan (the devices' sockets in
// the node netns) — next to raw VXLAN between the same two node namespaces (one `ip link add ... type
// vxlan` per node, addressed in the node netns itself), alternated, same MTU (1450), same underlay. Also
// the in-process build and close time of one half. Nodes are the test bed of test/lib/nodes.ts; all
// traffic stays inside namespaces made here, and everything is removed at the end, also on failure.
// Run: npx tsx bench/vxlan.ts (root). BENCH_VXLAN_RUNS (default 5) × BENCH_VXLAN_SECONDS (default 3) per
// path; BENCH_N (default 100) builds for the latency rows.
import { NetlinkSessions } from '../pkg/netlink'
import { NetnsPolicy } from '../pkg/netns-policy'
import type { DatapathRecord } from '../agent/mechanisms/types'
import { vxlanMechanism, vxlanRequestedMechanism } from '../agent/mechanisms/vxlan/index'
import type { Connection } from '../proto/gen/networkservice/connection'
import { execInNode, makeNodes, type TestNode } from '../test/lib/nodes'
import { makeNetns } from '../test/lib/netns'
import { machine, median, ms, stats, writeSection } from './lib/report'
import { iperf, rawVxlan } from './lib/traffic'

const RUNS = Number(process.env.BENCH_VXLAN_RUNS ?? 5)
const SECONDS = Number(process.env.BENCH_VXLAN_SECONDS ?? 3)
const N = Number(process.env.BENCH_N ?? 100)
const cleanups: Array<() => void | Promise<void>> = []
const td = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }

function connection(id: string, a: TestNode, b: TestNode, vni: number): Connection {
  return {
    id,
    networkService: 'bench',
    mechanism: vxlanRequestedMechanism({ srcIp: a.underlay, dstIp: b.underlay, vni, name: 'nsm0' }),
    context: undefined,
    labels: {},
    path: undefined,
    networkServiceEndpointName: 'ep',
    payload: 'IP',
    state: 0,
  }
}

async function main(): Promise<void> {
  const bed = makeNodes(td, 2)
  const [a, b] = bed.nodes as [TestNode, TestNode]
  const clientPod = makeNetns(td, 'bc')
  const endpointPod = makeNetns(td, 'be')
  const policy = new NetnsPolicy(['/var/run/netns/*'])
  const sessions = { a: new NetlinkSessions(policy), b: new NetlinkSessions(policy) }
  td.teardown(() => {
    sessions.a.closeAll()
    sessions.b.closeAll()
  })
  // The time of each build step (the mechanism's test seam marks the end of each).
  const steps: Record<'created' | 'moved' | 'configured', number[]> = { created: [], moved: [], configured: [] }
  let mark = 0
  const afterStep = (step: keyof typeof steps): void => {
    const now = performance.now()
    steps[step].push(now - mark)
    mark = now
  }
  const mech = {
    a: vxlanMechanism({ sessions: sessions.a, nodeNetns: a.path, underlay: [a.underlay], afterStep }),
    b: vxlanMechanism({ sessions: sessions.b, nodeNetns: b.path, underlay: [b.underlay] }),
  }
  const records = (id: string, vni: number): { client: DatapathRecord; endpoint: DatapathRecord } => {
    const c = connection(id, a, b, vni)
    const base = {
      version: 2 as const,
      connectionId: id,
      service: 'bench',
      endpointName: 'ep',
      clientIfname: 'nsm0',
      mtu: 1500,
      ipContext: {
        src: ['172.16.77.1/32'],
        dst: ['172.16.77.0/32'],
        srcRoutes: [{ prefix: '172.16.77.0/32', nextHop: '' }],
        dstRoutes: [{ prefix: '172.16.77.1/32', nextHop: '' }],
      },
      p2p: { connectionId: id, clientId: clientPod.path, endpointId: endpointPod.path, pairs: [] },
      clientLabels: {},
    }
    return {
      client: { ...base, clientNetns: clientPod.path, mechanism: mech.a.plan({ connection: c, client: { netns: clientPod.path, ifname: 'nsm0' }, endpoint: { name: 'ep', netns: '', local: false } }) },
      endpoint: { ...base, clientNetns: '', mechanism: mech.b.plan({ connection: c, client: { netns: '', ifname: 'nsm0' }, endpoint: { name: 'ep', netns: endpointPod.path, local: true } }) },
    }
  }

  // Build and close of one half (the client's), in-process through pkg/netlink.
  const build: number[] = []
  const close: number[] = []
  for (let i = 0; i < N + 10; i++) {
    const { client } = records(`lat-${i}`, 100 + i)
    const t0 = performance.now()
    mark = t0
    await mech.a.build(client)
    const t1 = performance.now()
    await mech.a.close(client)
    const t2 = performance.now()
    if (i >= 10) {
      build.push(t1 - t0)
      close.push(t2 - t1)
    } else {
      for (const list of Object.values(steps)) list.pop() // warm-up
    }
  }
  const step = (name: keyof typeof steps): string => ms(stats(steps[name]).p50)

  // The cross-connect, and raw VXLAN between the node namespaces (another VNI, same MTU and underlay).
  const xc = records('xc', 4243)
  await mech.a.build(xc.client)
  await mech.b.build(xc.endpoint)
  const rawAddr = rawVxlan(td, a, b, { vni: 4242, mtu: 1450, subnet: '192.168.251' })
  execInNode(clientPod, 'ping', ['-c', '1', '-W', '5', '172.16.77.0'])
  execInNode(a, 'ping', ['-c', '1', '-W', '5', rawAddr])
  const mesh: number[] = []
  const raw: number[] = []
  for (let i = 0; i < RUNS; i++) {
    mesh.push(await iperf(endpointPod, clientPod, '172.16.77.0', SECONDS))
    raw.push(await iperf(b, a, rawAddr, SECONDS))
  }
  await mech.a.close(xc.client)
  await mech.b.close(xc.endpoint)

  const viaMesh = median(mesh)
  const viaRaw = median(raw)
  const b0 = stats(build)
  const c0 = stats(close)
  const md = `## VXLAN mechanism: a remote cross-connect's half (\`bench/vxlan.ts\`)

Two test-bed nodes (network namespaces on a bridge underlay, test/lib/nodes.ts). The cross-connect: a client
pod on node 1 and an endpoint pod on node 2, each half built by \`agent/mechanisms/vxlan\` (created in the node
netns, moved into the pod: the UDP socket stays on the underlay), pod MTU 1500 → interface MTU 1450. Raw
VXLAN: one device per node netns, addressed there, same UDP port, MTU and underlay. iperf3 runs alternate.
${machine()}.

| what | value | target |
|---|---|---|
| iperf3 through the cross-connect (median of ${RUNS} × ${SECONDS} s: ${mesh.map((x) => x.toFixed(1)).join(', ')}) | ${viaMesh.toFixed(2)} Gbit/s | ≥ 90 % of raw VXLAN |
| iperf3 over raw VXLAN between the node namespaces (alternated: ${raw.map((x) => x.toFixed(1)).join(', ')}) | ${viaRaw.toFixed(2)} Gbit/s | |
| ratio | ${((viaMesh / viaRaw) * 100).toFixed(0)} % | |
| build one half in-process (create, tag, move, address, route, up; n=${b0.n}) p50 / p99 | ${ms(b0.p50)} / ${ms(b0.p99)} ms | |
| of which p50: create and tag in the node netns / move into the pod / rename, address, up, route | ${step('created')} / ${step('moved')} / ${step('configured')} ms | |
| close one half (n=${c0.n}) p50 / p99 | ${ms(c0.p50)} / ${ms(c0.p99)} ms | |

Most of a build is the move into the pod, and most of a close the deletion: the kernel waits for an RCU grace
period in each (dev_change_net_namespace, unregister_netdevice), as it does for a veth's deletion.`
  writeSection('vxlan', md)
  process.stdout.write(`${md}\n`)
}

async function cleanup(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn()
    } catch (err) {
      process.stderr.write(`cleanup: ${String(err)}\n`)
    }
  }
}
// Interrupted (Ctrl-C, a timeout): the namespaces go too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cleanup().finally(() => process.exit(130))
  })
}

try {
  await main()
} finally {
  await cleanup()
}
