// The VXLAN mechanism (agent/mechanisms/vxlan/) against a real kernel: both halves of remote connections
// built on a two-node test bed (test/lib/vxlan-bed.ts, over test/lib/nodes.ts), each node's mechanism in
// this process with the node's netns as its node netns.
//
// Covers: traffic across (IPv4 and IPv6 addresses, over an IPv4 and an IPv6 underlay), the MTU lowered by
// the overhead, CHECK clean and broken (route, down, gone, foreign, settings), close, rollback at every
// build step and on conflicts, foreign links never deleted, the orphan sweep (node netns and pods), and
// 32 halves built concurrently, one VNI each. The request parameters, plan, parseRequest and the record:
// vxlan-mechanism-request.test.ts; the test bed itself: testbed-nodes.test.ts.
import t from 'tap'
import { linkTag } from '../../agent/mechanisms/kernel/names'
import { VniInUseError, vxlanRequestedMechanism } from '../../agent/mechanisms/vxlan/index'
import { ip, linkAddresses, linkNames, makeNetns, showLink, type TestNetns } from '../lib/netns'
import { execInNode, makeNodes, type TestNode } from '../lib/nodes'
import { pair, side, twoNodes, vx, type Bed, type Pair } from '../lib/vxlan-bed'

async function build(f: Bed, p: Pair): Promise<void> {
  await f.a.mechanism.build(p.client)
  await f.b.mechanism.build(p.endpoint)
}

const ping = (from: TestNetns, to: string): string => execInNode(from, 'ping', ['-c', '1', '-W', '5', to])

/** Links of a namespace other than lo (and the node's underlay port). */
const extraLinks = (ns: TestNetns): string[] => linkNames(ns.name).filter((n) => n !== 'lo' && n !== 'ul0')

const codes = (problems: Array<{ code: string }>): string[] => problems.map((p) => p.code)

t.test('two halves carry IPv4 and IPv6 across the nodes; MTU = pod MTU - 50; CHECK is clean', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f)
  await build(f, p)
  t.match(ping(p.clientPod, `172.16.${p.n}.0`), / 0% packet loss/, 'IPv4 through the tunnel')
  t.match(ping(p.clientPod, `fd00:${p.n.toString(16)}::`), / 0% packet loss/, 'IPv6 through the tunnel')
  t.match(ping(p.endpointPod, `172.16.${p.n}.1`), / 0% packet loss/, 'and back')

  const client = showLink(p.clientPod.name, 'nsm0')
  t.equal(client.mtu, 1450, 'MTU lowered by the IPv4 VXLAN overhead')
  t.equal(client.linkinfo?.info_kind, 'vxlan')
  t.match(client.linkinfo?.info_data, { id: vx(p.client).vni, local: f.a.node.underlay, remote: f.b.node.underlay, port: 4789, learning: false })
  t.same(linkAddresses(p.clientPod.name, 'nsm0').filter((a) => !a.startsWith('fe80:')).sort(), [`172.16.${p.n}.1/32`, `fd00:${p.n.toString(16)}::1/128`])
  const epIf = vx(p.endpoint).ifname
  t.match(epIf, /^nsm-[0-9a-f]{10}$/, 'the endpoint side is named like the KERNEL one')
  t.match(showLink(p.endpointPod.name, epIf).linkinfo?.info_data, { id: vx(p.client).vni, local: f.b.node.underlay, remote: f.a.node.underlay })
  t.match(ip(p.clientPod.name, 'link', 'show', 'nsm0'), new RegExp(`alias ${linkTag(p.id)}`), 'tagged')
  t.same(extraLinks(f.a.node), [], 'nothing stays in the node netns')
  t.same(extraLinks(f.b.node), [])

  t.same(await f.a.mechanism.check(p.client), [])
  t.same(await f.b.mechanism.check(p.endpoint), [])
  t.same(await f.a.mechanism.reconcile(p.client), { state: 'intact' })
  t.same(f.a.mechanism.namespaces(p.client), [p.clientPod.path])
  t.equal(f.a.mechanism.context(p.client, undefined).MTU, 1450)
  t.same(f.a.mechanism.connectionMechanism(p.client), { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm0', inodeURL: `file://${p.clientPod.path}` } }, 'the client half answers its client with KERNEL')
  t.same(f.b.mechanism.connectionMechanism(p.endpoint), vxlanRequestedMechanism({ srcIp: f.a.node.underlay, dstIp: f.b.node.underlay, vni: vx(p.client).vni, name: 'nsm0' }), 'the endpoint half answers with the negotiated VXLAN')
})

