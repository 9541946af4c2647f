// The VXLAN mechanism (agent/mechanisms/vxlan/) against a real kernel, on a two-node test bed
// (test/lib/nodes.ts): each node is a netns on a bridge underlay, each pod an ordinary test netns.
//
// Netns handling: both halves are built in this process. Each node gets its own mechanism instance over
// its own NetlinkSessions, given the node's netns path as its node netns (`nodeNetns`): the VXLAN device is
// created there (its UDP socket stays there: the underlay) and moved into the pod. That is exactly what
// an agent running inside the node netns does with `nodeNetns` unset, without a process per node.
//
// Covers: traffic across (IPv4 and IPv6 addresses, over an IPv4 and an IPv6 underlay), the MTU lowered by
// the overhead, CHECK clean and broken (route, down, gone, foreign, settings), close, rollback at every
// build step and on conflicts, foreign links never deleted, the orphan sweep (node netns and pods),
// 32 concurrent halves with VNIs from the allocator, the request parameters, the record, and the bed's
// agent-in-a-node helper.
import t from 'tap'
import { readlinkSync, statSync } from 'node:fs'
import { LinkReaper, NetlinkSessions } from '../../pkg/netlink/index'
import { NetnsPolicy } from '../../pkg/netns-policy'
import { AgentError } from '../../agent/errors'
import { decodeDatapathRecord, sameDatapath } from '../../agent/mechanisms/record'
import type { DatapathRecord, Mechanism } from '../../agent/mechanisms/types'
import { linkTag } from '../../agent/mechanisms/kernel/names'
import {
  completeVxlanParameters,
  parseVxlanParameters,
  VniInUseError,
  vxlanMechanism,
  vxlanMtu,
  vxlanRequestedMechanism,
  type BuildStep,
  type VxlanRecord,
} from '../../agent/mechanisms/vxlan/index'
import type { Connection } from '../../proto/gen/networkservice/connection'
import { ip, linkAddresses, linkNames, makeNetns, showLink, type TestNetns } from '../lib/netns'
import { execInNode, makeNodes, runInNode, startAgentInNode, type TestBed, type TestNode } from '../lib/nodes'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const ALLOW = ['/var/run/netns/*']

interface Side {
  node: TestNode
  mechanism: Mechanism
  sessions: NetlinkSessions
}

interface Bed {
  bed: TestBed
  a: Side
  b: Side
}

function side(t: Teardown, node: TestNode, extra: { afterStep?: (s: BuildStep) => void | Promise<void>; reaper?: boolean } = {}): Side {
  const sessions = new NetlinkSessions(new NetnsPolicy(ALLOW))
  t.teardown(() => sessions.closeAll())
  const { reaper, ...rest } = extra
  const mechanism = vxlanMechanism({ sessions, nodeNetns: node.path, underlay: [node.underlay, node.underlay6], ...rest, ...(reaper === true ? { reaper: new LinkReaper(sessions) } : {}) })
  return { node, mechanism, sessions }
}

function twoNodes(t: Teardown): Bed {
  const bed = makeNodes(t, 2)
  const [na, nb] = bed.nodes as [TestNode, TestNode]
  return { bed, a: side(t, na), b: side(t, nb) }
}

/** The addresses of pair `n` (172.16.n.0/31-ish host addresses, fd00:n::/127-ish), as the IPAM element makes them. */
function ipContext(n: number): DatapathRecord['ipContext'] {
  return {
    src: [`172.16.${n}.1/32`, `fd00:${n.toString(16)}::1/128`],
    dst: [`172.16.${n}.0/32`, `fd00:${n.toString(16)}::/128`],
    srcRoutes: [
      { prefix: `172.16.${n}.0/32`, nextHop: '' },
      { prefix: `fd00:${n.toString(16)}::/128`, nextHop: '' },
    ],
    dstRoutes: [
      { prefix: `172.16.${n}.1/32`, nextHop: '' },
      { prefix: `fd00:${n.toString(16)}::1/128`, nextHop: '' },
    ],
  }
}

function connection(id: string, params: { srcIp: string; dstIp: string; vni: number; name: string }, mtu = 0): Connection {
  return {
    id,
    networkService: 'svc',
    mechanism: vxlanRequestedMechanism(params),
    context: mtu === 0 ? undefined : { ipContext: undefined, dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: mtu },
    labels: {},
    path: undefined,
    networkServiceEndpointName: 'fw-1',
    payload: 'IP',
    state: 0,
  }
}

interface Pair {
  id: string
  /** The pair's addresses are 172.16.<n>.0/1 and fd00:<n hex>::/::1. */
  n: number
  client: DatapathRecord
  endpoint: DatapathRecord
  clientPod: TestNetns
  endpointPod: TestNetns
}

