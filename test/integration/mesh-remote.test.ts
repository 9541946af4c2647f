// Issue 12 items 2 and 3: a remote cross-connect between two nodes (test/lib/mesh-bed.ts: node
// namespaces on a bridge, a real etcd, real agents with mutual TLS). The client on n1 asks for a service
// whose only endpoint is on n2: n1's agent forwards the Request to n2's, the two build a VXLAN pair, and
// traffic flows between the pods; Close on n1 removes both halves.
import t from 'tap'
import { makeNetns, linkNames, RUN, sh } from '../lib/netns'
import { makeMeshBed, registerEndpointOn, registerService, requestOn, closeOn, seenEverywhere } from '../lib/mesh-bed'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { PEER_AUTH_HEADER, PEER_NODE_HEADER } from '../../agent/peer/identity'
import { vxlanRequestedMechanism } from '../../agent/mechanisms/vxlan/params'
import { kernelRequest, SEED, seedServices, serviceMessage } from '../lib/mesh'

t.setTimeout(180_000)

t.test('a client on n1 reaches an endpoint on n2 over VXLAN', async (t) => {
  const mesh = await makeMeshBed(t, 2)
  const [n1, n2] = mesh.nodes
  if (n1 === undefined || n2 === undefined) throw new Error('two nodes')
  const svc = `remote-${RUN}`
  await registerService(n1, svc)
  const ep = makeNetns(t, 'ep')
  await registerEndpointOn(n2, { name: `ep-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: ['172.31.7.0/24'] })
  t.ok(await seenEverywhere(mesh, [`ep-${RUN}`]), 'the endpoint is seen on both nodes')
  const client = makeNetns(t, 'cl')
  const conn = await requestOn(n1, `c1-${RUN}`, client.path, 'nsm0', svc)
  t.equal(conn.mechanism?.type, 'KERNEL', 'the client is answered with its KERNEL interface')
  const src = conn.context?.ipContext?.srcIpAddrs[0] ?? ''
  const dst = conn.context?.ipContext?.dstIpAddrs[0] ?? ''
  t.match(src, /^172\.31\.7\./)
  t.ok(linkNames(client.name).includes('nsm0'), 'client interface')
  t.ok(linkNames(ep.name).some((l) => l.startsWith('nsm')), 'endpoint interface on n2')
  const out = sh('ip', ['netns', 'exec', client.name, 'ping', '-c', '2', '-W', '2', dst.replace(/\/.*/, '')])
  t.match(out, / 0% packet loss/, 'ping across nodes')
  t.match(sh('ip', ['netns', 'exec', client.name, 'ip', '-d', 'link', 'show', 'nsm0']), /vxlan id \d+/, 'a VXLAN device')
  await closeOn(n1, conn)
  t.notOk(linkNames(client.name).includes('nsm0'), 'client half gone')
  t.notOk(linkNames(ep.name).some((l) => l.startsWith('nsm')), 'endpoint half gone')

  // A local caller on n2's socket posing as peer n1 (its own peer headers) asking for an endpoint half: refused.
  const forged = { ...kernelRequest(`forged-${RUN}`, client.path, 'nsm0', {}, svc), mechanismPreferences: [vxlanRequestedMechanism({ srcIp: n1.underlay, dstIp: n2.underlay, vni: 4242, name: 'nsm0' })] }
  const err = await n2.agent.client
    .unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, forged, { metadata: { [PEER_NODE_HEADER]: 'n1', [PEER_AUTH_HEADER]: 'mtls' } })
    .catch((e: unknown) => e as Error)
  t.match(String((err as Error).message), /REMOTE VXLAN mechanism is requested by peer agents/, 'peer headers from the unix socket are dropped')
  t.notOk(linkNames(ep.name).some((l) => l.startsWith('nsm')), 'nothing built')

  // Only a KERNEL interface has a VXLAN half: a memif (or a VF) toward another node's endpoint is refused, naming it.
  const plain = kernelRequest(`memif-${RUN}`, client.path, 'nsm0', {}, svc)
  const memif = { ...plain, mechanismPreferences: plain.mechanismPreferences.map((m) => ({ ...m, type: 'MEMIF' })) }
  const refused = await n1.agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, memif).catch((e: unknown) => e as Error)
  t.match(String((refused as Error).message), new RegExp(`a MEMIF connection reaches endpoints on this node only; endpoint ep-${RUN} is on node n2`), 'MEMIF toward another node is refused')
  t.notOk(linkNames(ep.name).some((l) => l.startsWith('nsm')), 'nothing built for it')
})

t.test('32 concurrent remote Requests: distinct VNIs, every one carries traffic', async (t) => {
  const mesh = await makeMeshBed(t, 3)
  const [n1, n2, n3] = mesh.nodes
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes')
  const svc = `vni-${RUN}`
  await registerService(n1, svc)
  const ep = makeNetns(t, 'ep')
  await registerEndpointOn(n2, { name: `v-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: ['172.31.8.0/24'] })
  t.ok(await seenEverywhere(mesh, [`v-${RUN}`]))
  const c1 = makeNetns(t, 'ca')
  const c3 = makeNetns(t, 'cb')
  // 16 from n1 and 16 from n3 at once, all toward n2: every VNI must be free on n2 and on its client's node.
  const conns = await Promise.all(
    Array.from({ length: 32 }, (_, i) => (i % 2 === 0 ? requestOn(n1, `v${i}-${RUN}`, c1.path, `nsm${i}`, svc) : requestOn(n3, `v${i}-${RUN}`, c3.path, `nsm${i}`, svc))),
  )
  t.equal(conns.length, 32)
  const vniOf = (ns: string, ifname: string): number => Number(/vxlan id (\d+)/.exec(sh('ip', ['-n', ns, '-d', 'link', 'show', ifname]))?.[1] ?? -1)
  const vnis = conns.map((c, i) => vniOf(i % 2 === 0 ? c1.name : c3.name, `nsm${i}`))
  t.equal(new Set(vnis).size, 32, `32 distinct VNIs (${vnis.slice(0, 6).join(', ')}, ...)`)
  t.notOk(vnis.includes(-1))
  t.equal(linkNames(ep.name).filter((l) => l.startsWith('nsm')).length, 32, '32 halves in the endpoint')
  let ok = 0
  for (const [i, c] of conns.entries()) {
    const dst = (c.context?.ipContext?.dstIpAddrs[0] ?? '').replace(/\/.*/, '')
    const out = sh('ip', ['netns', 'exec', i % 2 === 0 ? c1.name : c3.name, 'ping', '-c', '1', '-W', '2', '-I', `nsm${i}`, dst])
    if (/ 0% packet loss/.test(out)) ok++
  }
  t.equal(ok, 32, 'every cross-connect carries a ping')
  t.equal(new Set(conns.map((c) => c.context?.ipContext?.srcIpAddrs[0])).size, 32, 'distinct client addresses')
  await Promise.all(conns.map((c, i) => closeOn(i % 2 === 0 ? n1 : n3, c)))
  t.equal(linkNames(ep.name).filter((l) => l.startsWith('nsm')).length, 0, 'every half closed')
})