t.test('over an IPv6 underlay: MTU = pod MTU - 70, traffic across', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f, { v6underlay: true, mtu: 9000 })
  t.equal(vx(p.client).mtu, 8930)
  await build(f, p)
  t.equal(showLink(p.clientPod.name, 'nsm0').mtu, 8930)
  t.match(showLink(p.clientPod.name, 'nsm0').linkinfo?.info_data, { local6: f.a.node.underlay6, remote6: f.b.node.underlay6 })
  // The underlay's MTU is 1500: large pings would not fit, ordinary ones do.
  t.match(ping(p.clientPod, `172.16.${p.n}.0`), / 0% packet loss/)
  t.match(ping(p.clientPod, `fd00:${p.n.toString(16)}::`), / 0% packet loss/)
  t.same(await f.a.mechanism.check(p.client), [])
})

t.test('CHECK finds what broke, with the KERNEL codes', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f)
  await build(f, p)
  const epIf = vx(p.endpoint).ifname

  ip(p.endpointPod.name, 'route', 'del', `172.16.${p.n}.1/32`, 'dev', epIf)
  t.same(codes(await f.b.mechanism.check(p.endpoint)), ['route-missing'], 'a route deleted')
  t.same(await f.a.mechanism.check(p.client), [], 'the other half is intact')
  t.match((await f.b.mechanism.reconcile(p.endpoint)), { state: 'broken', problems: [{ code: 'route-missing' }] })

  ip(p.clientPod.name, 'link', 'set', 'nsm0', 'down')
  const down = await f.a.mechanism.check(p.client)
  t.ok(codes(down).includes('link-down'), JSON.stringify(down))
  t.match(down.find((x) => x.code === 'link-down')?.message, new RegExp(`^client interface nsm0 in ${p.clientPod.path} is down$`))

  ip(p.clientPod.name, 'link', 'set', 'nsm0', 'mtu', '1400')
  t.ok((await f.a.mechanism.check(p.client)).some((x) => x.code === 'link-mismatch' && /MTU 1400, not 1450/.test(x.message)), 'MTU changed')

  ip(p.clientPod.name, 'link', 'del', 'nsm0')
  t.same(await f.a.mechanism.check(p.client), [{ code: 'link-missing', message: `client interface nsm0 in ${p.clientPod.path} is missing`, connectionId: p.id }], 'the link gone')

  ip(p.clientPod.name, 'link', 'add', 'nsm0', 'type', 'bridge')
  t.same(codes(await f.a.mechanism.check(p.client)), ['link-foreign'], 'a link of the name without the tag')
  ip(p.clientPod.name, 'link', 'set', 'nsm0', 'alias', linkTag(p.id))
  t.ok((await f.a.mechanism.check(p.client)).some((x) => x.code === 'link-mismatch' && /is a bridge, not the connection's VXLAN device/.test(x.message)), 'tagged, but not a VXLAN device')
  ip(p.clientPod.name, 'link', 'del', 'nsm0')
  // A VXLAN device of the name and tag with other settings.
  ip(f.a.node.name, 'link', 'add', 'tmpvx', 'type', 'vxlan', 'id', '77', 'local', f.a.node.underlay, 'remote', '10.0.0.9', 'dstport', '4789')
  ip(f.a.node.name, 'link', 'set', 'tmpvx', 'alias', linkTag(p.id), 'netns', p.clientPod.name, 'name', 'nsm0', 'mtu', '1450')
  const settings = (await f.a.mechanism.check(p.client)).filter((x) => x.code === 'link-mismatch').map((x) => x.message)
  t.match(settings, [/has vni 77, not \d+$/, /has remote 10\.0\.0\.9, not /], 'VNI and remote as recorded')

  t.match(await f.b.mechanism.check({ ...p.endpoint, mechanism: { ...vx(p.endpoint), netns: '/var/run/netns/tgone' } }), [{ code: 'netns-missing' }])
})

