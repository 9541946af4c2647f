// agent/topology/ without an agent: the graph built from API answers (pods keyed by netns and named from the
// CNI labels, the halves of a cross-node connection, an endpoint serving the NSM API, an endpoint no longer
// registered, no path tokens, chains), its text and DOT forms, the page's layout (columns along the chain, no
// overlapping boxes at 100 connections), and the --web-address / webAddress / --web-public settings.
import t, { type Test } from 'tap'
import { Connection, State } from '../../proto/gen/networkservice/connection.js'
import { EndpointRegistration } from '../../proto/gen/nsmcni/nsmcni.js'
import { ConfigError } from '../../agent/config/config.js'
import { loadConfig } from '../../agent/config/load.js'
import { parseConfigFile } from '../../agent/config/settings.js'
import { buildTopology, type MeshSnapshot } from '../../agent/topology/model.js'
import { topologyText } from '../../agent/topology/text.js'
import { topologyDot } from '../../agent/topology/dot.js'
import { layoutTopology } from '../../agent/topology/layout.js'

const SVC = 'secure-intranet-connectivity'

function conn(id: string, o: { netns?: string; endpoint: string; segments?: string[]; mechanism?: Connection['mechanism']; labels?: Record<string, string>; state?: State }): Connection {
  return Connection.fromPartial({
    id,
    networkService: SVC,
    mechanism: o.mechanism ?? { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm0', inodeURL: `file://${o.netns ?? ''}` } },
    context: { ipContext: { srcIpAddrs: ['172.16.1.1/32'], dstIpAddrs: ['172.16.1.0/32'] }, MTU: 1500 },
    labels: o.labels ?? {},
    path: { index: 0, pathSegments: (o.segments ?? ['n1']).map((name) => ({ name, id, token: 'SECRET-TOKEN', expires: { seconds: 2_000_000_000, nanos: 0 } })) },
    networkServiceEndpointName: o.endpoint,
    state: o.state ?? State.UP,
  })
}

function endpoint(name: string, netns: string, node = 'n1', url = `file://${netns}`): EndpointRegistration {
  return EndpointRegistration.fromPartial({
    endpoint: { name, networkServiceNames: [SVC], networkServiceLabels: { [SVC]: { labels: { app: name } } }, url },
    extension: { endpointName: name, netnsPath: netns, cidrPools: ['172.16.1.0/24'], nodeName: node },
  })
}

function seedSnapshot(): MeshSnapshot {
  return {
    self: 'n1',
    store: 'etcd',
    nodes: [
      { name: 'n1', underlayAddress: '10.0.0.1', peerUrl: 'tcp://10.0.0.1:7443', lastSeen: undefined },
      { name: 'n2', underlayAddress: '10.0.0.2', peerUrl: 'tcp://10.0.0.2:7443', lastSeen: undefined },
    ],
    services: [{ name: SVC, payload: 'IP', matches: [{ sourceSelector: { app: 'firewall' }, routes: [{ destinationSelector: { app: 'vpn' }, weight: 0 }], fallthrough: false, metadata: undefined }], pathIds: [] }],
    endpoints: [endpoint('fw', '/var/run/netns/fw'), endpoint('vpn', '/var/run/netns/vpn'), endpoint('remote-vpn', '/var/run/netns/rv', 'n2'), endpoint('api-nse', '', 'n1', 'unix:///run/nse.sock')],
    connections: [
      { connection: conn('client-nsm0', { netns: '/var/run/netns/cl', endpoint: 'fw', labels: { podName: 'client', namespace: 'sec' } }), attachment: { network: 'net', containerId: 'client', ifname: 'eth0', netns: '/var/run/netns/cl' } },
      { connection: conn('fw-nsm0', { netns: '/var/run/netns/fw', endpoint: 'vpn', labels: { podName: 'firewall', namespace: 'sec' } }), attachment: undefined },
      {
        connection: conn('x-vx', { endpoint: 'remote-vpn', segments: ['n1', 'n2'], mechanism: { cls: 'REMOTE', type: 'VXLAN', parameters: { vni: '5001', src_ip: '10.0.0.1', dst_ip: '10.0.0.2', name: 'nsm1' } }, labels: { podName: 'x', namespace: 'sec' } }),
        attachment: { network: 'net', containerId: 'x', ifname: 'eth0', netns: '/var/run/netns/x' },
      },
      { connection: conn('far-1', { endpoint: 'vpn', segments: ['n2', 'n1'], mechanism: { cls: 'REMOTE', type: 'VXLAN', parameters: { vni: '5002', src_ip: '10.0.0.2', dst_ip: '10.0.0.1' } }, labels: { podName: 'y', namespace: 'other' } }), attachment: undefined },
      { connection: conn('lost', { netns: '/var/run/netns/cl', endpoint: 'gone', state: State.DOWN }), attachment: undefined },
    ],
  }
}

t.test('the graph: pods by netns, names from labels, halves, chains, no tokens', async (t) => {
  const topo = buildTopology(seedSnapshot())
  t.notMatch(JSON.stringify(topo), /SECRET-TOKEN|token/)
  t.same(
    topo.pods.map((p) => [p.id, p.name]),
    [
      ['n1|/var/run/netns/cl', 'sec/client'],
      ['n1|/var/run/netns/fw', 'sec/firewall'],
      ['n1|/var/run/netns/x', 'sec/x'],
      ['n1|/var/run/netns/vpn', 'vpn'],
      ['n2|pod:other/y', 'other/y'],
      ['n2|/var/run/netns/rv', 'rv'],
    ],
  )
  const byId = new Map(topo.connections.map((c) => [c.id, c]))
  t.match(byId.get('client-nsm0'), { half: 'local', clientPod: 'n1|/var/run/netns/cl', endpointPod: 'n1|/var/run/netns/fw', mechanism: { summary: 'KERNEL veth nsm0' }, attachment: { containerId: 'client' } })
  t.match(byId.get('x-vx'), { half: 'client', endpointNode: 'n2', endpointPod: 'n2|/var/run/netns/rv', ifname: 'nsm1', mechanism: { summary: 'VXLAN vni 5001 10.0.0.1->10.0.0.2' } })
  t.match(byId.get('far-1'), { half: 'far', clientNode: 'n2', clientPod: 'n2|pod:other/y', endpointPod: 'n1|/var/run/netns/vpn' })
  t.match(byId.get('lost'), { state: 'DOWN', endpointPod: '', endpoint: 'gone' })
  t.equal(topo.endpoints.find((e) => e.name === 'api-nse')?.pod, '', 'an endpoint serving the NSM API has no pod')
  t.same(topo.chains, [
    ['n1|/var/run/netns/cl', 'n1|/var/run/netns/fw', 'n1|/var/run/netns/vpn'],
    ['n1|/var/run/netns/x', 'n2|/var/run/netns/rv'],
    ['n2|pod:other/y', 'n1|/var/run/netns/vpn'],
  ])
  t.same(topo.services[0]?.matches, ['app=firewall -> app=vpn'])
  t.same(buildTopology(seedSnapshot()), topo, 'the same answers give the same graph')
})

t.test('text and DOT', async (t) => {
  const topo = buildTopology(seedSnapshot())
  const text = topologyText(topo)
  t.match(text, /^mesh seen by n1 \(store etcd\): 2 nodes, 6 pods, 4 endpoints, 1 service, 5 connections\n/)
  t.match(text, /\nnode n1 \(this agent\)  underlay 10\.0\.0\.1, peer tcp:\/\/10\.0\.0\.1:7443\n  pod sec\/client  netns \/var\/run\/netns\/cl\n/)
  t.match(text, /    nsm1 172\.16\.1\.1\/32 ─\[VXLAN vni 5001 10\.0\.0\.1->10\.0\.0\.2 · UP\]─▶ remote-vpn in rv on n2 172\.16\.1\.0\/32 \(client half\)/)
  t.match(text, /\(endpoint half for n2\)/)
  t.match(text, /\[KERNEL veth nsm0 · DOWN\]─▶ gone /)
  t.match(text, /\nendpoints serving the NSM API\n  ◆ api-nse  unix:\/\/\/run\/nse\.sock  on n1/)
  t.match(text, /\nchains\n  sec\/client ─▶ sec\/firewall ─▶ vpn\n  sec\/x ─▶ rv\n  other\/y ─▶ vpn\n$/)
  const dot = topologyDot(topo)
  t.equal(dot.split('\n').filter((l) => /^  "pod:[^"]+" -> "(ep|missing):[^"]+" \[label=/.test(l)).length, 5, 'an edge per connection')
  t.match(dot, /"pod:n1\|\/var\/run\/netns\/x" -> "ep:remote-vpn" \[label="nsm1 VXLAN vni 5001 10\.0\.0\.1->10\.0\.0\.2\\nUP [^"]*", tooltip="x-vx", style=dashed\];/)
  t.match(dot, /"missing:gone" \[shape=ellipse, style=dashed/)
  t.match(dot, /tooltip="lost", color=red\]/)
})

t.test('layout: along the chain left to right, no overlaps at 100 connections', async (t) => {
  const topo = buildTopology(seedSnapshot())
  const l = layoutTopology(topo)
  const box = (id: string) => l.boxes.find((b) => b.id === id)
  t.ok((box('n1|/var/run/netns/cl')?.x ?? 0) < (box('n1|/var/run/netns/fw')?.x ?? 0))
  t.ok((box('n1|/var/run/netns/fw')?.x ?? 0) < (box('n1|/var/run/netns/vpn')?.x ?? 0))
  t.ok(box('endpoint:api-nse') !== undefined && box('endpoint:gone') !== undefined, 'endpoints without a pod get a box')
  t.equal(l.edges.length, 5)

  const many: MeshSnapshot = { ...seedSnapshot(), connections: [] }
  for (let i = 0; i < 100; i++) {
    const netns = `/var/run/netns/c${i}`
    many.connections = [...many.connections, { connection: conn(`c${i}`, { netns, endpoint: i % 2 === 0 ? 'fw' : 'vpn' }), attachment: undefined }]
  }
  const big = layoutTopology(buildTopology(many))
  t.equal(big.edges.length, 100)
  assertNoOverlap(t, big.boxes)
  t.ok(big.edges.every((e) => e.x2 > e.x1), 'every edge runs left to right')
})

function assertNoOverlap(t: Test, boxes: ReadonlyArray<{ id: string; x: number; y: number; width: number; height: number }>): void {
  let overlaps = 0
  for (const a of boxes) for (const b of boxes) if (a !== b && a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height) overlaps++
  t.equal(overlaps, 0, 'no two boxes overlap')
}

function refused(t: Test, argv: string[], where: string, message: RegExp): void {
  try {
    loadConfig(argv)
    t.fail(`${argv.join(' ')}: accepted`)
  } catch (err) {
    t.ok(err instanceof ConfigError)
    t.equal((err as ConfigError).where, where)
    t.match((err as Error).message, message)
  }
}

t.test('--web-address: off by default, loopback unless --web-public', async (t) => {
  t.equal(loadConfig([]).config.webAddress, undefined, 'off by default')
  t.equal(loadConfig(['--web-address', '8081']).config.webAddress, '127.0.0.1:8081', 'a bare port is loopback')
  t.equal(loadConfig(['--web-address', 'localhost:0']).config.webAddress, '127.0.0.1:0')
  t.equal(loadConfig(['--web-address=[::1]:8081']).config.webAddress, '[::1]:8081')
  t.equal(loadConfig(['--web-address', '0.0.0.0:8081', '--web-public']).config.webAddress, '0.0.0.0:8081')
  t.same(parseConfigFile('agent.yaml', 'webAddress: 9000\n'), { webAddress: '127.0.0.1:9000' })
  t.same(parseConfigFile('agent.yaml', 'webAddress: "10.0.0.1:80"\nwebPublic: true\n'), { webAddress: '10.0.0.1:80', webPublic: true })
  refused(t, ['--web-address', '10.0.0.1:8081'], '--web-address', /not a loopback address.*--web-public/)
  refused(t, ['--web-address', 'example.org:80'], '--web-address', /must be PORT, HOST:PORT or \[IPv6\]:PORT/)
  refused(t, ['--web-address', '::1:80'], '--web-address', /must be PORT/)
  refused(t, ['--web-public'], '--web-public', /needs --web-address/)
})