interface PairOptions {
  id?: string
  n?: number
  vni?: number
  ifname?: string
  v6underlay?: boolean
  mtu?: number
  clientPod?: TestNetns
  endpointPod?: TestNetns
}

let pairs = 0
/** The two records of one remote connection, planned by each node's mechanism (nothing built yet). */
function pair(t: Teardown, f: Bed, o: PairOptions = {}): Pair {
  pairs += 1
  const id = o.id ?? `vx-${pairs}`
  const n = o.n ?? pairs
  const clientPod = o.clientPod ?? makeNetns(t, 'c')
  const endpointPod = o.endpointPod ?? makeNetns(t, 'e')
  const ifname = o.ifname ?? 'nsm0'
  const [srcIp, dstIp] = o.v6underlay === true ? [f.a.node.underlay6, f.b.node.underlay6] : [f.a.node.underlay, f.b.node.underlay]
  const c = connection(id, { srcIp, dstIp, vni: o.vni ?? 1000 + n, name: ifname }, o.mtu ?? 0)
  const base = {
    version: 2 as const,
    connectionId: id,
    service: 'svc',
    endpointName: 'fw-1',
    clientIfname: ifname,
    mtu: o.mtu ?? 1500,
    ipContext: ipContext(n),
    p2p: { connectionId: id, clientId: clientPod.path, endpointId: endpointPod.path, pairs: [] },
    clientLabels: {},
  }
  const client: DatapathRecord = {
    ...base,
    clientNetns: clientPod.path,
    mechanism: f.a.mechanism.plan({ connection: c, client: { netns: clientPod.path, ifname }, endpoint: { name: 'fw-1', netns: '', local: false } }),
  }
  const endpoint: DatapathRecord = {
    ...base,
    clientNetns: '',
    mechanism: f.b.mechanism.plan({ connection: c, client: { netns: '', ifname }, endpoint: { name: 'fw-1', netns: endpointPod.path, local: true } }),
  }
  return { id, n, client, endpoint, clientPod, endpointPod }
}

async function build(f: Bed, p: Pair): Promise<void> {
  await f.a.mechanism.build(p.client)
  await f.b.mechanism.build(p.endpoint)
}

