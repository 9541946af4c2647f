// Issue 12 item 2 through the CNI plugin: a pod on n1 whose annotation asks for a service served only on
// n2 gets a VXLAN interface from dist/nsm ADD (n1's agent forwards to n2's), CHECK verifies both halves
// (the far one by asking n2's agent: a frozen n2 fails CHECK naming it), and DEL removes both.
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { linkNames, makeNetns, RUN, sh } from '../lib/netns'
import { makeMeshBed, registerEndpointOn, registerService, seenEverywhere } from '../lib/mesh-bed'
import { stageNsm, resultOf } from './nsm-fixture'
import { execPlugin } from '../conformance/exec'

t.setTimeout(120_000)

t.test('ADD, CHECK and DEL of a pod whose endpoint is on another node', async (t) => {
  const mesh = await makeMeshBed(t, 2)
  const [n1, n2] = mesh.nodes
  if (n1 === undefined || n2 === undefined) throw new Error('two nodes')
  const svc = `cni-${RUN}`
  await registerService(n1, svc)
  const ep = makeNetns(t, 'ep')
  await registerEndpointOn(n2, { name: `e-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: ['172.31.11.0/24'], routes: ['10.61.0.0/16'] })
  t.ok(await seenEverywhere(mesh, [`e-${RUN}`]))
  const binDir = await stageNsm(t)
  const pods = join(n1.dir, 'pods')
  mkdirSync(pods, { recursive: true })
  writeFileSync(join(pods, 'default_far.json'), JSON.stringify({ labels: {}, annotations: { 'networkservicemesh.io': `kernel://${svc}/nsm-far` } }))
  const pod = makeNetns(t, 'p')
  const conf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket: n1.agent.socket, ...extra })
  const call = { containerId: `far-${RUN}`, netns: pod.path, ifname: 'eth0', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=far', path: binDir }
  const cni = (command: string, stdin: unknown) => execPlugin(join(binDir, 'nsm'), { ...call, command, stdin })
  const add = await cni('ADD', conf({ prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } }))
  const res = resultOf(add)
  t.teardown(() => cni('DEL', conf({ prevResult: res })).then(() => undefined))
  t.ok(res.interfaces?.some((i) => i.name === 'nsm-far' && i.sandbox === pod.path), 'the result names the interface in the pod')
  t.match(sh('ip', ['-n', pod.name, '-d', 'link', 'show', 'nsm-far']), /vxlan id \d+/, 'a VXLAN interface')
  t.ok(res.routes?.some((r) => r.dst === '10.61.0.0/16'), "the endpoint's route is in the result")
  const dst = String(res.routes?.find((r) => r.dst === '10.61.0.0/16')?.gw ?? '')
  t.not(dst, '', `the route goes via the endpoint's address: ${JSON.stringify(res.routes)}`)
  t.match(sh('ip', ['netns', 'exec', pod.name, 'ping', '-c', '1', '-W', '2', dst]), / 0% packet loss/, 'traffic to the endpoint on n2')

  const check = await cni('CHECK', conf({ prevResult: res }))
  t.equal(check.exitCode, 0, `CHECK passes: ${check.stdout}${check.stderr}`)
  // n2's agent frozen (its datapath keeps flowing): CHECK cannot confirm the far half, and says so.
  process.kill(n2.agent.pid, 'SIGSTOP')
  let frozen
  try {
    frozen = await cni('CHECK', conf({ prevResult: res }))
  } finally {
    process.kill(n2.agent.pid, 'SIGCONT')
  }
  t.not(frozen.exitCode, 0, 'CHECK fails while the far agent cannot answer')
  t.match(frozen.stdout, /node n2/, `the error names the node: ${frozen.stdout}`)

  const del = await cni('DEL', conf({ prevResult: res }))
  t.equal(del.exitCode, 0, del.stderr)
  t.same(linkNames(pod.name), ['lo'], 'the client half is gone')
  t.same(linkNames(ep.name), ['lo'], "DEL on n1 removed n2's half too")
})
