// test/lib/stub-nse.ts, the stub NSM endpoint, on its own: run as a script inside a test netns (`ip netns
// exec`), called over its unix socket with the agent's gRPC client. Its IPAM (a /32 pair per connection
// from its pool, routes as NSM's point-to-point IPAM gives them, the pair kept on a re-Request, freed on
// Close), the KERNEL mechanism it answers with (inodeURL naming the netns it runs in), its path segment,
// refusals, and a clean exit on SIGTERM. The importable form (startStubNse) for pool exhaustion.
import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { AgentClient, GrpcCallError } from '../../agent/client/client'
import { NetworkServiceDefinition, type NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import { State, type Connection, type PathSegment } from '../../proto/gen/networkservice/connection'
import { GrpcStatus } from '../../pkg/codes'
import { tempDir } from '../lib/agent'
import { makeNetns } from '../lib/netns'
import { runStubNse, startStubNse } from '../lib/stub-nse'

function kernelRequest(id: string, path?: Connection['path']): NetworkServiceRequest {
  return {
    connection: { id, networkService: 'svc', mechanism: undefined, context: undefined, labels: {}, path, networkServiceEndpointName: '', payload: 'IP', state: State.UP },
    mechanismPreferences: [
      { cls: 'LOCAL', type: 'MEMIF', parameters: {} },
      { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-ep0', inodeURL: 'file:///var/run/netns/client' } },
      { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'second' } },
    ],
  }
}

const callerSegment: PathSegment = { name: 'node-1', id: 'agent-conn-1', token: 't', expires: undefined, metrics: {} }

t.test('the stub as a script in a netns: IPAM, mechanism, path, re-Request, Close, SIGTERM', async (t) => {
  const ns = makeNetns(t, 'se')
  const dir = tempDir(t, 'nsm-stub-nse-')
  const socket = join(dir, 'nse.sock')
  const stub = await runStubNse(t, ns.name, ['--socket', socket, '--name', 'nse-1', '--pool', '10.70.0.0/24', '--route', '10.71.0.0/16', '--route', '10.72.0.0/16'])
  t.same(stub.ready, { ready: true, socket, pid: stub.pid }, 'the ready line')
  const client = new AgentClient(socket)
  t.teardown(() => client.close())
  const call = (r: NetworkServiceRequest) => client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, r)

  const c1 = await call(kernelRequest('conn-1', { index: 0, pathSegments: [callerSegment] }))
  t.equal(c1.id, 'conn-1')
  t.equal(c1.state, State.UP)
  t.equal(c1.networkServiceEndpointName, 'nse-1')
  t.same(c1.mechanism, { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-ep0', inodeURL: `file:///proc/${stub.pid}/ns/net` } }, 'the first KERNEL offer, inodeURL its own netns')
  const inode = statSync(`/proc/${stub.pid}/ns/net`)
  const nsFile = statSync(ns.path)
  t.ok(inode.dev === nsFile.dev && inode.ino === nsFile.ino, 'inodeURL names the netns it runs in')
  const ip = c1.context?.ipContext
  t.same(ip?.dstIpAddrs, ['10.70.0.0/32'], 'dst: its own address')
  t.same(ip?.srcIpAddrs, ['10.70.0.1/32'], "src: the client's")
  t.same(ip?.srcRoutes, [
    { prefix: '10.70.0.0/32', nextHop: '' },
    { prefix: '10.71.0.0/16', nextHop: '10.70.0.0' },
    { prefix: '10.72.0.0/16', nextHop: '10.70.0.0' },
  ])
  t.same(ip?.dstRoutes, [{ prefix: '10.70.0.1/32', nextHop: '' }])
  t.equal(c1.path?.index, 1, 'index at its own segment')
  t.same(c1.path?.pathSegments[0], callerSegment, "the caller's segment kept")
  const own = c1.path?.pathSegments[1]
  t.equal(own?.name, 'nse-1')
  t.match(own?.id, /^[0-9a-f-]{36}$/)
  t.match(own?.token, /^[0-9a-f]{32}$/)
  t.ok((own?.expires?.seconds ?? 0) * 1000 > Date.now() + 5 * 60_000, 'expires in the future')

  // A re-Request of the same id (the answer sent back, as a refresh): the same pair, the same segment id.
  const again = await call({ connection: c1, mechanismPreferences: kernelRequest('conn-1').mechanismPreferences })
  t.same(again.context?.ipContext?.srcIpAddrs, ['10.70.0.1/32'])
  t.same(again.context?.ipContext?.dstIpAddrs, ['10.70.0.0/32'])
  t.equal(again.path?.pathSegments.length, 2, 'no second segment of its own')
  t.equal(again.path?.pathSegments[1]?.id, own?.id)
  t.not(again.path?.pathSegments[1]?.token, own?.token, 'a fresh token')

  const c2 = await call(kernelRequest('conn-2'))
  t.same([c2.context?.ipContext?.dstIpAddrs, c2.context?.ipContext?.srcIpAddrs], [['10.70.0.2/32'], ['10.70.0.3/32']], 'the next pair')
  t.equal(c2.path?.index, 0, 'no caller path: its segment alone')

  // The request's excluded_prefixes are honoured.
  const excl = kernelRequest('conn-x')
  const withExcl: NetworkServiceRequest = { ...excl, connection: { ...(excl.connection as Connection), context: { ipContext: { srcIpAddrs: [], dstIpAddrs: [], srcIpRequired: false, dstIpRequired: false, srcRoutes: [], dstRoutes: [], excludedPrefixes: ['10.70.0.4/31', 'fd00::/64'], ipNeighbors: [], extraPrefixRequest: [], extraPrefixes: [], policies: [] }, dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: 1400 } } }
  const cx = await call(withExcl)
  t.same([cx.context?.ipContext?.dstIpAddrs, cx.context?.ipContext?.srcIpAddrs], [['10.70.0.6/32'], ['10.70.0.7/32']], 'excluded addresses skipped')
  t.equal(cx.context?.MTU, 1400, 'the rest of the context kept')

  // Close frees the pair; the next connection gets it.
  await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c1)
  await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c1)
  const c3 = await call(kernelRequest('conn-3'))
  t.same([c3.context?.ipContext?.dstIpAddrs, c3.context?.ipContext?.srcIpAddrs], [['10.70.0.0/32'], ['10.70.0.1/32']], "conn-1's pair again")

  // No KERNEL offered: refused, naming the field.
  const memifOnly = kernelRequest('conn-m')
  await t.rejects(call({ ...memifOnly, mechanismPreferences: [{ cls: 'LOCAL', type: 'MEMIF', parameters: {} }] }), { code: GrpcStatus.INVALID_ARGUMENT, message: /mechanism_preferences: endpoint nse-1 serves KERNEL only; offered MEMIF/ })
  await t.rejects(call({ connection: undefined, mechanismPreferences: [] }), { code: GrpcStatus.INVALID_ARGUMENT, message: /connection: is required/ })

  t.same(await stub.kill('SIGTERM'), { code: 0, signal: null }, 'exits 0 on SIGTERM')
  t.notOk(existsSync(socket), 'its socket removed')
})

