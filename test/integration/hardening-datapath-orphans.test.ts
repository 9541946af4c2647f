// Hardening: veth pairs nobody owns (an agent killed between building a datapath and journaling it) are
// swept — at restart reconciliation and periodically — in the namespaces the agent knows, and never
// block later requests: an address pair the kernel shows in use makes the allocator move on instead of
// handing out the same pair again. A request in flight (built, not yet journaled) is never swept.
import t from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import type { Element } from '../../agent/pipeline/chain'
import { silentLogger } from '../../agent/server/log'
import { State } from '../../proto/gen/networkservice/connection'
import { linkNames, makeNetns, type TestNetns } from '../lib/netns'
import { kernelRequest, registerEndpoint, seedServices, serviceMessage, testContext } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const ALLOW = ['/var/run/netns/*']

async function openRegistry(t: Teardown): Promise<Registry> {
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: ALLOW, defaultTtlMs: 60_000 })
  t.teardown(() => registry.close())
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  return registry
}

function dataplane(t: Teardown, registry: Registry, opts: Partial<Parameters<typeof createDataplane>[0]> = {}): Dataplane {
  const dp = createDataplane({ registry, table: ConnectionTable.inMemory(), nodeName: 'node-1', netnsAllow: ALLOW, log: silentLogger, healPollMs: 50, ...opts })
  t.teardown(() => dp.stop())
  return dp
}

/** A datapath built and never journaled: what a SIGKILL between build and persist leaves. */
async function orphan(t: Teardown, registry: Registry, client: TestNetns, id: string, ifname = 'nsm0'): Promise<void> {
  const crashed = dataplane(t, registry)
  await crashed.handler.request(kernelRequest(id, client.path, ifname), testContext())
  await crashed.stop() // its table is lost with it; the links stay
}

const epLinks = (fw: TestNetns): string[] => linkNames(fw.name).filter((n) => n !== 'lo')

t.test('an orphan holding the lowest pair does not make later requests fail; restart reconcile sweeps it', async (t) => {
  const registry = await openRegistry(t)
  const fw = makeNetns(t, 'fw')
  const [c1, c2, c3] = [makeNetns(t, 'ca'), makeNetns(t, 'cb'), makeNetns(t, 'cc')] as [TestNetns, TestNetns, TestNetns]
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'] })
  await orphan(t, registry, c1, 'lost-1')
  t.equal(epLinks(fw).length, 1, 'the orphan is in the endpoint')

  const dp = dataplane(t, registry) // the restarted agent: an empty table
  const a = await dp.handler.request(kernelRequest('new-1', c2.path, 'nsm0'), testContext())
  t.equal(a.state, State.UP, 'a request to the endpoint succeeds despite the orphan')
  t.not(a.context?.ipContext?.srcIpAddrs[0], '172.16.1.1/32', 'not the orphan pair')
  const b = await dp.handler.request(kernelRequest('new-2', c3.path, 'nsm0'), testContext())
  t.equal(b.state, State.UP, 'and the next one too')

  await dp.healer.reconcile()
  t.same(linkNames(c1.name), ['lo'], "the orphan's client end is gone")
  t.equal(epLinks(fw).length, 2, "the orphan's endpoint end is gone, the two journaled connections' ends remain")
  t.ok(linkNames(c2.name).includes('nsm0') && linkNames(c3.name).includes('nsm0'), 'journaled connections untouched')
  const again = await dp.handler.request(kernelRequest('lost-1', c1.path, 'nsm0'), testContext())
  t.equal(again.state, State.UP, 'the crashed attachment can be made again')
  for (const c of [a, b, again]) await dp.handler.close(c, testContext())
  t.same(epLinks(fw), [])
})

t.test('the periodic pass sweeps an orphan; a request in flight (built, not yet journaled) is never swept', async (t) => {
  const registry = await openRegistry(t)
  const fw = makeNetns(t, 'fw')
  const [c1, c2] = [makeNetns(t, 'ca'), makeNetns(t, 'cb')] as [TestNetns, TestNetns]
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'] })
  let release: () => void = () => undefined
  let reached: () => void = () => undefined
  const atPersist = new Promise<void>((r) => (reached = r))
  const gate = new Promise<void>((r) => (release = r))
  const hold: Element = {
    name: 'hold',
    needs: [],
    provides: [],
    wrap: (next) => ({
      async request(r) {
        if (r.connection.id === 'slow-1') {
          reached()
          await gate
        }
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
  const dp = dataplane(t, registry, { insertAfter: { after: 'mechanism', element: hold }, sweepMs: 100 })
  const slow = dp.handler.request(kernelRequest('slow-1', c2.path, 'nsm0'), testContext())
  await atPersist
  await dp.healer.sweepOrphans()
  t.ok(linkNames(c2.name).includes('nsm0'), 'the in-flight datapath survives a sweep')
  release()
  t.equal((await slow).state, State.UP)

  dp.healer.start()
  await orphan(t, registry, c1, 'lost-2')
  const deadline = Date.now() + 5000
  while (Date.now() < deadline && linkNames(c1.name).includes('nsm0')) await new Promise((r) => setTimeout(r, 50))
  t.same(linkNames(c1.name), ['lo'], 'the periodic pass swept the orphan')
  t.ok(linkNames(c2.name).includes('nsm0'), 'the journaled connection is untouched')
})
