// Done-when of issue 4: a Request encoded from NSM's own protos (not ours) is accepted by the agent and
// answered with a Connection those protos decode.
//
// "NSM's own protos" here: protobufjs types built from proto/testdata/nsm-v1-upstream.json, a field-by-
// field transcription of networkservicemesh/api that shares nothing with our .proto files or ts-proto's
// generated code; and the gRPC framing is done by hand over node:http2 below, not by agent/client or
// grpc-js. (Go's NSM client is not installable here, and CI cannot fetch upstream's .proto text.) The
// request carries fields our agent does not interpret (path segments with tokens and expiry, excluded
// prefixes, extra context) to show they do not break decoding. The datapath behind it is the real one.
import t from 'tap'
import { connect, type ClientHttp2Session } from 'node:http2'
import { connect as netConnect } from 'node:net'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import protobuf from 'protobufjs'
import { NetworkService } from '../../proto/gen/registry/registry.js'
import { NetworkServiceRegistryDefinition as NS_REG } from '../../proto/gen/registry/registry.js'
import { AgentDefinition, EndpointExtension } from '../../proto/gen/nsmcni/nsmcni.js'
import { NetworkServiceEndpoint as OurNse } from '../../proto/gen/registry/registry.js'
import { makeNetns, linkNames } from '../lib/netns.js'
import { startAgent } from '../lib/agent.js'

const ROOT = resolve(import.meta.dirname, '../..')
const nsm = protobuf.Root.fromJSON(JSON.parse(readFileSync(resolve(ROOT, 'proto/testdata/nsm-v1-upstream.json'), 'utf8')) as protobuf.INamespace)
nsm.resolveAll()
const type = (name: string): protobuf.Type => nsm.lookupType(name)
const plain = (ty: protobuf.Type, bytes: Uint8Array): Record<string, unknown> => ty.toObject(ty.decode(bytes), { longs: Number, enums: String, defaults: true }) as Record<string, unknown>

/** Hand-framed gRPC over http2: sends one message, collects response messages until `stopAfter`. */
function call(session: ClientHttp2Session, path: string, body: Uint8Array, stopAfter = Infinity): Promise<{ status: string; message: string; messages: Uint8Array[] }> {
  return new Promise((res, rej) => {
    const s = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' })
    const messages: Uint8Array[] = []
    let buf = Buffer.alloc(0)
    let headers: Record<string, unknown> = {}
    s.on('response', (h) => (headers = h))
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      while (buf.length >= 5 && buf.length >= 5 + buf.readUInt32BE(1)) {
        const len = buf.readUInt32BE(1)
        messages.push(buf.subarray(5, 5 + len))
        buf = buf.subarray(5 + len)
      }
      if (messages.length >= stopAfter) {
        s.close()
        res({ status: 'stopped', message: '', messages })
      }
    })
    s.on('trailers', (tr) => res({ status: String(tr['grpc-status']), message: decodeURIComponent(String(tr['grpc-message'] ?? '')), messages }))
    s.on('end', () => res({ status: String(headers['grpc-status'] ?? 'none'), message: decodeURIComponent(String(headers['grpc-message'] ?? '')), messages }))
    s.on('error', rej)
    const frame = Buffer.alloc(5 + body.length)
    frame.writeUInt32BE(body.length, 1)
    frame.set(body, 5)
    s.end(frame)
  })
}