t.test('startStubNse in-process: requests and closes recorded, pool exhaustion, bad options', async (t) => {
  const dir = tempDir(t, 'nsm-stub-nse-')
  const nse = await startStubNse({ socket: join(dir, 'nse.sock'), name: 'nse-2', pool: '10.80.0.0/31', netnsPath: '/var/run/netns/somewhere' })
  t.teardown(() => nse.close())
  const client = new AgentClient(nse.socket)
  t.teardown(() => client.close())
  const c = await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest('only'))
  t.equal(c.mechanism?.parameters.inodeURL, 'file:///var/run/netns/somewhere')
  t.same([...nse.allocations()], [['only', { src: '10.80.0.1', dst: '10.80.0.0' }]])
  const err = await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest('second')).catch((e: unknown) => e)
  t.type(err, GrpcCallError)
  t.match(err, { code: GrpcStatus.RESOURCE_EXHAUSTED, message: /pool 10\.80\.0\.0\/31 of endpoint nse-2 has no free pair/ })
  await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)
  t.same(nse.requests.map((r) => r.connection?.id), ['only', 'second'])
  t.same(nse.closes.map((x) => x.id), ['only'])
  t.equal(nse.allocations().size, 0, 'freed')

  await t.rejects(startStubNse({ socket: join(dir, 'x.sock'), name: 'n', pool: '10.0.0.1/24' }), /--pool: "10\.0\.0\.1\/24" has host bits set/)
  await t.rejects(startStubNse({ socket: join(dir, 'x.sock'), name: 'n', pool: 'fd00::/64' }), /--pool: "fd00::\/64" is not an IPv4 CIDR/)
  await t.rejects(startStubNse({ socket: join(dir, 'x.sock'), name: 'n', pool: '10.0.0.0/24', routes: ['10.1.0.0/33'] }), /--route\[0\]/)
  await t.rejects(startStubNse({ socket: join(dir, 'x.sock'), name: 'Bad Name', pool: '10.0.0.0/24' }), /--name/)
})
