// Issue 12 items 2 and 3: a remote cross-connect between two nodes (test/lib/mesh-bed.ts: node
// namespaces on a bridge, a real etcd, real agents with mutual TLS). The client on n1 asks for a service
// whose only endpoint is on n2: n1's agent forwards the Request to n2's, the two build a VXLAN pair, and
// traffic flows between the pods; Close on n1 removes both halves.
import t from 'tap'
import { makeNetns, linkNames, RUN, sh } from '../lib/netns'
import { makeMeshBed, registerEndpointOn, registerService, requestOn, closeOn, seenEverywhere } from '../lib/mesh-bed'

t.setTimeout(120_000)

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
})
