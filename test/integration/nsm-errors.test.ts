// dist/nsm's error codes (ARCHITECTURE §11) exec'd as a runtime does, each with "nothing changed" checked (pod
// netns links, the agent's connections and endpoints): agent down 100 naming the socket, no endpoint 101,
// pool exhausted 102, netns outside the agent's allowlist 103, memif 104 (vfio without a VF: 7), bad config 7 naming the
// field; DEL with the agent down succeeds (documented in cni/nsm/del.ts); GC and STATUS.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { execPlugin } from '../conformance/exec'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { linkNames, makeNetns, sh } from '../lib/netns'
import { resultOf, stageNsm, startMesh, WEB } from './nsm-fixture'

// No memif forwarder here: a memif request is then a mechanism this agent does not serve (104).
const mesh = await startMesh(t, { agentArgs: ['--memif-forwarder', 'none'] })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.3.0/24'] })

type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]

async function unchanged(t: TapTest, pod: { name: string }, f: () => Promise<void>): Promise<void> {
  const before = { pod: linkNames(pod.name), ep: linkNames(ep.name), conns: await mesh.connectionIds(), eps: await mesh.endpointNames() }
  await f()
  t.same({ pod: linkNames(pod.name), ep: linkNames(ep.name), conns: await mesh.connectionIds(), eps: await mesh.endpointNames() }, before, 'nothing changed')
}

t.test('the agent is down: ADD/CHECK/GC 100 naming the socket, STATUS 50, DEL succeeds with a warning', async (t) => {
  const bin = await stageNsm(t)
  const pod = makeNetns(t, 'p')
  const dir = mkdtempSync(join(tmpdir(), 'nsm-nosock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const socket = join(dir, 'agent.sock')
  const conf = { cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket, networkService: WEB }
  const call = (command: string, extra: Record<string, unknown> = {}) =>
    execPlugin(join(bin, 'nsm'), { command, containerId: 'down-1', netns: pod.path, ifname: 'net1', path: bin, stdin: { ...conf, ...extra } })
  const add = await call('ADD')
  t.equal(add.json?.code, 100, add.stdout)
  t.match(String(add.json?.msg), socket)
  t.equal((await call('CHECK', { prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } })).json?.code, 100)
  t.equal((await call('GC', { 'cni.dev/valid-attachments': [] })).json?.code, 100)
  const st = await call('STATUS')
  t.equal(st.json?.code, 50, st.stdout)
  t.match(String(st.json?.msg), socket)
  const del = await call('DEL')
  t.equal(del.exitCode, 0, 'DEL succeeds: the agent closes connections of vanished pods when it runs again')
  t.match(del.stderr, /nsm agent unreachable at .*agent\.sock \(ENOENT\)/)
  // A socket file nobody listens on (ECONNREFUSED) is the same.
  const { createServer } = await import('node:net')
  const srv = createServer()
  await new Promise<void>((res) => srv.listen(socket, res))
  await new Promise<void>((res) => srv.close(() => res()))
  writeFileSync(socket, '')
  t.equal((await call('ADD')).json?.code, 100)
  t.same(linkNames(pod.name), ['lo'])
})

t.test('no endpoint 101, pool exhausted 102, bad netns 103, mechanism 104', async (t) => {
  const pod = makeNetns(t, 'p')
  await unchanged(t, pod, async () => {
    const none = await mesh.cni({ command: 'ADD', containerId: 'e101', netns: pod.path, ifname: 'net1', stdin: mesh.conf({ networkService: 'unknown-service' }) })
    t.equal(none.json?.code, 101, none.stdout)
    t.match(String(none.json?.msg), /unknown-service/)
    for (const scheme of ['memif']) {
      const m = await mesh.cni({ command: 'ADD', containerId: `e104${scheme}`, netns: pod.path, ifname: 'net1', stdin: mesh.conf({ networkService: `${scheme}://${WEB}` }) })
      t.equal(m.json?.code, 104, `${scheme}: ${m.stdout}`)
    }
    // VFIO is served (the SR-IOV mechanism): without a VF to give, the request is invalid, naming what is missing.
    const vfio = await mesh.cni({ command: 'ADD', containerId: 'e7vfio', netns: pod.path, ifname: 'net1', stdin: mesh.conf({ networkService: `vfio://${WEB}` }) })
    t.equal(vfio.json?.code, 7, `vfio: ${vfio.stdout}`)
    t.match(String(vfio.json?.msg), /parameters\.pciAddress: is required for a VFIO mechanism/)
  })

  // A netns outside the agent's allowlist: a real namespace bind-mounted under a temp dir.
  const dir = mkdtempSync(join(tmpdir(), 'nsm-netns-'))
  const outside = join(dir, 'ns')
  writeFileSync(outside, '')
  sh('mount', ['--bind', pod.path, outside])
  t.teardown(() => {
    sh('umount', [outside])
    rmSync(dir, { recursive: true, force: true })
  })
  await unchanged(t, pod, async () => {
    const b = await mesh.cni({ command: 'ADD', containerId: 'e103', netns: outside, ifname: 'net1', stdin: mesh.conf({ networkService: WEB }) })
    t.equal(b.json?.code, 103, b.stdout)
    t.match(String(b.json?.msg), /allow/)
  })

  // An endpoint whose pool holds one pair: the second client gets 102.
  const small = makeNetns(t, 's')
  await mesh.endpoint({ name: 'tiny-ep', netns: small.path, service: 'secure-intranet-connectivity', labels: { app: 'firewall' }, pools: ['172.30.4.0/31'] })
  t.teardown(async () => {
    await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'tiny-ep' }).catch(() => undefined)
  })
  const conf = mesh.conf({ networkService: 'secure-intranet-connectivity' })
  const first = resultOf(await mesh.cni({ command: 'ADD', containerId: 'e102a', netns: pod.path, ifname: 'net1', stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: 'e102a', netns: pod.path, ifname: 'net1', stdin: conf }).then(() => undefined))
  t.ok(first)
  const other = makeNetns(t, 'p')
  await unchanged(t, other, async () => {
    const ex = await mesh.cni({ command: 'ADD', containerId: 'e102b', netns: other.path, ifname: 'net1', stdin: conf })
    t.equal(ex.json?.code, 102, ex.stdout)
  })
})

