// `nsmctl topology` against a real agent running the seed scenario through dist/nsm: the terminal drawing
// (pods with their endpoints and connections: interface, addresses, KERNEL veth, state; the chain client ─▶
// firewall ─▶ vpn-gateway), `-o json` (the graph: pods keyed by netns, each connection's CNI attachment, no
// path tokens) and `-o dot` (a Graphviz digraph with a cluster per node and an edge per connection); after
// the client's DEL its connection is gone from all three.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'
import type { Topology } from '../../agent/topology/model.js'
import { startMesh } from './nsm-fixture'
import { addSeedPods } from '../lib/seed-pods'

const ROOT = resolve(import.meta.dirname, '../..')

function nsmctl(socket: string, ...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', socket, ...args], { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('the seed scenario drawn as text, JSON and DOT', async (t) => {
  const mesh = await startMesh(t)
  const seed = await addSeedPods(t, mesh)
  const clientId = `${seed.client.containerId}-nsm0`
  const firewallId = `${seed.firewall.containerId}-nsm0`

  const text = nsmctl(mesh.socket, 'topology')
  t.equal(text.code, 0, text.stderr)
  t.match(text.stdout, /^mesh seen by node-a \(store file\): 1 node, 3 pods, 2 endpoints, 2 services, 2 connections\n/)
  t.match(text.stdout, /\nnode node-a \(this agent\)\n/)
  t.match(text.stdout, new RegExp(`  pod sec/client  netns ${seed.client.netns.path}\\n    nsm0 172\\.31\\.41\\.\\d+/32 ─\\[KERNEL veth nsm0 · UP\\]─▶ secure-intranet-connectivity\\.cni-${seed.firewall.containerId} in sec/firewall 172\\.31\\.41\\.\\d+/32  \\(secure-intranet-connectivity, ${clientId}\\)`))
  t.match(text.stdout, new RegExp(`  pod sec/firewall  netns ${seed.firewall.netns.path}\\n    ◆ endpoint secure-intranet-connectivity\\.cni-${seed.firewall.containerId}  secure-intranet-connectivity:app=firewall  pools 172\\.31\\.41\\.0/24  routes 10\\.60\\.0\\.0/16\\n    nsm0 172\\.31\\.40\\.\\d+/32 ─\\[KERNEL veth nsm0 · UP\\]─▶ secure-intranet-connectivity\\.cni-${seed.vpn.containerId} in ${seed.vpn.netns.name} `))
  t.match(text.stdout, new RegExp(`\\nchains\\n  sec/client ─▶ sec/firewall ─▶ ${seed.vpn.netns.name}\\n$`))
  t.match(text.stdout, /  secure-intranet-connectivity \(IP\): 2 endpoints, 2 connections\n    match app=firewall -> app=vpn-gateway\n    match \* -> app=firewall\n/)

  const json = nsmctl(mesh.socket, 'topology', '-o', 'json')
  t.equal(json.code, 0, json.stderr)
  t.notMatch(json.stdout, /token/i, 'path segment tokens are not shown')
  const topo = JSON.parse(json.stdout) as Topology
  t.same(topo.pods.map((p) => p.name), ['sec/client', 'sec/firewall', seed.vpn.netns.name])
  t.same(topo.pods.map((p) => p.id), [seed.client, seed.firewall, seed.vpn].map((p) => `node-a|${p.netns.path}`))
  const c = topo.connections.find((x) => x.id === clientId)
  t.match(c, {
    service: 'secure-intranet-connectivity',
    state: 'UP',
    half: 'local',
    clientPod: `node-a|${seed.client.netns.path}`,
    endpoint: `secure-intranet-connectivity.cni-${seed.firewall.containerId}`,
    endpointPod: `node-a|${seed.firewall.netns.path}`,
    mechanism: { type: 'KERNEL', cls: 'LOCAL', summary: 'KERNEL veth nsm0' },
    ifname: 'nsm0',
    mtu: 1500,
    labels: { podName: 'client', namespace: 'sec', app: 'web' },
    attachment: { network: 'nsm-net', containerId: seed.client.containerId, ifname: 'eth0', netns: seed.client.netns.path },
  })
  t.match(c?.srcAddresses, [/^172\.31\.41\.\d+\/32$/])
  t.same(c?.path.map((s) => s.name), ['node-a'])
  t.same(topo.chains, [[seed.client, seed.firewall, seed.vpn].map((p) => `node-a|${p.netns.path}`)])

  const dot = nsmctl(mesh.socket, 'topology', '-o', 'dot')
  t.equal(dot.code, 0, dot.stderr)
  t.match(dot.stdout, /^digraph nsm \{\n  rankdir=LR;\n/)
  t.match(dot.stdout, /\n\}\n$/)
  t.match(dot.stdout, /subgraph "cluster_0" \{\n    label="node node-a \(this agent\)";/)
  const edges = dot.stdout.split('\n').filter((l) => /^  "pod:[^"]+" -> "ep:[^"]+" \[label=/.test(l))
  t.equal(edges.length, 2, 'one edge per connection')
  t.match(dot.stdout, new RegExp(`"pod:node-a\\|${seed.client.netns.path}" -> "ep:secure-intranet-connectivity\\.cni-${seed.firewall.containerId}" \\[label="nsm0 KERNEL veth nsm0\\\\nUP 172\\.31\\.41\\.\\d+/32 -> 172\\.31\\.41\\.\\d+/32", tooltip="${clientId}"\\];`))
  t.equal((dot.stdout.match(/\{/g) ?? []).length, (dot.stdout.match(/\}/g) ?? []).length, 'braces balance')

  await seed.del(seed.client)
  const after = JSON.parse(nsmctl(mesh.socket, 'topology', '-o', 'json').stdout) as Topology
  t.same(after.connections.map((x) => x.id), [firewallId], 'the client\'s connection is gone after its DEL')
  t.notMatch(nsmctl(mesh.socket, 'topology').stdout, clientId)
  t.notMatch(nsmctl(mesh.socket, 'topology', '-o', 'dot').stdout, clientId)
})

t.test('usage: -o dot is for topology only; topology takes no arguments', async (t) => {
  const r = nsmctl('/nonexistent.sock', 'get', 'services', '-o', 'dot')
  t.equal(r.code, 2)
  t.match(r.stderr, '--output dot: only for topology')
  const extra = nsmctl('/nonexistent.sock', 'topology', 'more')
  t.equal(extra.code, 2)
  t.match(extra.stderr, 'topology: expects no arguments')
  const down = nsmctl('/nonexistent.sock', 'topology')
  t.equal(down.code, 3, 'an unreachable agent is exit 3')
})
