// The agent's logs (ARCHITECTURE §13): JSON lines from pino with `time`, `level` (by name), `msg`; the lines
// logged inside a CNI call, a Request, a Close or a heal carry its connection, service and pod; --log-level
// filters; --log-format pretty prints readable lines instead.
import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { agentCommand, startAgent, tempDir } from '../lib/agent'
import { reach } from '../lib/cluster'
import { kernelRequest, SEED, seedAgent } from '../lib/mesh'
import { makeNetns, RUN } from '../lib/netns'
import { stageNsm, resultOf } from './nsm-fixture'
import { execPlugin } from '../conformance/exec'

t.setTimeout(60_000)

type Line = Record<string, unknown>

t.test('JSON lines: call fields on every line of a CNI call, a Request, a Close and a heal', async (t) => {
  const fw = makeNetns(t, 'fw')
  const pod = makeNetns(t, 'pod')
  const cl = makeNetns(t, 'cl')
  const agent = await startAgent(t, { args: ['--log-level', 'debug'] })
  await seedAgent(agent.client, fw.path, ['172.16.40.0/24'])
  for (const l of agent.logs) {
    t.match(l, { time: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, level: /^(debug|info|warn|error)$/, msg: String }, `a JSON line with time, level, msg: ${JSON.stringify(l)}`)
  }
  const binDir = await stageNsm(t)
  const conf = { cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket: agent.socket, networkService: SEED }
  const call = { containerId: `logs-${RUN}`, netns: pod.path, ifname: 'nsm0', args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-${RUN}`, path: binDir }
  const add = await execPlugin(join(binDir, 'nsm'), { ...call, command: 'ADD', stdin: conf })
  t.equal(add.exitCode, 0, add.stdout + add.stderr)
  const res = resultOf(add)
  const requested = agent.logs.find((l) => l.msg === 'connection requested')
  t.match(requested, { level: 'debug', pod: `shop/web-${RUN}`, service: SEED, connection: String, cni: 'ADD', containerId: `logs-${RUN}`, endpoint: 'firewall-1', mechanism: 'KERNEL' }, 'the Request inside the CNI ADD names its connection, service and pod')
  const del = await execPlugin(join(binDir, 'nsm'), { ...call, command: 'DEL', stdin: { ...conf, prevResult: res } })
  t.equal(del.exitCode, 0, del.stderr)
  t.match(agent.logs.find((l) => l.msg === 'connection closed'), { pod: `shop/web-${RUN}`, service: SEED, connection: requested?.connection, cni: 'DEL' }, 'the Close of the DEL too')
  t.match(agent.logs.find((l) => l.msg === 'DEL'), { level: 'info', pod: `shop/web-${RUN}`, cni: 'DEL', containerId: `logs-${RUN}` }, "the DEL's own line carries the pod")

  // An NSM client's Request (podName/namespace labels, as CNI calls set them) and a heal that finds no
  // other endpoint: the heal's lines carry the connection, service and pod as well.
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`lg-${RUN}`, cl.path, 'nsm0', { podName: 'api', namespace: 'shop' }))
  t.match(agent.logs.find((l) => l.msg === 'connection requested' && l.connection === conn.id), { pod: 'shop/api', service: SEED })
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: 'firewall-1' })
  await reach('the heal\'s log line', async () => agent.logs.some((l) => l.msg === 'heal: no replacement yet; the connection stays DOWN'))
  t.match(agent.logs.find((l) => l.msg === 'heal: no replacement yet; the connection stays DOWN'), { level: 'warn', connection: conn.id, service: SEED, pod: 'shop/api', err: { name: String, message: /firewall|endpoint/ } }, 'the heal line names the connection, service, pod and the error')
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  t.notOk(agent.logs.some((l) => 'raw' in l), 'every stdout line is JSON')
})

t.test('the default level (info) prints no debug line', async (t) => {
  const fw = makeNetns(t, 'fw')
  const cl = makeNetns(t, 'cl')
  const agent = await startAgent(t)
  await seedAgent(agent.client, fw.path, ['172.16.41.0/24'])
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`lv-${RUN}`, cl.path, 'nsm0'))
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  t.ok(agent.logs.some((l) => l.msg === 'ready' && l.level === 'info'))
  t.same(agent.logs.filter((l) => l.level === 'debug'), [], 'no debug line')
})

t.test('--log-format pretty: readable lines, no JSON', async (t) => {
  const dir = tempDir(t)
  const { cmd, args } = agentCommand()
  const child = spawn(cmd, [...args, '--socket', join(dir, 'agent.sock'), '--state-dir', join(dir, 'state'), '--log-format', 'pretty'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  await reach('the pretty ready line', async () => /\n/.test(out) && / INFO +ready /.test(out), 20_000)
  child.kill('SIGTERM')
  await new Promise((res) => child.on('exit', res))
  const lines = out.trim().split('\n')
  const ready = lines.find((l) => / ready /.test(l)) ?? ''
  t.match(ready, /^\d\d:\d\d:\d\d\.\d{3} INFO +ready socket=\S+agent\.sock stateDir=\S+ .*pid=\d+$/, `a readable ready line: ${ready}`)
  t.ok(lines.some((l) => / INFO +stopped$/.test(l)), 'the stop line too')
  for (const l of lines) t.throws(() => JSON.parse(l) as Line, `not JSON: ${l}`)
})
