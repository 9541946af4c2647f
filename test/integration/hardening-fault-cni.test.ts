// Hardening, the fault test of the issue: the agent SIGKILLed during 50 concurrent CNI ADDs through
// dist/nsm (as a runtime execs them), restarted on the same state dir, every pod DEL'd: no connection,
// no link in any pod or the endpoint, and then 50 new ADDs all succeed with 50 distinct addresses, and
// their DELs leave nothing either.
import t from 'tap'
import { join } from 'node:path'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { execPlugin, type CniOutcome } from '../conformance/exec'
import { startAgent, tempDir, type RunningAgent } from '../lib/agent'
import { endpointRegistration } from '../lib/mesh'
import { linkNames, makeNetns, type TestNetns } from '../lib/netns'
import { stageNsm, WEB } from './nsm-fixture'

const N = 50
const binDir = await stageNsm(t)
const dir = tempDir(t, 'nsm-fault-')
const podInfo = tempDir(t, 'nsm-fault-pods-')
const args = ['--pod-info-dir', podInfo, '--node-name', 'node-a']
const ep = makeNetns(t, 'ep')
const pods: TestNetns[] = Array.from({ length: N }, () => makeNetns(t, 'p'))

const conf = (agent: RunningAgent) => ({ cniVersion: '1.0.0', name: 'fault-net', type: 'nsm', socket: agent.socket, networkService: WEB })
const cni = (agent: RunningAgent, command: string, i: number, round: string): Promise<CniOutcome> =>
  execPlugin(join(binDir, 'nsm'), { command, containerId: `${round}-${i}`, netns: (pods[i] as TestNetns).path, ifname: 'eth0', path: binDir, stdin: conf(agent) })
const connections = async (agent: RunningAgent): Promise<number> => (await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})).connections
const leftLinks = (): string[] => [ep, ...pods].flatMap((p) => linkNames(p.name).filter((l) => l !== 'lo').map((l) => `${p.name}:${l}`))

t.test(`SIGKILL during ${N} concurrent ADDs, restart, DEL all: nothing left, and the next ${N} ADDs succeed`, async (t) => {
  const first = await startAgent(t, { dir, args })
  await first.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: WEB, payload: 'IP', matches: [], pathIds: [] })
  await first.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: 'fault-ep', service: WEB, netns: ep.path, labels: {}, pools: ['172.28.0.0/16'] }))

  const adds = pods.map((_, i) => cni(first, 'ADD', i, 'a'))
  // Kill once some datapaths exist: some ADDs answered, some built but not journaled, some not started.
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline && linkNames(ep.name).length < 1 + N / 5) await new Promise((r) => setTimeout(r, 5))
  await first.stop('SIGKILL')
  const answered = await Promise.all(adds)
  const ok = answered.filter((o) => o.exitCode === 0).length
  t.comment(`${ok} of ${N} ADDs answered success before the kill, ${linkNames(ep.name).length - 1} endpoint-side links at the kill`)
  for (const o of answered.filter((x) => x.exitCode !== 0)) t.ok([11, 100].includes(Number(o.json?.code)), `a failed ADD is 11 or 100, not something else: ${o.stdout.trim()}`)

  const second = await startAgent(t, { dir, args })
  const dels = await Promise.all(pods.map((_, i) => cni(second, 'DEL', i, 'a')))
  t.same(dels.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], 'every DEL succeeds')
  t.equal(await connections(second), 0, 'no connection left in the agent')
  t.same(leftLinks(), [], 'no link left in any pod or the endpoint')

  const again = await Promise.all(pods.map((_, i) => cni(second, 'ADD', i, 'b')))
  t.same(again.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], `the next ${N} ADDs succeed`)
  const addresses = again.map((o) => String((o.json?.ips as Array<{ address: string }> | undefined)?.[0]?.address))
  t.equal(new Set(addresses).size, N, `${N} distinct addresses`)
  const dels2 = await Promise.all(pods.map((_, i) => cni(second, 'DEL', i, 'b')))
  t.same(dels2.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [])
  t.equal(await connections(second), 0)
  t.same(leftLinks(), [])
})