t.test('an NSM-encoded Request gets an NSM-decodable Connection', async (t) => {
  const agent = await startAgent(t)
  const client = makeNetns(t, 'wc')
  const endpoint = makeNetns(t, 'we')
  // Setup through our API: the endpoint's address pool is nsm-cni's extension, which NSM has no field for.
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: 'wire-svc', payload: 'IP' }))
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
    endpoint: OurNse.fromPartial({ name: 'wire-nse', networkServiceNames: ['wire-svc'], networkServiceLabels: { 'wire-svc': { labels: { app: 'gw' } } }, url: `file://${endpoint.path}` }),
    extension: EndpointExtension.fromPartial({ cidrPools: ['172.29.0.0/24'], routes: [{ prefix: '10.99.0.0/16', nextHop: '' }] }),
  })

  const session = connect('http://localhost', { createConnection: () => netConnect(agent.socket) })
  t.teardown(() => session.close())

  // Find through NSM's registry types.
  const Query = type('registry.NetworkServiceEndpointQuery')
  const Resp = type('registry.NetworkServiceEndpointResponse')
  const found = await call(session, '/registry.NetworkServiceEndpointRegistry/Find', Query.encode(Query.fromObject({ network_service_endpoint: { network_service_names: ['wire-svc'] }, watch: false })).finish())
  t.equal(found.status, '0', found.message)
  const nse = plain(Resp, found.messages[0] ?? new Uint8Array()).network_service_endpoint as Record<string, unknown>
  t.equal(nse.name, 'wire-nse')
  t.same(nse.network_service_labels, { 'wire-svc': { labels: { app: 'gw' } } })
  t.ok((nse.expiration_time as { seconds: number }).seconds > Date.now() / 1000, 'expiration_time set')

  const Request = type('networkservice.NetworkServiceRequest')
  const Connection = type('connection.Connection')
  const req = Request.fromObject({
    connection: {
      id: 'nsm-wire-1',
      network_service: 'wire-svc',
      labels: { app: 'nsc' },
      path: { index: 0, path_segments: [{ name: 'nsc', id: 'nsm-wire-1', token: 'opaque-token', expires: { seconds: Math.floor(Date.now() / 1000) + 600, nanos: 0 } }] },
      context: { ip_context: { excluded_prefixes: ['172.29.0.0/30'] }, extra_context: { hello: 'world' } },
    },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-w', inodeURL: `file://${client.path}` } }],
  })
  const answered = await call(session, '/networkservice.NetworkService/Request', Request.encode(req).finish())
  t.equal(answered.status, '0', `Request accepted: ${answered.message}`)
  t.equal(answered.messages.length, 1)
  const conn = plain(Connection, answered.messages[0] ?? new Uint8Array())
  t.equal(conn.id, 'nsm-wire-1')
  t.equal(conn.network_service, 'wire-svc')
  t.equal(conn.state, 'UP')
  t.equal(conn.network_service_endpoint_name, 'wire-nse')
  t.equal((conn.mechanism as { type: string }).type, 'KERNEL')
  const ip = (conn.context as { ip_context: { src_ip_addrs: string[]; dst_ip_addrs: string[]; src_routes: Array<{ prefix: string }> } }).ip_context
  t.equal(ip.src_ip_addrs.length, 1, `client address: ${ip.src_ip_addrs.join(',')}`)
  t.equal(ip.dst_ip_addrs.length, 1)
  t.notOk(ip.src_ip_addrs[0]?.startsWith('172.29.0.1/') || ip.src_ip_addrs[0]?.startsWith('172.29.0.2/'), 'excluded prefix honoured')
  t.ok(ip.src_routes.some((r) => r.prefix === '10.99.0.0/16'), 'offered route in src_routes')
  t.ok(linkNames(client.name).includes('nsm-w'), 'the interface exists in the client netns')

  // MonitorConnections: the initial state, decoded with NSM's ConnectionEvent.
  const Selector = type('connection.MonitorScopeSelector')
  const Event = type('connection.ConnectionEvent')
  const monitored = await call(session, '/connection.MonitorConnection/MonitorConnections', Selector.encode(Selector.fromObject({})).finish(), 1)
  const initial = plain(Event, monitored.messages[0] ?? new Uint8Array())
  t.equal(initial.type, 'INITIAL_STATE_TRANSFER')
  t.same(Object.keys(initial.connections as object), ['nsm-wire-1'])

  // Close with the Connection exactly as NSM decoded it.
  const Empty = type('google.protobuf.Empty')
  const closed = await call(session, '/networkservice.NetworkService/Close', Connection.encode(Connection.fromObject(conn)).finish())
  t.equal(closed.status, '0', closed.message)
  t.same(plain(Empty, closed.messages[0] ?? new Uint8Array()), {})
  t.notOk(linkNames(client.name).includes('nsm-w'), 'Close removed the interface')

  // An NSM-encoded bad request gets INVALID_ARGUMENT (3) naming the field.
  const bad = await call(session, '/networkservice.NetworkService/Request', Request.encode(Request.fromObject({ connection: { id: 'x' } })).finish())
  t.equal(bad.status, '3')
  t.match(bad.message, /network_service/)
})

t.test('NSM-encoded endpoint Register / Find / Unregister', async (t) => {
  const agent = await startAgent(t)
  const ns = makeNetns(t, 'wr')
  const session = connect('http://localhost', { createConnection: () => netConnect(agent.socket) })
  t.teardown(() => session.close())
  const Nse = type('registry.NetworkServiceEndpoint')
  const reg = await call(session, '/registry.NetworkServiceEndpointRegistry/Register', Nse.encode(Nse.fromObject({ name: 'nsm-native', network_service_names: ['s1'], url: `file://${ns.path}`, path_ids: ['p1'] })).finish())
  t.equal(reg.status, '0', reg.message)
  const back = plain(Nse, reg.messages[0] ?? new Uint8Array())
  t.equal(back.name, 'nsm-native')
  t.same(back.path_ids, ['p1'], 'fields we only carry come back intact')
  t.ok(back.initial_registration_time !== null)
  const un = await call(session, '/registry.NetworkServiceEndpointRegistry/Unregister', Nse.encode(Nse.fromObject({ name: 'nsm-native' })).finish())
  t.equal(un.status, '0', un.message)
  const Query = type('registry.NetworkServiceEndpointQuery')
  const found = await call(session, '/registry.NetworkServiceEndpointRegistry/Find', Query.encode(Query.fromObject({})).finish())
  t.equal(found.messages.length, 0, 'unregistered')
})
