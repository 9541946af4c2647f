// The nsm plugin's pure parts, in-process: netconf parsing (7 naming the field), service resolution order
// and modes (agent/cni/plan.ts), results appended to prevResult (result.ts), endpoint names, and the shim's
// frames (cni/nsm/frame.ts): encoded and decoded both ways, split anywhere, and refused when too large.
import t from 'tap'
import { parseCniArgs, parseEnv, parseNetConf, type CallContext, type CniResult } from '../../cni/protocol/index'
import { KNOWN_CNI_ARGS, parseNsmConfig } from '../../agent/cni/config'
import { makePlan } from '../../agent/cni/plan'
import { buildResult } from '../../agent/cni/result'
import { registration } from '../../agent/cni/endpoint'
import { endpointKey, endpointName, isContainerEndpoint } from '../../conf/endpoint-names'
import { agentSocketOf, decodeAnswer, decodeRequest, encodeAnswer, encodeRequest } from '../../cni/nsm/frame'
import { MAX_STDIN_BYTES } from '../../cni/protocol/stdio'
import type { Connection } from '../../proto/gen/networkservice/connection'
import type { PodInfo as PodInfoT } from '../../agent/podinfo/types'

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
  t.equal(cfg.timeoutMs, 120_000)
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
    [{ mechanism: 'vxlan' }, 'mechanism'],
    [{ mechanism: 3 }, 'mechanism'],
    [{ mechanism: 'memif', networkService: 'kernel://web' }, 'networkService'],
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

t.test('netconf mechanism: for entries without a scheme, from the config or the annotations', async (t) => {
  const cfg = (conf: Record<string, unknown>) => parseNsmConfig(ctx(conf, { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p' }))
  t.equal(cfg({ mechanism: 'MEMIF', networkService: 'web' }).mechanism, 'memif', 'case-insensitive')
  const explicit = makePlan({ cfg: cfg({ mechanism: 'memif', networkService: 'web' }), containerId: 'c1', ifname: 'net1', prevResult: undefined, pod: undefined })
  t.equal(explicit.interfaces[0]?.request.mechanism, 'memif')
  const same = makePlan({ cfg: cfg({ mechanism: 'memif', networkService: 'memif://web' }), containerId: 'c1', ifname: 'net1', prevResult: undefined, pod: undefined })
  t.equal(same.interfaces[0]?.request.mechanism, 'memif', 'a scheme that agrees')
  const annotated = makePlan({ cfg: cfg({ mechanism: 'memif' }), containerId: 'c1', ifname: 'eth0', prevResult: { interfaces: [{ name: 'eth0' }] }, pod: pod({ 'networkservicemesh.io': 'kernel://a, b' }) })
  t.same(annotated.interfaces.map((i) => i.request.mechanism), ['kernel', 'memif'], "an annotation's scheme wins; a bare entry takes the network's")
  t.equal(cfg({ networkService: 'web' }).mechanism, undefined)
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
  t.match(endpointKey('Abc_1.x'), /^cnh-abc-1-x-[0-9a-f]{16}$/)
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

t.test('frames: a request and an answer survive any split; foreign or oversized frames are refused', async (t) => {
  const req = { env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0', CNI_NETNS: '/run/netns/x' }, stdin: Buffer.from('{"cniVersion":"1.1.0","name":"ü"}') }
  const bytes = encodeRequest(req)
  for (let cut = 0; cut < bytes.length; cut++) t.equal(decodeRequest(bytes.subarray(0, cut)), undefined, `incomplete at ${cut}`)
  t.same(decodeRequest(bytes), req)
  const extra = encodeRequest({ env: { ...req.env, PATH: '/bin' } as Record<string, string>, stdin: req.stdin })
  t.notOk('PATH' in (decodeRequest(extra)?.env ?? {}), 'only CNI_* variables are taken')
  const answer = { exitCode: 1, stdout: '{"code":7}\n', stderr: 'warn\n' }
  const ab = encodeAnswer(answer)
  for (let cut = 0; cut < ab.length; cut++) t.equal(decodeAnswer(ab.subarray(0, cut)), undefined)
  t.same(decodeAnswer(ab), answer)
  t.throws(() => decodeRequest(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), /not an nsm CNI request/)
  const big = Buffer.from(bytes)
  big.writeUInt32BE(MAX_STDIN_BYTES + 2, 12)
  t.throws(() => decodeRequest(big), /stdin of/)
  const big2 = Buffer.from(bytes)
  big2.writeUInt32BE(1 << 30, 8)
  t.throws(() => decodeRequest(big2), /header of/)
})

t.test('the agent socket a netconf names', async (t) => {
  t.same(agentSocketOf({}), { socket: '/run/nsm/agent.sock' })
  t.same(agentSocketOf({ socket: '/a.sock' }), { socket: '/a.sock' })
  t.same(agentSocketOf({ agentSocket: '/b.sock', socket: null }), { socket: '/b.sock' })
  t.same(agentSocketOf({ socket: '/a', agentSocket: '/a' }), { socket: '/a' })
  t.match(agentSocketOf({ socket: '/a', agentSocket: '/b' }), { field: 'agentSocket', problem: /conflicts/ })
  t.match(agentSocketOf({ socket: 'rel.sock' }), { field: 'socket', problem: /absolute/ })
  t.match(agentSocketOf({ agentSocket: 7 }), { field: 'agentSocket', problem: /expected a string/ })
})
