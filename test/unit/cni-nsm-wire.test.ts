// The plugin's hand-written message codecs (cni/nsm/messages.ts) against proto/gen's generated ones, in
// both directions: what the plugin writes decodes with proto/gen to the same message, and what proto/gen
// writes (all fields set, including ones the plugin skips) reads back with the fields the plugin uses.
import t from 'tap'
import { methods } from '../../cni/nsm/messages'
import { Connection } from '../../proto/gen/networkservice/connection'
import { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import { CheckRequest, CheckResponse, DetachRequest, DetachResponse, EndpointQuery, EndpointRegistration, EndpointRegistrations, GCRequest, GCResponse, PodInfo, PodInfoRequest, StatusResponse } from '../../proto/gen/nsmcni/nsmcni'

const full: Connection = {
  id: 'c1-net1',
  networkService: 'secure-intranet-connectivity',
  mechanism: { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'net1', inodeURL: 'file:///var/run/netns/x', pciAddress: '0000:03:02.1' } },
  context: {
    ipContext: {
      srcIpAddrs: ['172.16.0.1/32', 'fd00::1/128'],
      dstIpAddrs: ['172.16.0.0/32'],
      srcIpRequired: true,
      dstIpRequired: false,
      srcRoutes: [{ prefix: '172.16.0.0/32', nextHop: '' }, { prefix: '10.0.0.0/8', nextHop: '172.16.0.0' }],
      dstRoutes: [{ prefix: '172.16.0.1/32', nextHop: '' }],
      excludedPrefixes: ['10.96.0.0/12'],
      ipNeighbors: [{ ip: '1.2.3.4', hardwareAddress: 'aa:bb:cc:dd:ee:ff' }],
      extraPrefixRequest: [],
      extraPrefixes: ['10.1.0.0/24'],
      policies: [{ from: 'x', proto: 'tcp', dstPort: '80', srcPort: '', routes: [] }],
    },
    dnsContext: { configs: [{ dnsServerIps: ['10.0.0.53'], searchDomains: ['svc.local', 'local'] }] },
    ethernetContext: { srcMac: '02:11:22:33:44:55', dstMac: '02:00:00:00:00:01', vlanTag: 7 },
    extraContext: { k: 'v' },
    MTU: 1450,
  },
  labels: { app: 'web', 'ünï': 'cödé' },
  path: { index: 1, pathSegments: [{ name: 'nsmgr', id: 'x', token: 't', expires: { seconds: 99, nanos: 1 }, metrics: { a: 'b' } }] },
  networkServiceEndpointName: 'firewall-1',
  payload: 'IP',
  state: 1,
}

t.test('Request: what the plugin writes is what proto/gen reads', async (t) => {
  const req: NetworkServiceRequest = { connection: { ...full, context: undefined, path: undefined }, mechanismPreferences: [full.mechanism as NonNullable<Connection['mechanism']>, { cls: 'LOCAL', type: 'MEMIF', parameters: {} }] }
  t.same(NetworkServiceRequest.decode(methods.request.encode(req)), req)
  const close = { ...full, context: undefined, path: undefined }
  t.same(Connection.decode(methods.close.encode(close)), close)
})

t.test('Connection: what proto/gen writes, the plugin reads (skipping what it does not use)', async (t) => {
  const c = methods.request.decode(Connection.encode(full).finish())
  const { path: _p, ...rest } = full
  const ip = full.context?.ipContext
  t.same(c, {
    ...rest,
    path: undefined,
    context: {
      ...full.context,
      ipContext: { ...ip, srcIpRequired: false, ipNeighbors: [], extraPrefixes: [], policies: [] },
    },
  })
  const empty = methods.request.decode(new Uint8Array(0))
  t.same(empty, Connection.fromPartial({}), 'an empty message is all defaults')
})

