// The agent's CNI service in-process (agent/cni CniService.run: what the socket does with a shim's frame),
// against an agent served by this test process over the real kernel: ADD, CHECK, a refused second ADD and
// DEL, and the same calls through the shim binary on the same socket giving the same answers. Also the
// frames themselves: a request the agent cannot decode gets no answer and changes nothing.
import t from 'tap'
import { createConnection } from 'node:net'
import { MAGIC, type ShimRequest } from '../../cni/nsm/frame'
import { callEnv, execPlugin, parseOut, stdinBytes, type CniCall } from '../conformance/exec'
import { linkNames, makeNetns } from '../lib/netns'
import { stageNsm, WEB } from './nsm-fixture'
import { startInProcessAgent } from './nsm-inprocess-agent'

const agent = await startInProcessAgent(t, { services: [WEB] })
const binDir = await stageNsm(t)
const ep = makeNetns(t, 'ep')
await agent.endpoint({ name: 'web-ep', netns: ep.path, service: WEB, labels: {}, pools: ['172.30.5.0/24'] })

const request = (c: CniCall): ShimRequest => {
  const env = callEnv(c)
  delete env.PATH
  return { env, stdin: stdinBytes(c.stdin) }
}
const inProcess = async (c: CniCall) => {
  const a = await agent.cni.run(request(c))
  return { ...a, json: parseOut(a.stdout) }
}

t.test('ADD, CHECK, a second ADD, DEL in-process; the shim binary answers the same', async (t) => {
  const pod = makeNetns(t, 'p')
  const conf = { cniVersion: '1.1.0', name: 'inproc', type: 'nsm', socket: agent.socket, networkService: WEB }
  const call = { containerId: `inproc-${pod.name}`, netns: pod.path, ifname: 'net1', path: '/usr/lib/cni' }
  const add = await inProcess({ ...call, command: 'ADD', stdin: conf })
  t.equal(add.exitCode, 0, add.stdout)
  t.match(add.json, { cniVersion: '1.1.0', interfaces: [{ name: 'net1', sandbox: pod.path, mtu: 1500 }], ips: [{ address: /^172\.30\.5\.\d+\/32$/, interface: 0 }] })
  t.ok(linkNames(pod.name).includes('net1'))
  const check = await inProcess({ ...call, command: 'CHECK', stdin: { ...conf, prevResult: add.json } })
  t.equal(check.exitCode, 0, check.stdout)
  const twice = await inProcess({ ...call, command: 'ADD', stdin: conf })
  t.equal(twice.json?.code, 106)
  t.match(twice.json?.msg, /already attached/)
  // The shim: the same refusal, byte for byte, and the DEL.
  const shimTwice = await execPlugin(`${binDir}/nsm`, { ...call, command: 'ADD', stdin: conf })
  t.equal(shimTwice.stdout, twice.stdout)
  t.equal(shimTwice.exitCode, 1)
  const del = await execPlugin(`${binDir}/nsm`, { ...call, command: 'DEL', stdin: conf })
  t.equal(del.exitCode, 0, del.stdout + del.stderr)
  t.same(linkNames(pod.name), ['lo'])
  t.same(agent.connectionIds(), [])
  const again = await inProcess({ ...call, command: 'DEL', stdin: conf })
  t.equal(again.exitCode, 0, 'DEL is idempotent')
})

t.test('a frame the agent cannot take is closed without an answer and changes nothing', async (t) => {
  const send = (bytes: Buffer): Promise<Buffer> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = []
      const s = createConnection(agent.socket, () => s.end(bytes))
      s.on('data', (c: Buffer) => chunks.push(c))
      s.on('error', () => undefined)
      s.on('close', () => resolve(Buffer.concat(chunks)))
    })
  const huge = Buffer.alloc(8)
  huge.writeUInt32BE(1 << 30, 0)
  t.equal((await send(Buffer.concat([MAGIC, huge]))).length, 0, 'a header larger than allowed')
  t.equal((await send(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).length, 0, 'neither HTTP/2 nor a shim frame')
  const bad = Buffer.alloc(8)
  bad.writeUInt32BE(3, 0)
  t.equal((await send(Buffer.concat([MAGIC, bad, Buffer.from('{{{')]))).length, 0, 'a header that is not JSON')
  t.same(agent.connectionIds(), [])
})
