// Hardening, the agent as a process: SIGKILLed while 20 requests are being built, then restarted. The
// restart's reconciliation sweeps every link tagged by the agent whose connection was never journaled,
// so no tagged link without a record remains, and the same 20 requests then succeed (nothing left over
// holds an interface name or an address pair).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { State } from '../../proto/gen/networkservice/connection'
import type { AgentClient } from '../../agent/client/client'
import { linkTag } from '../../agent/mechanisms/index'
import { startAgent } from '../lib/agent'
import { ip, linkNames, makeNetns, type TestNetns } from '../lib/netns'
import { kernelRequest, seedAgent } from '../lib/mesh'

async function setup(client: AgentClient, fw: TestNetns): Promise<void> {
  await seedAgent(client, fw.path, ['172.16.0.0/24'])
}

/** Tags (ifalias) of the links of a namespace that carry one of ours. */
function tags(ns: string): string[] {
  const links = JSON.parse(ip(ns, '-j', '-d', 'link', 'show')) as Array<{ ifalias?: string }>
  return links.flatMap((l) => (l.ifalias?.startsWith('nsm-cni:') === true ? [l.ifalias] : []))
}

t.test('SIGKILL during 20 concurrent requests; after the restart no tagged link lacks a record, and requests succeed', async (t) => {
  const fw = makeNetns(t, 'fw')
  const clients = Array.from({ length: 5 }, () => makeNetns(t, 'c'))
  const first = await startAgent(t)
  await setup(first.client, fw)
  const reqs = Array.from({ length: 20 }, (_, i) => kernelRequest(`k-${i}`, (clients[i % 5] as TestNetns).path, `nsm${Math.floor(i / 5)}`))
  const inflight = reqs.map((r) => first.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, r).catch(() => undefined))
  // Kill as soon as the first datapaths appear: some built and journaled, some built only, some not yet.
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && linkNames(fw.name).length < 4) await new Promise((r) => setTimeout(r, 2))
  await first.stop('SIGKILL')
  await Promise.all(inflight)
  const builtBefore = tags(fw.name).length

  const second = await startAgent(t, { dir: first.dir })
  const stored = JSON.parse(readFileSync(join(second.stateDir, 'connections.json'), 'utf8')) as { connections: Array<{ connection: { id: string } }> }
  const journaled = new Set(stored.connections.map((c) => linkTag(c.connection.id)))
  const left = [fw, ...clients].flatMap((ns) => tags(ns.name))
  t.same(left.filter((tag) => !journaled.has(tag)), [], `no tagged link without a record (${builtBefore} endpoint links before, ${journaled.size} journaled)`)
  const reconciled = second.logs.find((l) => l.msg === 'reconciled connections with the kernel')
  t.ok(reconciled !== undefined, `reconciled: ${JSON.stringify(reconciled)}`)

  const conns = await Promise.all(reqs.map((r) => second.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, r)))
  t.ok(
    conns.every((c) => c.state === State.UP),
    'all 20 requests succeed after the restart',
  )
  const addrs = conns.flatMap((c) => c.context?.ipContext?.srcIpAddrs ?? [])
  t.equal(new Set(addrs).size, 20, 'no address twice')
  await Promise.all(conns.map((c) => second.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)))
  for (const ns of [fw, ...clients]) t.same(linkNames(ns.name), ['lo'], `${ns.name} is clean`)
  await second.stop('SIGTERM')
})