t.test('nsmcni.Agent requests', async (t) => {
  const q = { namespace: 'default', name: 'web-1' }
  t.same(PodInfoRequest.decode(methods.getPodInfo.encode(q)), q)
  const attachment = { containerId: 'c1', ifname: 'eth0', network: 'cluster', netns: '/var/run/netns/x' }
  t.same(CheckRequest.decode(methods.check.encode({ attachment })), { attachment })
  const detach: DetachRequest = { attachment, connectionIds: ['c1-eth0', 'c1-ünï'] }
  t.same(DetachRequest.decode(methods.detach.encode(detach)), detach)
  const bare: DetachRequest = { attachment: { ...attachment, netns: '' }, connectionIds: [] }
  t.same(DetachRequest.decode(methods.detach.encode(bare)), bare, 'a DEL without CNI_NETNS, chained mode (no extra id)')
  t.same(DetachRequest.decode(methods.detach.encode({ attachment: undefined, connectionIds: [] })), { attachment: undefined, connectionIds: [] })
  const gc = { network: 'cluster', validAttachments: [attachment, { ...attachment, containerId: 'c2', netns: '' }] }
  t.same(GCRequest.decode(methods.gc.encode(gc)), gc)
  const reg: EndpointRegistration = {
    endpoint: {
      name: 'web.cni-c1',
      networkServiceNames: ['web'],
      networkServiceLabels: { web: { labels: { app: 'db', role: 'primary' } } },
      url: 'file:///var/run/netns/x',
      expirationTime: { seconds: 2_100_000_000, nanos: 0 },
      initialRegistrationTime: undefined,
      pathIds: [],
    },
    extension: { endpointName: 'web.cni-c1', netnsPath: '/var/run/netns/x', cidrPools: ['172.16.1.0/24', 'fd00::/64'], routes: [{ prefix: '10.0.0.0/8', nextHop: '' }], excludedPrefixes: ['172.16.1.0/30'], nodeName: 'node-a' },
  }
  t.same(EndpointRegistration.decode(methods.registerEndpoint.encode(reg)), reg)
  t.same(EndpointQuery.decode(methods.unregisterEndpoint.encode({ endpointName: 'x' })), { endpointName: 'x' })
  t.same(EndpointQuery.decode(methods.listEndpointNames.encode({ endpointName: '' })), { endpointName: '' })
  t.equal(methods.status.encode().length, 0)
})

t.test('nsmcni.Agent responses', async (t) => {
  const pod: PodInfo = { namespace: 'ns', name: 'p', uid: 'u-1', labels: { app: 'web', tier: 'front' }, annotations: { 'networkservicemesh.io': 'kernel://svc/nsm-1?x=y' }, nodeName: 'node-a' }
  t.same(methods.getPodInfo.decode(PodInfo.encode(pod).finish()), pod)
  const check: CheckResponse = { ok: false, problems: [{ code: 'link-missing', message: 'gone', connectionId: 'c1-net1' }], connections: [{ ...full, path: undefined }, Connection.fromPartial({ id: 'c2' })] }
  const got = methods.check.decode(CheckResponse.encode(check).finish())
  t.equal(got.ok, false)
  t.same(got.problems, check.problems)
  t.same(got.connections.map((c) => [c.id, c.mechanism?.parameters.name, c.context?.ipContext?.srcIpAddrs]), [['c1-net1', 'net1', ['172.16.0.1/32', 'fd00::1/128']], ['c2', undefined, undefined]])
  const detached: DetachResponse = { closedConnectionIds: ['c1-nsm-1', 'c1-eth2'], unregisteredEndpoints: ['web.cni-c1', 'db.cni-c1'] }
  t.same(methods.detach.decode(DetachResponse.encode(detached).finish()), detached)
  t.same(methods.detach.decode(new Uint8Array(0)), { closedConnectionIds: [], unregisteredEndpoints: [] }, 'nothing to do: an empty message')
  t.same(methods.gc.decode(GCResponse.encode({ closedConnectionIds: ['a', 'b'] }).finish()), { closedConnectionIds: ['a', 'b'] })
  const st = StatusResponse.fromPartial({ ready: true, reason: '', version: '0.1.0', connections: 3, endpoints: 2, started: { seconds: 5, nanos: 0 }, nodeName: 'n' })
  t.same(methods.status.decode(StatusResponse.encode(st).finish()), { ready: true, reason: '' })
  t.same(methods.status.decode(StatusResponse.encode({ ...st, ready: false, reason: 'shutting down' }).finish()), { ready: false, reason: 'shutting down' })
  const regs = EndpointRegistrations.encode({
    endpoints: [
      { endpoint: { name: 'a.cni-1', networkServiceNames: ['a'], networkServiceLabels: {}, url: '', expirationTime: undefined, initialRegistrationTime: undefined, pathIds: [] }, extension: undefined },
      { endpoint: { name: 'b', networkServiceNames: ['b'], networkServiceLabels: { b: { labels: { x: 'y' } } }, url: 'file:///x', expirationTime: { seconds: 1, nanos: 2 }, initialRegistrationTime: undefined, pathIds: ['p'] }, extension: { endpointName: 'b', netnsPath: '/x', cidrPools: ['10.0.0.0/24'], routes: [], excludedPrefixes: [], nodeName: '' } },
    ],
  }).finish()
  t.same(methods.listEndpointNames.decode(regs), ['a.cni-1', 'b'])
})
