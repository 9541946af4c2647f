// The nsm handlers in-process through pluginMain (the same path as the binary, with injected io), against
// the real agent: ADD, CHECK and DEL, the result equal to what the bundled binary prints for the same
// kind of call.
import t from 'tap'
import { nsmHandlers } from '../../cni/nsm/handlers'
import { callInProcess } from '../conformance/exec'
import { linkNames, makeNetns } from '../lib/netns'
import { resultOf, startMesh, WEB } from './nsm-fixture'

const mesh = await startMesh(t)
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.5.0/24'] })

t.test('ADD, CHECK, DEL in-process', async (t) => {
  const pod = makeNetns(t, 'p')
  const conf = mesh.conf({ networkService: WEB })
  const call = { containerId: `inproc-${pod.name}`, netns: pod.path, ifname: 'net1', path: '/usr/lib/cni' }
  const res = resultOf(await callInProcess(nsmHandlers, { ...call, command: 'ADD', stdin: conf }))
  t.match(res, { cniVersion: '1.1.0', interfaces: [{ name: 'net1', sandbox: pod.path, mtu: 1500 }], ips: [{ address: /^172\.30\.5\.\d+\/32$/, interface: 0 }] })
  t.ok(linkNames(pod.name).includes('net1'))
  const check = await callInProcess(nsmHandlers, { ...call, command: 'CHECK', stdin: { ...conf, prevResult: res } })
  t.equal(check.exitCode, 0, check.stdout)
  const twice = await callInProcess(nsmHandlers, { ...call, command: 'ADD', stdin: conf })
  t.equal(twice.json?.code, 106)
  const del = await callInProcess(nsmHandlers, { ...call, command: 'DEL', stdin: conf })
  t.equal(del.exitCode, 0)
  t.same(linkNames(pod.name), ['lo'])
  t.same(await mesh.connectionIds(), [])
  // Same call through the binary: the same shape.
  const bin = resultOf(await mesh.cni({ ...call, command: 'ADD', stdin: conf }))
  t.same(Object.keys(bin).sort(), Object.keys(res).sort())
  t.equal((await mesh.cni({ ...call, command: 'DEL', stdin: conf })).exitCode, 0)
})
