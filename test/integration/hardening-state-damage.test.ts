// Damaged state never keeps the node without an agent: each damage below is made to a stopped agent's
// state dir, and the next start is ready anyway; its log (level error) names the file and why, the
// damaged file is kept aside as <file>.damaged-<time>, and every record that could still be read is kept.
import t, { type Test } from 'tap'
import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { NetworkServiceEndpointRegistryDefinition, NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { collect, startAgent, tempDir, type RunningAgent } from '../lib/agent'
import { ConnectionEventType, MonitorConnectionDefinition, type ConnectionEvent } from '../../proto/gen/networkservice/connection'
import { makeNetns, type TestNetns } from '../lib/netns'
import { endpointRegistration, kernelRequest, seedServices, serviceMessage } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}


async function registerEndpoint(agent: RunningAgent, name: string, fw: TestNetns): Promise<void> {
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name, netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'] }))
}

async function connectionIds(agent: RunningAgent): Promise<string[]> {
  // The first event of MonitorConnections is the table's initial state.
  const events = collect<ConnectionEvent>((on, signal) =>
    agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, on, { signal }),
  )
  const initial = await events.until((e) => e.type === ConnectionEventType.INITIAL_STATE_TRANSFER)
  events.cancel()
  return Object.keys(initial.connections).sort()
}

async function endpointNames(agent: RunningAgent): Promise<string[]> {
  const found: string[] = []
  await agent.client.stream(NetworkServiceEndpointRegistryDefinition, NetworkServiceEndpointRegistryDefinition.methods.find, { networkServiceEndpoint: undefined, watch: false }, (r) =>
    found.push(r.networkServiceEndpoint?.name ?? ''),
  )
  return found.sort()
}

async function serviceNames(agent: RunningAgent): Promise<string[]> {
  const found: string[] = []
  await agent.client.stream(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.find, { networkService: undefined, watch: false }, (r) =>
    found.push(r.networkService?.name ?? ''),
  )
  return found.sort()
}

/** The damage report: an error line naming `file`, and the quarantined copy beside it. */
function assertQuarantined(t: Test, agent: RunningAgent, file: string, reason: RegExp): void {
  const line = agent.logs.find((l) => l.level === 'error' && l.file === file)
  t.ok(line !== undefined, `an error line names ${basename(file)}`)
  t.match(String(line?.reason), reason, 'and says why')
  const aside = readdirSync(dirname(file)).filter((n) => n.startsWith(`${basename(file)}.damaged-`))
  t.equal(aside.length, 1, `${basename(file)} kept aside`)
  t.equal(line?.quarantined, join(dirname(file), aside[0] ?? ''), 'the log names the copy')
  t.equal(agent.stderr(), '', 'no stack trace')
}