t.test('close removes both halves (directly, and through the batching reaper), leaves nothing, and is idempotent; a client pod gone is client-gone', async (t) => {
  const f = twoNodes(t)
  f.b = side(t, f.b.node, { reaper: true })
  const p = pair(t, f)
  const q = pair(t, f, { endpointPod: p.endpointPod })
  await build(f, p)
  await build(f, q)
  await Promise.all([f.a.mechanism.close(p.client), f.a.mechanism.close(q.client), f.b.mechanism.close(p.endpoint), f.b.mechanism.close(q.endpoint)])
  for (const ns of [p.clientPod, q.clientPod, p.endpointPod, f.a.node, f.b.node]) t.same(extraLinks(ns), [], `nothing left in ${ns.name}`)
  await f.a.mechanism.close(p.client)
  await f.b.mechanism.close(p.endpoint)
  await f.b.mechanism.remove(p.endpoint)
  t.same(await f.a.mechanism.reconcile({ ...p.client, mechanism: { ...vx(p.client), netns: '/var/run/netns/tgone' } }), { state: 'client-gone' })
})

t.test('a failure at any build step rolls back: nothing left in the pod or the node netns', async (t) => {
  for (const step of ['created', 'moved', 'configured'] as const) {
    await t.test(step, async (t) => {
      const bed = makeNodes(t, 2)
      const [na, nb] = bed.nodes as [TestNode, TestNode]
      const f: Bed = {
        bed,
        a: side(t, na, {
          afterStep: (s) => {
            if (s === step) throw new Error(`injected after ${s}`)
          },
        }),
        b: side(t, nb),
      }
      const p = pair(t, f)
      await t.rejects(f.a.mechanism.build(p.client), { message: `injected after ${step}` })
      t.same(extraLinks(p.clientPod), [], 'pod')
      t.same(extraLinks(na), [], 'node netns')
      // The VNI is free again: the same half builds now.
      await side(t, na).mechanism.build(p.client)
      t.same(extraLinks(p.clientPod), ['nsm0'])
    })
  }
})

t.test('conflicts: a route in use, a VNI in use, a foreign link of the name; each rolls back, nothing foreign is touched', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f)
  ip(p.clientPod.name, 'route', 'add', `172.16.${p.n}.0/32`, 'dev', 'lo') // a leftover's route to the endpoint
  await t.rejects(f.a.mechanism.build(p.client), { name: 'AgentError', code: 'ADDRESS_UNAVAILABLE', message: /client side/ })
  t.same(extraLinks(p.clientPod), [])
  t.same(extraLinks(f.a.node), [])

  const q = pair(t, f)
  await f.a.mechanism.build(q.client)
  const r = pair(t, f, { vni: vx(q.client).vni })
  const err = await f.a.mechanism.build(r.client).catch((e: unknown) => e)
  t.ok(err instanceof VniInUseError && err.code === 'ALREADY_EXISTS' && err.vni === vx(q.client).vni, `the kernel refuses a second device with the VNI: ${String(err)}`)
  t.same(extraLinks(r.clientPod), [])
  t.same(extraLinks(f.a.node), [])
  t.same(await f.a.mechanism.check(q.client), [], 'the holder of the VNI is untouched')

  const s = pair(t, f)
  ip(s.clientPod.name, 'link', 'add', 'nsm0', 'type', 'bridge')
  await t.rejects(f.a.mechanism.build(s.client), { code: 'ALREADY_EXISTS', message: `interface nsm0 already exists in ${s.clientPod.path}` })
  t.same(extraLinks(s.clientPod), ['nsm0'], 'only the foreign link')
  t.equal(showLink(s.clientPod.name, 'nsm0').linkinfo?.info_kind, 'bridge')
  t.same(extraLinks(f.a.node), [])
  await f.a.mechanism.close(s.client)
  await f.a.mechanism.remove(s.client)
  t.equal(showLink(s.clientPod.name, 'nsm0').linkinfo?.info_kind, 'bridge', 'close and remove leave the foreign link alone')
  t.same(codes(await f.a.mechanism.check(s.client)), ['link-foreign'])

  await t.rejects(f.a.mechanism.build({ ...q.client, connectionId: 'other', mechanism: { ...vx(q.client), netns: '/var/run/netns/tgone', vni: 5 } }), { code: 'BAD_NETNS' })
  t.same(extraLinks(f.a.node), [], 'a gone pod netns fails before anything is made')
})