t.test("the seed's chain across three nodes: client on n1 → firewall on n2 → vpn-gateway on n3", async (t) => {
  const mesh = await makeMeshBed(t, 3)
  const [n1, n2, n3] = mesh.nodes
  if (n1 === undefined || n2 === undefined || n3 === undefined) throw new Error('three nodes')
  for (const s of seedServices()) await n1.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
  const gw = makeNetns(t, 'gw')
  const fw = makeNetns(t, 'fw')
  const client = makeNetns(t, 'cl')
  sh('ip', ['-n', gw.name, 'addr', 'add', '10.60.0.1/32', 'dev', 'lo'])
  await registerEndpointOn(n3, { name: `gw-${RUN}`, netns: gw.path, labels: { app: 'vpn-gateway' }, pools: ['172.16.20.0/24'], routes: ['10.60.0.0/16'] })
  await registerEndpointOn(n2, { name: `fw-${RUN}`, netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.10.0/24'], routes: ['10.60.0.0/16'] })
  t.ok(await seenEverywhere(mesh, [`gw-${RUN}`, `fw-${RUN}`]))
  // The firewall's own connection to the gateway (from n2), then the client's to the firewall (from n1).
  const up = await requestOn(n2, `fw-up-${RUN}`, fw.path, 'nsm-up', SEED, { app: 'firewall' })
  t.equal(up.networkServiceEndpointName, `gw-${RUN}`)
  const conn = await requestOn(n1, `cl-${RUN}`, client.path, 'nsm0', SEED, { app: 'client' })
  t.equal(conn.networkServiceEndpointName, `fw-${RUN}`)
  t.ok(conn.context?.ipContext?.srcRoutes.some((r) => r.prefix === '10.60.0.0/16'), 'the client routes the intranet through the firewall')
  const out = sh('ip', ['netns', 'exec', client.name, 'ping', '-c', '2', '-W', '2', '10.60.0.1'])
  t.match(out, / 0% packet loss/, 'client → firewall (n2) → vpn-gateway (n3): the intranet answers')
  t.match(sh('ip', ['-n', gw.name, 'route']), /172\.16\.10\.0\/24 via/, "the gateway routes the firewall's pool back through it (sent by n2)")
  await closeOn(n1, conn)
  await closeOn(n2, up)
})