const vx = (rec: DatapathRecord): VxlanRecord => {
  if (rec.mechanism.type !== 'VXLAN') throw new Error('not a VXLAN record')
  return rec.mechanism
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

t.test('request parameters: NSM keys built and parsed, each bad one named', async (t) => {
  const m = vxlanRequestedMechanism({ srcIp: '10.1.0.1', dstIp: '10.1.0.2', vni: 4242, name: 'nsm0' })
  t.same(m, { cls: 'REMOTE', type: 'VXLAN', parameters: { src_ip: '10.1.0.1', dst_ip: '10.1.0.2', vni: '4242', name: 'nsm0' } })
  t.same(completeVxlanParameters(m.parameters, 'mp[0]'), { name: 'nsm0', srcIp: '10.1.0.1', dstIp: '10.1.0.2', vni: 4242 })
  t.same(parseVxlanParameters({ name: 'nsm0', src_ip: 'FD00::0001' }, 'mp[0]'), { name: 'nsm0', srcIp: 'fd00::1' }, 'partial (the client proposes), canonical addresses')
  const bad: Array<[Record<string, string>, string, RegExp]> = [
    [{ ...m.parameters, src_ip: '10.1.0' }, 'mp[0].parameters.src_ip', /is not an IP address/],
    [{ ...m.parameters, dst_ip: 'fd00::2' }, 'mp[0].parameters.dst_ip', /both ends of a VXLAN tunnel use one family/],
    [{ ...m.parameters, dst_ip: '239.1.1.1' }, 'mp[0].parameters.dst_ip', /not a unicast address/],
    [{ ...m.parameters, src_ip: '0.0.0.0' }, 'mp[0].parameters.src_ip', /not a unicast address/],
    [{ ...m.parameters, vni: '0' }, 'mp[0].parameters.vni', /out of the VNI range 1\.\.16777215/],
    [{ ...m.parameters, vni: '16777216' }, 'mp[0].parameters.vni', /out of the VNI range/],
    [{ ...m.parameters, vni: '-1' }, 'mp[0].parameters.vni', /is not a VNI/],
    [{ ...m.parameters, vni: '0x10' }, 'mp[0].parameters.vni', /is not a VNI/],
    [{ ...m.parameters, name: 'a-name-far-too-long' }, 'mp[0].parameters.name', /longer than 15 bytes/],
  ]
  for (const [params, field, message] of bad) {
    t.throws(() => completeVxlanParameters(params, 'mp[0]'), { name: 'AgentError', code: 'INVALID_ARGUMENT', field, message }, field)
  }
  t.throws(() => completeVxlanParameters({ name: 'nsm0', src_ip: '10.1.0.1' }, 'mp[0]'), { field: 'mp[0].parameters.dst_ip', message: /is required/ })
  t.equal(vxlanMtu(1500, 4), 1450)
  t.equal(vxlanMtu(1500, 6), 1430)
  t.throws(() => vxlanMtu(100, 4), AgentError)
})

t.test('plan and parseRequest: the half from the negotiated mechanism; a foreign local address refused', async (t) => {
  const f = twoNodes(t)
  const c = connection('p1', { srcIp: f.a.node.underlay, dstIp: f.b.node.underlay, vni: 9, name: 'nsm0' })
  t.throws(() => f.b.mechanism.plan({ connection: c, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { code: 'INVALID_ARGUMENT', field: 'connection.mechanism.parameters.src_ip', message: /is not this node's underlay address/ })
  t.throws(() => f.a.mechanism.plan({ connection: { ...c, mechanism: undefined }, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { code: 'INVALID_ARGUMENT' })
  t.same(f.b.mechanism.parseRequest(c.mechanism as NonNullable<Connection['mechanism']>, 'mechanism_preferences[0]'), { netns: '', ifname: 'nsm0' })
  t.throws(() => f.b.mechanism.parseRequest({ cls: 'REMOTE', type: 'VXLAN', parameters: { name: 'nsm0' } }, 'mechanism_preferences[0]'), { field: 'mechanism_preferences[0].parameters.src_ip', message: /is required/ })
  const upper = vxlanMechanism({ sessions: f.a.sessions, underlay: [f.a.node.underlay6.toUpperCase()] })
  const c6 = connection('p2', { srcIp: f.a.node.underlay6, dstIp: f.b.node.underlay6, vni: 9, name: 'nsm0' })
  t.match(upper.plan({ connection: c6, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { local: f.a.node.underlay6, mtu: 1430 }, 'underlay addresses compared in canonical form')
})

t.test('record: a VXLAN part round-trips through the journal form; a malformed one is refused; KERNEL as before', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f, { id: 'rec-1' })
  const back = decodeDatapathRecord(JSON.parse(JSON.stringify(p.client)))
  t.same(back, p.client)
  t.ok(back !== undefined && sameDatapath(back, p.client))
  t.notOk(sameDatapath(p.client, { ...p.client, mechanism: { ...vx(p.client), vni: vx(p.client).vni + 1 } }), 'another VNI is another datapath')
  for (const bad of [{ vni: 0 }, { vni: 1 << 24 }, { side: 'middle' }, { local: 'x' }, { netns: '' }, { mtu: '1450' }]) {
    t.equal(decodeDatapathRecord({ ...p.client, mechanism: { ...vx(p.client), ...bad } }), undefined, JSON.stringify(bad))
  }
  const kernel = { ...p.client, mechanism: { type: 'KERNEL', endpointNetns: '/var/run/netns/fw', endpointIfname: 'nsm-0123456789' } }
  t.equal(decodeDatapathRecord(kernel), kernel, 'a KERNEL record is read as is')
})

t.test('test bed: the underlay connects the nodes; an agent and other processes started in a node run in its netns', async (t) => {
  const bed = makeNodes(t, 2)
  const node = bed.nodes[1] as TestNode
  t.match(execInNode(node, 'ip', ['-br', 'addr', 'show', 'ul0']), node.underlay)
  t.match(execInNode(bed.nodes[0] as TestNode, 'ping', ['-c', '1', '-W', '5', node.underlay]), / 0% packet loss/, 'the underlay connects the nodes')
  t.match(execInNode(bed.nodes[0] as TestNode, 'ping', ['-c', '1', '-W', '5', node.underlay6]), / 0% packet loss/)
  const inode = `net:[${statSync(node.path).ino}]`
  const agent = await startAgentInNode(t, node, { args: ['--node-name', 'node-2'] })
  t.equal(readlinkSync(`/proc/${agent.pid}/ns/net`), inode)
  await agent.stop()
  // A long-running process: it says where it runs, then waits (killed at teardown).
  const child = runInNode(t, node, 'sh', ['-c', 'readlink /proc/self/ns/net; exec sleep 600'])
  const first = await new Promise<string>((res) => {
    let out = ''
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) res(out.trim())
    })
  })
  t.equal(first, inode)
})