t.test('orphan sweep: tagged leftovers in the node netns (temporary name) and in a pod go; live and untagged ones stay', async (t) => {
  const f = twoNodes(t)
  const A = f.a.node
  const live = pair(t, f)
  await f.a.mechanism.build(live.client)
  const pod = makeNetns(t, 'o')
  const vxlan = (name: string, id: number, alias?: string): void => {
    ip(A.name, 'link', 'add', name, 'type', 'vxlan', 'id', String(id), 'local', A.underlay, 'remote', f.b.node.underlay, 'dstport', '4789')
    if (alias !== undefined) ip(A.name, 'link', 'set', name, 'alias', alias)
  }
  vxlan('nsv.0123456789', 501, linkTag('crashed-1')) // a build interrupted before the move
  vxlan('nsv.aaaaaaaaaa', 502, linkTag('crashed-2')) // ... and one after it
  ip(A.name, 'link', 'set', 'nsv.aaaaaaaaaa', 'netns', pod.name)
  vxlan('flannel.1', 503) // someone else's, untagged
  ip(pod.name, 'link', 'add', 'eth9', 'type', 'bridge')
  ip(pod.name, 'link', 'set', 'eth9', 'alias', linkTag('crashed-3')) // tagged but not VXLAN: the KERNEL sweep's business

  const swept = await f.a.mechanism.sweep({ namespaces: [pod.path, live.clientPod.path], live: () => new Set([live.id]) })
  t.same(swept.map((s) => [s.netns, s.ifname, s.tag]).sort(), [
    [A.path, 'nsv.0123456789', linkTag('crashed-1')],
    [pod.path, 'nsv.aaaaaaaaaa', linkTag('crashed-2')],
  ])
  t.same(extraLinks(A), ['flannel.1'], 'the untagged VXLAN device stays')
  t.same(extraLinks(pod), ['eth9'])
  t.same(await f.a.mechanism.check(live.client), [], 'the live half stays')
  t.same(await f.a.mechanism.sweep({ namespaces: [pod.path, '/var/run/netns/tgone'], live: () => new Set([live.id]) }), [], 'nothing more; a gone netns is skipped')
})

t.test('32 halves built concurrently, one VNI each: every pair carries traffic', async (t) => {
  // (The VNIs a cluster hands out come from agent/store/vni-claims.ts: test/unit/vni-claims.test.ts.)
  const f = twoNodes(t)
  const clientPod = makeNetns(t, 'c')
  const endpointPod = makeNetns(t, 'e')
  const ids = Array.from({ length: 32 }, (_, i) => `many-${i}`)
  const taken = ids.map((_, i) => 100 + i)
  const ps = ids.map((id, i) => pair(t, f, { id, n: 100 + i, vni: taken[i] as number, ifname: `nsm${i}`, clientPod, endpointPod }))
  await Promise.all(ps.map((p) => build(f, p)))
  const onLinks = linkNames(clientPod.name).filter((n) => n.startsWith('nsm')).map((n) => showLink(clientPod.name, n).linkinfo?.info_data?.id)
  t.equal(new Set(onLinks).size, 32, 'the kernel holds 32 devices with 32 VNIs')
  for (const [i, p] of ps.entries()) {
    if (i % 8 === 0) t.match(ping(clientPod, `172.16.${100 + i}.0`), / 0% packet loss/, `pair ${i}`)
  }
  const checks = await Promise.all(ps.map((p) => f.a.mechanism.check(p.client)))
  t.same(checks.flat(), [], 'every client half intact')
  await Promise.all(ps.map(async (p) => {
    await f.a.mechanism.close(p.client)
    await f.b.mechanism.close(p.endpoint)
  }))
  for (const ns of [clientPod, endpointPod, f.a.node, f.b.node]) t.same(extraLinks(ns), [], `nothing left in ${ns.name}`)
})