t.test('bad configuration: 7 naming the field, nothing changed', async (t) => {
  const pod = makeNetns(t, 'p')
  await unchanged(t, pod, async () => {
    for (const [extra, field] of [
      [{ socket: 'relative/agent.sock' }, /^socket: /],
      [{ agentSocket: 7 }, /^agentSocket: /],
      [{ networkService: 'Not A Service' }, /^networkService\[0\]: /],
      [{ networkService: 42 }, /^networkService: /],
      [{ networkService: WEB, networkServices: [WEB] }, /^networkServices: /],
      [{ networkServices: [WEB, ''] }, /^networkServices\[1\]: /],
      [{ networkService: WEB, labels: { 'bad key!': 'x' } }, /^labels\.bad key!: /],
      [{ networkService: WEB, labels: { app: 'no spaces allowed' } }, /^labels\.app: /],
      [{ networkService: WEB, timeoutMs: -1 }, /^timeoutMs: /],
      [{ networkService: `${WEB},${WEB}` }, /^networkService: names 2 services/],
      [{}, /^networkService: no network service/],
    ] as const) {
      const out = await mesh.cni({ command: 'ADD', containerId: 'bad-conf', netns: pod.path, ifname: 'net1', stdin: mesh.conf(extra) })
      t.equal(out.json?.code, 7, `${JSON.stringify(extra)}: ${out.stdout}`)
      t.match(String(out.json?.msg), field)
    }
    const two = await mesh.cni({ command: 'ADD', containerId: 'bad-conf', netns: pod.path, ifname: 'net1', stdin: mesh.conf({ networkServices: [WEB, 'secure-intranet-connectivity'] }) })
    t.equal(two.json?.code, 7, 'attachment mode with two services and none named for CNI_IFNAME')
  })
})

t.test('GC closes the attachments the runtime no longer lists', async (t) => {
  const conf = mesh.conf({ networkService: WEB })
  const pods = [makeNetns(t, 'p'), makeNetns(t, 'p')]
  for (const [i, p] of pods.entries()) resultOf(await mesh.cni({ command: 'ADD', containerId: `gc-${i}`, netns: p.path, ifname: 'net1', stdin: conf }))
  t.teardown(async () => {
    for (const [i, p] of pods.entries()) await mesh.cni({ command: 'DEL', containerId: `gc-${i}`, netns: p.path, ifname: 'net1', stdin: conf })
  })
  const other = await mesh.cni({ command: 'GC', stdin: { ...conf, name: 'other-net', 'cni.dev/valid-attachments': [] } })
  t.equal(other.exitCode, 0, 'GC of another network')
  t.same(await mesh.connectionIds(), ['gc-0-net1', 'gc-1-net1'], 'touches nothing of this network')
  const gc = await mesh.cni({ command: 'GC', stdin: { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'gc-0', ifname: 'net1' }] } })
  t.equal(gc.exitCode, 0, gc.stdout)
  t.same(await mesh.connectionIds(), ['gc-0-net1'], 'gc-1 closed, gc-0 kept')
  t.same(linkNames(pods[1]?.name), ['lo'])
  t.ok(linkNames(pods[0]?.name).includes('net1'))
  const old = await mesh.cni({ command: 'GC', stdin: { ...conf, cniVersion: '1.0.0', 'cni.dev/valid-attachments': [] } })
  t.equal(old.json?.code, 1, 'GC needs 1.1.0')
  t.same(await mesh.connectionIds(), ['gc-0-net1'])
})

t.test('STATUS: 0 when the agent is ready', async (t) => {
  const out = await mesh.cni({ command: 'STATUS', stdin: mesh.conf() })
  t.equal(out.exitCode, 0, out.stdout)
  t.equal(out.stdout, '')
})

t.test('a pod named in CNI_ARGS that the agent cannot find: explicit services still attach; annotations cannot (11)', async (t) => {
  const pod = makeNetns(t, 'p')
  const args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=unknown-pod'
  await unchanged(t, pod, async () => {
    const out = await mesh.cni({ command: 'ADD', containerId: 'nopod', netns: pod.path, ifname: 'eth0', args, stdin: { ...mesh.conf(), prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } } })
    t.equal(out.json?.code, 11, out.stdout)
    t.match(String(out.json?.msg), /unknown-pod/)
  })
  const conf = mesh.conf({ networkService: WEB })
  resultOf(await mesh.cni({ command: 'ADD', containerId: 'nopod2', netns: pod.path, ifname: 'net1', args: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=podman;K8S_POD_NAME=Not_A_K8s_Name', stdin: conf }))
  t.ok(linkNames(pod.name).includes('net1'))
  t.equal((await mesh.cni({ command: 'DEL', containerId: 'nopod2', netns: pod.path, ifname: 'net1', stdin: conf })).exitCode, 0)
})
