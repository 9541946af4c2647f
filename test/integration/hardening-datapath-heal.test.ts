// Hardening: healing retries DOWN connections. When the only endpoint of a service goes away its
// connections go DOWN; when an endpoint of that service is registered again they are rebuilt at once
// (registry event), and a connection whose retry keeps failing is retried with backoff, not forgotten.
// An endpoint re-registered under the same name in another netns moves its connections with it, and a
// connection whose own datapath namespace vanishes is healed even while the registry still lists the
// endpoint elsewhere.
import t from 'tap'
import { State } from '../../proto/gen/networkservice/connection'
import { ip, linkNames, makeNetns } from '../lib/netns'
import { inProcessDataplane, kernelRequest, registerEndpoint, testContext } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}


async function mesh(t: Teardown): ReturnType<typeof inProcessDataplane> {
  const m = await inProcessDataplane(t)
  m.dp.healer.start()
  return m
}

async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (pred()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return pred()
}

const fwSpec = (netns: string) => ({ name: 'fw-a', netns, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'] })

t.test('the only endpoint goes and comes back: 5 DOWN connections are all UP again within seconds', async (t) => {
  const m = await mesh(t)
  const fw = makeNetns(t, 'fw')
  const clients = Array.from({ length: 5 }, () => makeNetns(t, 'c'))
  await registerEndpoint(m.registry, fwSpec(fw.path))
  for (const [i, c] of clients.entries()) await m.dp.handler.request(kernelRequest(`r-${i}`, c.path, 'nsm0'), testContext())
  const states = (): number[] => clients.map((_, i) => m.table.get(`r-${i}`)?.connection.state ?? -1)
  await m.registry.unregisterEndpoint('fw-a')
  t.ok(await until(() => states().every((s) => s === State.DOWN), 3000), `all DOWN (${states().join(',')})`)
  await m.dp.healer.idle()
  await registerEndpoint(m.registry, fwSpec(fw.path))
  t.ok(await until(() => states().every((s) => s === State.UP), 4000), `all UP again (${states().join(',')})`)
  await m.dp.healer.idle()
  for (const c of clients) t.ok(linkNames(c.name).includes('nsm0'), `interface present in ${c.name}`)
  for (const i of clients.keys()) {
    const entry = m.table.get(`r-${i}`)
    if (entry !== undefined) t.same(await m.dp.check(entry), [], `r-${i} intact`)
  }
})

t.test('a connection whose retry fails keeps being retried (with backoff) until it succeeds', async (t) => {
  const m = await mesh(t)
  const fa = makeNetns(t, 'fa')
  const fb = makeNetns(t, 'fb')
  const [c, hogClient] = [makeNetns(t, 'c'), makeNetns(t, 'h')]
  // fw-b has room for one pair, which `hog` takes.
  await registerEndpoint(m.registry, { name: 'fw-b', netns: fb.path, labels: { app: 'firewall' }, pools: ['172.16.9.0/31'] })
  const hog = await m.dp.handler.request(kernelRequest('hog', hogClient.path, 'nsm0'), testContext())
  await registerEndpoint(m.registry, fwSpec(fa.path))
  const b1 = await m.dp.handler.request(kernelRequest('b-1', c.path, 'nsm0'), testContext())
  t.equal(b1.networkServiceEndpointName, 'fw-a')
  await m.registry.unregisterEndpoint('fw-a')
  t.ok(await until(() => m.table.get('b-1')?.connection.state === State.DOWN, 3000), 'DOWN: fw-b has no free pair')
  await new Promise((r) => setTimeout(r, 300))
  await m.dp.healer.idle()
  t.equal(m.table.get('b-1')?.connection.state, State.DOWN, 'still DOWN after failed retries')
  // The pair is freed (no registry event): a backoff retry picks it up.
  await m.dp.handler.close(hog, testContext())
  t.ok(await until(() => m.table.get('b-1')?.connection.state === State.UP, 8000), 'UP after a backoff retry')
  t.equal(m.table.get('b-1')?.connection.networkServiceEndpointName, 'fw-b')
  t.ok(linkNames(c.name).includes('nsm0'))
})

t.test('an endpoint re-registered in another netns takes its connections with it', async (t) => {
  const m = await mesh(t)
  const a = makeNetns(t, 'fa')
  const b = makeNetns(t, 'fb')
  const clients = Array.from({ length: 3 }, () => makeNetns(t, 'c'))
  await registerEndpoint(m.registry, fwSpec(a.path))
  for (const [i, c] of clients.entries()) await m.dp.handler.request(kernelRequest(`mv-${i}`, c.path, 'nsm0'), testContext())
  t.equal(linkNames(a.name).length, 4)
  await registerEndpoint(m.registry, fwSpec(b.path)) // same name, another netns
  const moved = (): boolean => linkNames(b.name).length === 4 && linkNames(a.name).length === 1
  t.ok(await until(moved, 4000), `the endpoint sides moved to the new netns (${linkNames(a.name).length - 1} left in the old one)`)
  await m.dp.healer.idle()
  for (const i of clients.keys()) {
    const entry = m.table.get(`mv-${i}`)
    t.equal(entry?.connection.state, State.UP, `mv-${i} UP`)
    if (entry !== undefined) t.same(await m.dp.check(entry), [], `mv-${i} intact in its new place`)
    const mech = m.dp.records.record(`mv-${i}`)?.mechanism
    t.equal(mech?.type === 'KERNEL' ? mech.endpointNetns : undefined, b.path)
  }
})

t.test("a connection's own endpoint netns replaced under the same path: rebuilt, not left UP and broken", async (t) => {
  const m = await mesh(t)
  const a = makeNetns(t, 'fa')
  const c = makeNetns(t, 'c')
  await registerEndpoint(m.registry, fwSpec(a.path))
  await m.dp.handler.request(kernelRequest('rp-1', c.path, 'nsm0'), testContext())
  ip(undefined, 'netns', 'del', a.name)
  ip(undefined, 'netns', 'add', a.name) // the registered path exists again, as another namespace
  const intact = async (): Promise<boolean> => {
    const entry = m.table.get('rp-1')
    return entry !== undefined && entry.connection.state === State.UP && (await m.dp.check(entry)).length === 0
  }
  const deadline = Date.now() + 5000
  let ok = false
  // Give the old namespace time to go (its veth with it), then expect the connection intact again.
  await new Promise((r) => setTimeout(r, 500))
  while (!(ok = await intact()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
  t.ok(ok, 'the connection is intact again in the namespace now at that path')
  t.ok(linkNames(a.name).some((n) => n.startsWith('nsm-')), 'its endpoint side is in the new namespace')
})