t.test('damaged state: the agent starts, reports, quarantines and keeps what can be read', { timeout: 240_000 }, async (t) => {
  const fw = makeNetns(t, 'fw')
  const client = makeNetns(t, 'cl')
  let n = 0
  const connect = async (agent: RunningAgent): Promise<string> => {
    n += 1
    const id = `dmg-${n}`
    await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, client.path, `nsm${n}`))
    return id
  }
  // A fresh state dir per case, with two services, two endpoints, c1 in the snapshot and c2 in the journal.
  const prepare = async (t: Teardown): Promise<{ dir: string; state: string; snap: string; journaled: string }> => {
    const dir = tempDir(t)
    const a = await startAgent(t, { dir })
    for (const s of seedServices()) await a.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
    await registerEndpoint(a, 'firewall-1', fw)
    await registerEndpoint(a, 'firewall-2', fw)
    const snap = await connect(a)
    await a.stop('SIGTERM') // the snapshot holds the first connection
    const b = await startAgent(t, { dir })
    const journaled = await connect(b)
    await b.stop('SIGKILL') // the journal holds the second
    return { dir, state: join(dir, 'state'), snap, journaled }
  }
  const services = ['secure-intranet-connectivity']

  t.test('empty connections.json: the journal is still read', async (t) => {
    const p = await prepare(t)
    writeFileSync(join(p.state, 'connections.json'), '')
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, join(p.state, 'connections.json'), /empty/)
    t.same(await connectionIds(agent), [p.journaled], 'the journaled connection is kept')
    t.same(await endpointNames(agent), ['firewall-1', 'firewall-2'])
  })

  t.test('cut connections.json: the records before the cut and the journal are read', async (t) => {
    const p = await prepare(t)
    // A third connection, then a graceful stop: the snapshot holds all three; cut it inside the third.
    const c = await startAgent(t, { dir: p.dir })
    const third = await connect(c)
    await c.stop('SIGTERM')
    const file = join(p.state, 'connections.json')
    const text = readFileSync(file, 'utf8')
    writeFileSync(file, text.slice(0, text.indexOf(`"${third}"`) + 4))
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /JSON.*records before the damage kept/)
    t.same(await connectionIds(agent), [p.snap, p.journaled].sort())
  })

  t.test('one wrong byte in a journal line: that line is dropped, the others kept', async (t) => {
    const p = await prepare(t)
    // Two more connections journaled in one run: damage the first one's line only.
    const c = await startAgent(t, { dir: p.dir })
    const third = await connect(c)
    const fourth = await connect(c)
    await c.stop('SIGKILL')
    const file = join(p.state, 'connections.json.journal')
    const raw = readFileSync(file)
    const at = raw.indexOf(`"id":"${third}"`)
    t.ok(at > 0, 'the line is there')
    raw[at + 7] = 'X'.charCodeAt(0) // "id":"dXg-..": still JSON, wrong content
    writeFileSync(file, raw)
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /line 1: checksum mismatch/)
    t.same(await connectionIds(agent), [p.snap, p.journaled, fourth].sort(), 'the damaged line dropped, the line after it kept')
  })

  t.test('a journal truncated to zero is reported', async (t) => {
    const p = await prepare(t)
    truncateSync(join(p.state, 'connections.json.journal'), 0)
    const agent = await startAgent(t, { dir: p.dir })
    const line = agent.logs.find((l) => l.level === 'error' && l.file === join(p.state, 'connections.json.journal'))
    t.match(line, { reason: /truncated to 0 bytes/ }, 'the loss is logged, naming the journal')
    t.same(await connectionIds(agent), [p.snap])
  })

  t.test('unknown format version of connections.json', async (t) => {
    const p = await prepare(t)
    const file = join(p.state, 'connections.json')
    writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), version: 7 }))
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /version 7/)
    t.same(await connectionIds(agent), [p.journaled])
  })

  t.test('cut endpoints.json: the endpoints before the cut are kept', async (t) => {
    const p = await prepare(t)
    const file = join(p.state, 'registry', 'endpoints.json')
    const text = readFileSync(file, 'utf8')
    writeFileSync(file, text.slice(0, text.indexOf('"firewall-2"') + 5))
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /JSON/)
    t.same(await endpointNames(agent), ['firewall-1'])
    t.same(await serviceNames(agent), services)
    t.same(await connectionIds(agent), [p.snap, p.journaled].sort())
  })

  t.test('empty services.json', async (t) => {
    const p = await prepare(t)
    const file = join(p.state, 'registry', 'services.json')
    writeFileSync(file, '')
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /empty/)
    t.same(await serviceNames(agent), [])
    t.same(await endpointNames(agent), ['firewall-1', 'firewall-2'])
  })

  t.test('a stored invalid name: that record is dropped, the others kept', async (t) => {
    const p = await prepare(t)
    const file = join(p.state, 'registry', 'endpoints.json')
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { items: Record<string, { endpoint: { name: string } }> }
    const bad = stored.items['firewall-2'] as { endpoint: { name: string } }
    bad.endpoint.name = 'Fire Wall!'
    stored.items = { ...stored.items, 'Fire Wall!': bad }
    delete stored.items['firewall-2']
    writeFileSync(file, JSON.stringify(stored))
    const agent = await startAgent(t, { dir: p.dir })
    assertQuarantined(t, agent, file, /Fire Wall!/)
    t.same(await endpointNames(agent), ['firewall-1'])
    t.ok(existsSync(file), 'a fresh endpoints.json holds the kept records')
  })
})
