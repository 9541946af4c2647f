// The nsm plugin's pure parts, in-process: netconf parsing (7 naming the field), service resolution order
// and modes (plan.ts), results appended to prevResult (result.ts), endpoint names, HPACK against the RFC
// 7541 examples, and the HTTP/2 + gRPC client against node:http2's server (statuses, trailers-only
// errors, a reset, GOAWAY, an unreachable socket, a deadline), and STATUS / DEL against a fake agent that is not ready or fails,
// and DEL's fallback when the agent has no Detach.
import { createServer, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { parseCniArgs, parseEnv, parseNetConf, type CallContext, type CniResult } from '../../cni/protocol/index'
import { KNOWN_CNI_ARGS, parseNsmConfig } from '../../cni/nsm/config'
import { makePlan } from '../../cni/nsm/plan'
import { buildResult } from '../../cni/nsm/result'
import { endpointKey, endpointName, registration } from '../../cni/nsm/endpoint'
import { isContainerEndpoint } from '../../conf/endpoint-names'
import { encodeHeaders, HpackDecoder, huffmanDecode } from '../../cni/nsm/hpack'
import { AgentCallError, GrpcUnaryClient } from '../../cni/nsm/grpc'
import { toCniError } from '../../cni/nsm/agent'
import { PodInfo, PodInfoRequest, StatusResponse } from '../../proto/gen/nsmcni/nsmcni'
import { nsmHandlers } from '../../cni/nsm/handlers'
import { callInProcess } from '../conformance/exec'
import { methods } from '../../cni/nsm/messages'
import type { Connection } from '../../proto/gen/networkservice/connection'
import type { PodInfo as PodInfoT } from '../../proto/gen/nsmcni/nsmcni'

function ctx(conf: Record<string, unknown>, env: Record<string, string> = {}): CallContext {
  const e = parseEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'net1', ...env })
  const c = parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'nsm', ...conf })
  return { env: e, conf: c, version: c.version, envArgs: parseCniArgs(e.args, KNOWN_CNI_ARGS) }
}
const pod = (annotations: Record<string, string>, labels: Record<string, string> = {}): PodInfoT => ({ namespace: 'ns', name: 'p', uid: 'u', labels, annotations, nodeName: 'node-1' })
const err = (f: () => unknown): { code: number; message: string } => {
  try {
    f()
  } catch (e) {
    return { code: (e as { code: number }).code, message: (e as Error).message }
  }
  throw new Error('did not throw')
}

