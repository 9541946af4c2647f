// Issue 12 items 2-4: remote cross-connects through agent deaths (test/lib/mesh-bed.ts: node namespaces on a
// bridge, a real etcd, real agents with mutual TLS).
// - The endpoint node's agent SIGKILLed: the client's agent sees its monitor stream break and heals the
//   connection to a standby endpoint (on another node, or its own), same interface name, traffic flowing;
//   the killed agent, restarted, asks the client's node and removes the half it no longer has.
// - The client node's agent SIGKILLed: restarted, it keeps its connection (traffic never stops); killed
//   for good with its pod gone, the endpoint's half expires when no longer refreshed (--token-lifetime).
import t from 'tap'
import { makeNetns, linkNames, RUN, sh, type TestNetns } from '../lib/netns'
import { until } from '../lib/cluster'
import { connectionsOn, makeMeshBed, registerEndpointOn, registerService, requestOn, seenEverywhere } from '../lib/mesh-bed'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { State } from '../../proto/gen/networkservice/connection'
import { join, resolve } from 'node:path'
import { execInNode } from '../lib/nodes'

const ROOT = resolve(import.meta.dirname, '../..')

t.setTimeout(180_000)

const pings = (client: TestNetns, dst: string): boolean => {
  try {
    return / 0% packet loss/.test(sh('ip', ['netns', 'exec', client.name, 'ping', '-c', '1', '-W', '1', dst]))
  } catch {
    return false
  }
}
const nsmLinks = (ns: TestNetns): string[] => linkNames(ns.name).filter((l) => l.startsWith('nsm'))
const ifindex = (ns: TestNetns, ifname: string): number => (JSON.parse(sh('ip', ['-n', ns.name, '-j', 'link', 'show', ifname])) as Array<{ ifindex: number }>)[0]?.ifindex ?? -1
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test("the endpoint's agent killed: healed to a standby on another node, then to one on the client's node", async (t) => {
  const mesh = await makeMeshBed(t, 3, { args: ['--token-lifetime', '6s'] })
  const [n1, n2, n3] = mesh.nodes
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes')
  const svc = `heal-${RUN}`
  await registerService(n1, svc)
  const epA = makeNetns(t, 'epa')
  const epB = makeNetns(t, 'epb')
  const epC = makeNetns(t, 'epc')
  // One pool, three endpoints: the client keeps its addresses wherever it heals to (claims keep them unique).
  const pool = '172.31.9.0/24'
  await registerEndpointOn(n2, { name: `a-${RUN}`, netns: epA.path, service: svc, labels: {}, pools: [pool] })
  t.ok(await seenEverywhere(mesh, [`a-${RUN}`]))
  const client = makeNetns(t, 'cl')
  const conn = await requestOn(n1, `h1-${RUN}`, client.path, 'nsm0', svc)
  t.equal(conn.networkServiceEndpointName, `a-${RUN}`)
  let dst = (conn.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
  t.ok(pings(client, dst), 'traffic to the endpoint on n2')
  // The store's claims, read inside n1 (where etcd is reachable): its VNI claimed on n1 and on n2.
  const vniClaimsOf = (id: string): Array<{ node?: string }> => {
    const prefix = n1.args[n1.args.indexOf('--etcd-prefix') + 1] ?? ''
    const out = execInNode(n1, process.execPath, [join(ROOT, 'dist/nsmctl'), 'store', 'export', '--store', 'etcd', '--etcd-endpoints', mesh.etcd.endpoints.join(','), '--etcd-prefix', prefix])
    return Object.values((JSON.parse(out) as { claims: Record<string, { connectionId?: string; vni?: number; node?: string }> }).claims).filter((c) => c.connectionId === id && c.vni !== undefined)
  }
  t.same(vniClaimsOf(`h1-${RUN}`).map((c) => c.node).sort(), ['n1', 'n2'], 'one VNI claimed on both nodes')
  await registerEndpointOn(n3, { name: `b-${RUN}`, netns: epB.path, service: svc, labels: {}, pools: [pool] })
  t.ok(await seenEverywhere(mesh, [`b-${RUN}`]))
  await sleep(1200) // n1 monitors n2 (its watch starts within a tick)

  const killedAt = Date.now()
  await n2.agent.stop('SIGKILL')
  const healed = await until(async () => {
    const c = (await connectionsOn(n1)).find((x) => x.id === `h1-${RUN}`)
    // The pair may be new (n2's claims on the old one stay until its node record expires).
    dst = (c?.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
    return c?.networkServiceEndpointName === `b-${RUN}` && c.state === State.UP && pings(client, dst)
  }, 10_000)
  t.not(healed, -1, `healed to b on n3 (${Date.now() - killedAt} ms after the kill)`)
  t.same(nsmLinks(client), ['nsm0'], 'the client keeps its interface name')
  const pathOf = async (): Promise<string[]> => ((await connectionsOn(n1)).find((x) => x.id === `h1-${RUN}`)?.path?.pathSegments ?? []).map((s) => s.name)
  t.same(await pathOf(), ['n1', 'n3'], 'the path: n1, then n3 (n2 is not kept)')
  t.ok(nsmLinks(epB).length === 1, 'the half on n3 exists')
  t.ok(nsmLinks(epA).length === 1, "the old half on n2 is still there while n2's agent is down")

  // n2's agent back: it asks n1 and removes the half n1 no longer has.
  await mesh.restart(n2)
  t.not(await until(async () => nsmLinks(epA).length === 0, 10_000), -1, 'the restarted agent removed its orphan half')

  // A standby on the client's own node: n3 killed, healed to a local veth.
  await registerEndpointOn(n1, { name: `c-${RUN}`, netns: epC.path, service: svc, labels: {}, pools: [pool] })
  t.ok(await seenEverywhere(mesh, [`c-${RUN}`]))
  await n2.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: `a-${RUN}` })
  await sleep(300)
  await n3.agent.stop('SIGKILL')
  t.not(
    await until(async () => {
      const c = (await connectionsOn(n1)).find((x) => x.id === `h1-${RUN}`)
      dst = (c?.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
      return c?.networkServiceEndpointName === `c-${RUN}` && nsmLinks(epC).length === 1 && pings(client, dst)
    }, 10_000),
    -1,
    'healed to c on n1 (a veth)',
  )
  t.match(sh('ip', ['netns', 'exec', client.name, 'ip', '-d', 'link', 'show', 'nsm0']), /veth/, 'the client interface is a veth now')
  t.same(await pathOf(), ['n1'], 'the path is this node alone again (it never grows on a heal)')
  t.same(vniClaimsOf(`h1-${RUN}`), [], 'its VNI claims were released when it moved to a local endpoint')
})

t.test("the client's agent killed: restarted it keeps the connection; gone for good, the far half expires", async (t) => {
  const mesh = await makeMeshBed(t, 2, { args: ['--token-lifetime', '3s'] })
  const [n1, n2] = mesh.nodes
  if (n1 === undefined || n2 === undefined) throw new Error('two nodes')
  const svc = `keep-${RUN}`
  await registerService(n1, svc)
  const ep = makeNetns(t, 'ep')
  await registerEndpointOn(n2, { name: `k-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: ['172.31.10.0/24'] })
  t.ok(await seenEverywhere(mesh, [`k-${RUN}`]))
  const client = makeNetns(t, 'cl')
  const conn = await requestOn(n1, `k1-${RUN}`, client.path, 'nsm0', svc)
  const dst = (conn.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
  t.ok(pings(client, dst))
  const before = ifindex(client, 'nsm0')
  await n1.agent.stop('SIGKILL')
  t.ok(pings(client, dst), "traffic flows with the client's agent dead")
  await mesh.restart(n1)
  await sleep(4000) // longer than the token lifetime: the restarted agent refreshes the far half
  t.ok(pings(client, dst), 'still flowing after a token lifetime with the restarted agent')
  t.equal(ifindex(client, 'nsm0'), before, 'refreshes rebuilt nothing (same interface)')
  t.equal(nsmLinks(ep).length, 1, 'the far half was kept (refreshed)')

  await n1.agent.stop('SIGKILL')
  const gone = await until(async () => nsmLinks(ep).length === 0, 10_000)
  t.not(gone, -1, `the far half expired once no longer refreshed (${gone} ms)`)
})

t.test("the endpoint node's lease expires (its agent frozen): healed away; thawed, its stale half expires", async (t) => {
  const mesh = await makeMeshBed(t, 3, { args: ['--node-ttl', '2s', '--token-lifetime', '4s'] })
  const [n1, n2, n3] = mesh.nodes
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes')
  const svc = `lease-${RUN}`
  await registerService(n1, svc)
  const epA = makeNetns(t, 'epa')
  const epB = makeNetns(t, 'epb')
  await registerEndpointOn(n2, { name: `la-${RUN}`, netns: epA.path, service: svc, labels: {}, pools: ['172.31.12.0/24'] })
  t.ok(await seenEverywhere(mesh, [`la-${RUN}`]))
  const client = makeNetns(t, 'cl')
  const conn = await requestOn(n1, `l1-${RUN}`, client.path, 'nsm0', svc)
  t.equal(conn.networkServiceEndpointName, `la-${RUN}`)
  await registerEndpointOn(n3, { name: `lb-${RUN}`, netns: epB.path, service: svc, labels: {}, pools: ['172.31.13.0/24'] })
  t.ok(await seenEverywhere(mesh, [`lb-${RUN}`]))
  // Frozen, n2's agent keeps its TCP connections open (no stream breaks): only its lease can tell.
  const frozenAt = Date.now()
  process.kill(n2.agent.pid, 'SIGSTOP')
  t.teardown(() => {
    try {
      process.kill(n2.agent.pid, 'SIGCONT')
    } catch {
      // gone already
    }
  })
  let dst = ''
  const healed = await until(async () => {
    const c = (await connectionsOn(n1)).find((x) => x.id === `l1-${RUN}`)
    dst = (c?.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
    return c?.networkServiceEndpointName === `lb-${RUN}` && c.state === State.UP && pings(client, dst)
  }, 15_000)
  t.not(healed, -1, `healed to n3 once n2's record expired (${Date.now() - frozenAt} ms after the freeze, node ttl 2 s)`)
  process.kill(n2.agent.pid, 'SIGCONT')
  t.not(await until(async () => nsmLinks(epA).length === 0, 15_000), -1, "thawed, n2 closes the half nobody refreshes (or n1's close reaches it)")
  t.equal(nsmLinks(epB).length, 1)
})