t.test('netconf: defaults and fields', async (t) => {
  const cfg = parseNsmConfig(ctx({ networkService: 'kernel://web/eth5?a=b', labels: { app: 'web' } }, { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p' }))
  t.equal(cfg.socket, '/run/nsm/agent.sock')
  t.equal(cfg.timeoutMs, 30_000)
  t.same(cfg.labels, { app: 'web' })
  t.same(cfg.pod, { namespace: 'ns', name: 'p' })
  t.equal(cfg.explicit?.field, 'networkService')
  t.match(cfg.explicit?.requests[0], { service: 'web', ifname: 'eth5', labels: { a: 'b' }, mechanism: 'kernel' })
  t.same(parseNsmConfig(ctx({ agentSocket: '/x.sock' })).socket, '/x.sock')
  t.same(parseNsmConfig(ctx({}, { CNI_ARGS: 'K8S_POD_NAME=ctr' })).pod, { namespace: 'default', name: 'ctr' }, 'podman passes the name alone')
  t.same(err(() => parseNsmConfig(ctx({}, { CNI_ARGS: 'K8S_POD_NAMESPACE=x' }))).code, 4)
})

t.test('netconf: services in resolution order', async (t) => {
  const env = { CNI_ARGS: 'NSM_NETWORK_SERVICES=from-env' }
  t.equal(parseNsmConfig(ctx({ networkServices: ['a', 'b'], args: { cni: { networkServices: 'c' } } }, env)).explicit?.field, 'networkServices')
  t.equal(parseNsmConfig(ctx({ args: { cni: { networkServices: 'c' } } }, env)).explicit?.field, 'args.cni.networkServices')
  t.equal(parseNsmConfig(ctx({}, env)).explicit?.requests[0]?.service, 'from-env')
  t.equal(parseNsmConfig(ctx({})).explicit, undefined)
})

t.test('netconf: bad fields are 7 naming them', async (t) => {
  for (const [conf, field] of [
    [{ socket: 'x' }, 'socket'],
    [{ socket: '/a', agentSocket: '/b' }, 'agentSocket'],
    [{ timeoutMs: 1.5 }, 'timeoutMs'],
    [{ labels: [] }, 'labels'],
    [{ labels: { a: 1 } }, 'labels.a'],
    [{ networkServices: 'ok, Bad' }, 'networkServices[1]'],
    [{ networkServices: [1] }, 'networkServices'],
    [{ deviceID: 3 }, 'deviceID'],
    [{ args: { cni: { podName: 5 } } }, 'args.cni.podName'],
  ] as const) {
    const e = err(() => parseNsmConfig(ctx(conf)))
    t.equal(e.code, 7, JSON.stringify(conf))
    t.ok(e.message.startsWith(`${field}`), `${e.message} names ${field}`)
  }
})

t.test('plan: attachment mode', async (t) => {
  const cfg = (conf: Record<string, unknown>) => parseNsmConfig(ctx(conf, { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p' }))
  const p = makePlan({ cfg: cfg({ networkService: 'web?x=1', labels: { app: 'a', x: '0' } }), containerId: 'c1', ifname: 'net1', prevResult: undefined, pod: pod({}, { app: 'pod', tier: 't' }) })
  t.equal(p.mode, 'attachment')
  t.same(p.interfaces.map((i) => [i.id, i.ifname, i.request.service]), [['c1-net1', 'net1', 'web']])
  t.same(p.interfaces[0]?.labels, { app: 'pod', x: '1', tier: 't', podName: 'p', namespace: 'ns', nodeName: 'node-1' }, 'netconf < pod < entry < podName/namespace/nodeName')
  const fromPod = makePlan({ cfg: cfg({}), containerId: 'c1', ifname: 'net2', prevResult: undefined, pod: pod({ 'networkservicemesh.io': 'kernel://a/net1, kernel://b/net2' }) })
  t.same(fromPod.interfaces.map((i) => i.request.service), ['b'], 'several annotated services: the one named for CNI_IFNAME')
  t.equal(err(() => makePlan({ cfg: cfg({}), containerId: 'c1', ifname: 'net3', prevResult: undefined, pod: pod({ 'networkservicemesh.io': 'a, b' }) })).code, 105)
  t.equal(err(() => makePlan({ cfg: cfg({}), containerId: 'c1', ifname: 'net1', prevResult: undefined, pod: pod({}) })).code, 7)
  const offersOnly = makePlan({ cfg: cfg({}), containerId: 'c1', ifname: 'net1', prevResult: undefined, pod: pod({ 'endpoint.networkservicemesh.io': 'web?cidr=10.0.0.0/24' }) })
  t.same([offersOnly.interfaces.length, offersOnly.offers.length], [0, 1], 'an endpoint pod that asks for nothing')
})

t.test('plan: chained mode names interfaces past prevResult', async (t) => {
  const cfg = parseNsmConfig(ctx({}, { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p' }))
  const prev: CniResult = { interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }, { name: 'nsm-1', sandbox: '/var/run/netns/x' }, { name: 'veth1', mac: '00:11:22:33:44:55' }], ips: [] }
  const p = makePlan({ cfg, containerId: 'c1', ifname: 'eth0', prevResult: prev, pod: pod({ 'networkservicemesh.io': 'kernel://a, kernel://b/nsm-2', 'ns.networkservicemesh.io': 'c' }) })
  t.equal(p.mode, 'chained')
  t.same(p.interfaces.map((i) => i.ifname), ['nsm-3', 'nsm-2', 'nsm-4'], 'generated names skip eth0, nsm-1 (prevResult) and nsm-2 (asked for)')
  t.same(p.interfaces.map((i) => i.id), ['c1-nsm-3', 'c1-nsm-2', 'c1-nsm-4'])
  t.same(makePlan({ cfg, containerId: 'c1', ifname: 'eth0', prevResult: prev, pod: pod({}) }).interfaces, [], 'nothing asked: nothing planned')
  const clash = err(() => makePlan({ cfg, containerId: 'c1', ifname: 'eth0', prevResult: prev, pod: pod({ 'networkservicemesh.io': 'kernel://a/eth0' }) }))
  t.equal(clash.code, 105)
  t.match(clash.message, /eth0 is already made/)
})

t.test('result: appended to prevResult with shifted interface indexes', async (t) => {
  const conn = (src: string, dst: string, mac: string): Connection => ({
    id: 'x',
    networkService: 's',
    mechanism: { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'n' } },
    context: {
      ipContext: { srcIpAddrs: [src], dstIpAddrs: [dst], srcIpRequired: false, dstIpRequired: false, srcRoutes: [{ prefix: `${dst.split('/')[0]}/32`, nextHop: '' }, { prefix: '10.0.0.0/8', nextHop: dst.split('/')[0] as string }], dstRoutes: [], excludedPrefixes: [], ipNeighbors: [], extraPrefixRequest: [], extraPrefixes: [], policies: [] },
      dnsContext: { configs: [{ dnsServerIps: ['10.0.0.53'], searchDomains: ['svc.local'] }] },
      ethernetContext: { srcMac: mac, dstMac: '', vlanTag: 0 },
      extraContext: {},
      MTU: 1450,
    },
    labels: {},
    path: undefined,
    networkServiceEndpointName: 'e',
    payload: '',
    state: 1,
  })
  const prev: CniResult = { interfaces: [{ name: 'eth0', sandbox: '/ns' }], ips: [{ address: '10.1.0.5/24', interface: 0 }], routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1' }], dns: { nameservers: ['1.1.1.1'] } }
  const r = buildResult([{ ifname: 'nsm-1', connection: conn('172.16.0.1/32', '172.16.0.0/32', '02:00:00:00:00:01') }, { ifname: 'nsm-2', connection: conn('172.16.0.3/32', '172.16.0.2/32', '02:00:00:00:00:02') }], '/ns', prev)
  t.same(r.interfaces, [{ name: 'eth0', sandbox: '/ns' }, { name: 'nsm-1', sandbox: '/ns', mac: '02:00:00:00:00:01', mtu: 1450 }, { name: 'nsm-2', sandbox: '/ns', mac: '02:00:00:00:00:02', mtu: 1450 }])
  t.same(r.ips, [{ address: '10.1.0.5/24', interface: 0 }, { address: '172.16.0.1/32', interface: 1 }, { address: '172.16.0.3/32', interface: 2 }])
  t.same(r.routes?.map((x) => `${x.dst}${x.gw === undefined ? '' : ` via ${x.gw}`}`), ['0.0.0.0/0 via 10.1.0.1', '172.16.0.0/32', '10.0.0.0/8 via 172.16.0.0', '172.16.0.2/32', '10.0.0.0/8 via 172.16.0.2'])
  t.same(r.dns, { nameservers: ['1.1.1.1', '10.0.0.53'], search: ['svc.local'] })
  t.same(prev.interfaces?.length, 1, 'prevResult itself is not modified')
})

t.test('endpoint names: from the container id alone, valid DNS names', async (t) => {
  t.equal(endpointKey('abc123'), 'cni-abc123')
  t.match(endpointKey('Abc_1.x'), /^cni-abc-1-x-[0-9a-f]{8}$/)
  t.not(endpointKey('a_b'), endpointKey('a.b'), 'ids that sanitize alike stay apart')
  t.equal(endpointName('web', 'abc'), 'web.cni-abc')
  t.ok(isContainerEndpoint('web.cni-abc', 'abc'))
  t.ok(isContainerEndpoint('a.b.web.cni-abc', 'abc'), 'service names may hold dots')
  t.ok(isContainerEndpoint(endpointName('web', 'Abc_1.x'), 'Abc_1.x'))
  t.notOk(isContainerEndpoint('web.cni-abc-2', 'abc'), 'not a container whose id starts with this one')
  t.notOk(isContainerEndpoint(endpointName('web', 'abc-2'), 'abc'))
  t.notOk(isContainerEndpoint('web.cni-xabc', 'abc'))
  t.notOk(isContainerEndpoint('.cni-abc', 'abc'), 'no service part')
  t.notOk(isContainerEndpoint('web-cni-abc', 'abc'))
  const reg = registration({ service: 'web', labels: { role: 'db' }, cidrs: ['10.0.0.0/24'], routes: ['10.9.0.0/16'], entry: '' }, { containerId: 'abc', netns: '/run/netns/x', labels: { app: 'a', role: 'pod' }, nodeName: '' }, 1_000_000)
  t.same(reg.endpoint?.networkServiceLabels.web?.labels, { app: 'a', role: 'db' })
  t.equal(reg.endpoint?.url, 'file:///run/netns/x')
  t.equal(reg.endpoint?.expirationTime?.seconds, 1000 + 10 * 365 * 24 * 3600)
})

t.test('HPACK: RFC 7541 Appendix C examples', async (t) => {
  const hex = (s: string) => Buffer.from(s.replace(/\s/g, ''), 'hex')
  t.equal(huffmanDecode(hex('f1e3 c2e5 f23a 6ba0 ab90 f4ff')), 'www.example.com')
  t.equal(huffmanDecode(hex('d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff')), 'Mon, 21 Oct 2013 20:13:21 GMT')
  t.equal(huffmanDecode(hex('9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3')), 'https://www.example.com')
  t.throws(() => huffmanDecode(hex('f1e3 c2e5 f23a 6ba0 ab90 f400')), /padding/)
  // C.3: three requests on one connection (no Huffman), the dynamic table carried between them.
  const d = new HpackDecoder()
  t.same([...d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'))], [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com']])
  t.same([...d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'))], [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'www.example.com'], ['cache-control', 'no-cache']])
  t.same(
    [...d.decode(hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'))],
    [[':method', 'GET'], [':scheme', 'https'], [':path', '/index.html'], [':authority', 'www.example.com'], ['custom-key', 'custom-value']],
  )
  // C.6.1: a response with Huffman strings.
  const r = new HpackDecoder()
  t.same(
    Object.fromEntries(r.decode(hex('4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3'))),
    { ':status': '302', 'cache-control': 'private', date: 'Mon, 21 Oct 2013 20:13:21 GMT', location: 'https://www.example.com' },
  )
  t.same([...new HpackDecoder().decode(encodeHeaders([['grpc-timeout', '5m'], ['x', 'é']]))], [['grpc-timeout', '5m'], ['x', 'é']], 'our encoding round-trips')
})

/**
 * A stand-in agent: node:http2 on a unix socket in a temp dir, every stream answered by `onStream`;
 * the server, its sessions and the dir are removed at teardown. Returns the socket path.
 */
async function fakeAgent(t: { teardown(fn: () => void | Promise<void>): void }, onStream: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-fake-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const socket = join(dir, 'agent.sock')
  const server = createServer()
  const sessions = new Set<import('node:http2').ServerHttp2Session>()
  server.on('session', (s) => {
    sessions.add(s)
    s.on('error', () => undefined)
  })
  server.on('stream', onStream)
  await new Promise<void>((res) => server.listen(socket, res))
  t.teardown(
    () =>
      new Promise<void>((res) => {
        for (const s of sessions) s.destroy()
        server.close(() => res())
      }),
  )
  return socket
}

t.test('gRPC over the plugin\'s HTTP/2 client, against node:http2', async (t) => {
  const seen: Array<Record<string, unknown>> = []
  const reply = (stream: ServerHttp2Stream, name: string): void => {
    const frame = (msg: Uint8Array) => Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), msg]).fill(0, 0, 1)
    if (name === 'ok') {
      const body = PodInfo.encode({ namespace: 'ns', name: 'p', uid: 'u', labels: { a: 'b'.repeat(100_000) }, annotations: {}, nodeName: 'n' }).finish()
      const f = frame(body)
      f.writeUInt32BE(body.length, 1)
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(f)
    } else if (name === 'missing') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': encodeURIComponent('[NO_ENDPOINT] no endpoint for ünïcode'), 'nsmcni-error': 'NO_ENDPOINT' }, { endStream: true })
    } else if (name === 'reset') {
      stream.close(2)
    } else if (name === 'goaway') {
      stream.session?.goaway(0)
    }
    // 'slow': never answers
  }
  const socket = await fakeAgent(t, (stream, headers) => {
    stream.on('error', () => undefined) // the 'reset' case closes it with an error code on purpose
    seen.push(headers)
    const chunks: Buffer[] = []
    stream.on('data', (d: Buffer) => chunks.push(d))
    stream.on('end', () => {
      const req = PodInfoRequest.decode(Buffer.concat(chunks).subarray(5))
      reply(stream, req.name)
    })
  })
  const dir = dirname(socket)
  const call = async (name: string, timeoutMs = 5000) => {
    const c = new GrpcUnaryClient(socket)
    try {
      return await c.unary(methods.getPodInfo, { namespace: 'ns', name }, { timeoutMs, metadata: { 'nsmcni-network': 'net' } })
    } finally {
      c.close()
    }
  }
  const ok = await call('ok')
  t.equal(ok.labels.a?.length, 100_000, 'a response larger than one frame and than the default 64 KiB window')
  t.match(seen[0], { ':path': '/nsmcni.Agent/GetPodInfo', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '5000m', 'nsmcni-network': 'net' })
  const e = await call('missing').catch((x: unknown) => x as AgentCallError)
  t.match(e, { code: 5, agentCode: 'NO_ENDPOINT', cniCode: 101, unreachable: false })
  t.equal(toCniError(e, 'Request', socket).code, 101)
  t.match(toCniError(e, 'Request', socket).message, /no endpoint for ünïcode/)
  const reset = await call('reset').catch((x: unknown) => x as AgentCallError)
  t.match(reset, { agentCode: 'UNAVAILABLE', unreachable: false })
  const away = await call('goaway').catch((x: unknown) => x as AgentCallError)
  t.ok(away instanceof AgentCallError, `GOAWAY fails the call: ${String(away)}`)
  const slow = await call('slow', 200).catch((x: unknown) => x as AgentCallError)
  t.match(slow, { code: 4, unreachable: false })
  t.equal(toCniError(slow, 'Request', socket).code, 11, 'a deadline is 11, try again')
  const gone = await new GrpcUnaryClient(join(dir, 'nothing.sock')).unary(methods.getPodInfo, { namespace: 'a', name: 'b' }, { timeoutMs: 1000, metadata: undefined }).catch((x: unknown) => x as AgentCallError)
  t.match(gone, { unreachable: true })
  const ce = toCniError(gone, 'Request', join(dir, 'nothing.sock'))
  t.equal(ce.code, 100)
  t.match(ce.message, /nothing\.sock \(ENOENT\)/)
})

t.test('STATUS and DEL against a fake agent: not ready is 50 with its reason; a failing agent fails DEL (11)', async (t) => {
  const socket = await fakeAgent(t, (stream, headers) => {
    stream.on('error', () => undefined)
    stream.resume()
    stream.on('end', () => {
      if (headers[':path'] === '/nsmcni.Agent/Status') {
        const body = StatusResponse.encode(StatusResponse.fromPartial({ ready: false, reason: 'kernel layer unavailable' })).finish()
        const f = Buffer.alloc(5 + body.length)
        f.writeUInt32BE(body.length, 1)
        f.set(body, 5)
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
        stream.end(f)
      } else {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '13', 'grpc-message': '[INTERNAL] table write failed', 'nsmcni-error': 'INTERNAL' }, { endStream: true })
      }
    })
  })
  const conf = { cniVersion: '1.1.0', name: 'n', type: 'nsm', socket, networkService: 'web' }
  const st = await callInProcess(nsmHandlers, { command: 'STATUS', stdin: conf })
  t.equal(st.json?.code, 50, st.stdout)
  t.match(String(st.json?.msg), /not ready: kernel layer unavailable/)
  const del = await callInProcess(nsmHandlers, { command: 'DEL', containerId: 'c1', ifname: 'net1', stdin: conf })
  t.equal(del.json?.code, 11, `an agent that answers with a failure fails the DEL: ${del.stdout}`)
  t.match(String(del.json?.msg), /table write failed/)
})

t.test('DEL against a fake agent: Detach UNIMPLEMENTED without an agent code falls back call by call; with one it is an answer', async (t) => {
  let detachAnswer: Record<string, string> = {}
  const seen: string[] = []
  const socket = await fakeAgent(t, (stream, headers) => {
    stream.on('error', () => undefined)
    stream.resume()
    const path = String(headers[':path'])
    seen.push(path)
    stream.on('end', () => {
      if (path === '/nsmcni.Agent/Detach') {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...detachAnswer }, { endStream: true })
        return
      }
      // Check, Close, ListEndpoints: an empty message (no connections, no endpoints).
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(Buffer.alloc(5))
    })
  })
  const conf = { cniVersion: '1.1.0', name: 'n', type: 'nsm', socket, networkService: 'web' }
  // What grpc-js answers for a method an older agent does not serve.
  detachAnswer = { 'grpc-status': '12', 'grpc-message': 'The server does not implement the method /nsmcni.Agent/Detach' }
  const old = await callInProcess(nsmHandlers, { command: 'DEL', containerId: 'c1', ifname: 'net1', stdin: conf })
  t.equal(old.exitCode, 0, old.stdout)
  t.same(seen, ['/nsmcni.Agent/Detach', '/nsmcni.Agent/Check', '/networkservice.NetworkService/Close', '/nsmcni.Agent/ListEndpoints'], 'the conventional id is closed on the fallback path too')
  seen.length = 0
  detachAnswer = { 'grpc-status': '12', 'grpc-message': '[UNIMPLEMENTED] not here', 'nsmcni-error': 'UNIMPLEMENTED' }
  const refused = await callInProcess(nsmHandlers, { command: 'DEL', containerId: 'c1', ifname: 'net1', stdin: conf })
  t.equal(refused.json?.code, 11, refused.stdout)
  t.equal(refused.json?.msg, 'Detach: not here')
  t.same(seen, ['/nsmcni.Agent/Detach'], 'an agent error is an answer: no fallback')
})
