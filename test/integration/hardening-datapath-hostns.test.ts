// Hardening: the host network namespace never receives a link, address or route through an endpoint.
// The netns policy refuses the agent's own netns when a path is registered; a bind mount under
// /var/run/netns can be replaced by the host netns afterwards, so every later use — building a request,
// healing, restart reconciliation, Close — judges the path again: requests are refused, existing
// connections go DOWN or close, and nothing appears in the host netns.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createDataplane } from '../../agent/pipeline/index'
import { linkTag } from '../../agent/mechanisms/index'
import { silentLogger } from '../../agent/server/log'
import { State } from '../../proto/gen/networkservice/connection'
import { ip, linkNames, makeNetns, sh, type TestNetns } from '../lib/netns'
import { inProcessDataplane, kernelRequest, registerEndpoint, testContext } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const ALLOW = ['/var/run/netns/*']

/** A `sleep` child in the root (host) netns; killed at teardown. */
async function hostChild(t: Teardown): Promise<number> {
  const proc: ChildProcess = spawn('sleep', ['120'], { stdio: 'ignore' })
  t.teardown(() => {
    proc.kill('SIGKILL')
  })
  const pid = proc.pid
  if (pid === undefined) throw new Error('spawn failed')
  const deadline = Date.now() + 5000
  while (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'sleep') {
    if (Date.now() > deadline) throw new Error('child did not start')
    await new Promise((r) => setTimeout(r, 10))
  }
  return pid
}

/** Re-points the netns path of `ns` at the host netns (what a replaced bind mount does). */
function repointAtHost(ns: TestNetns, pid: number): void {
  sh('umount', [ns.path])
  sh('mount', ['--bind', `/proc/${pid}/ns/net`, ns.path])
}

interface HostState {
  links: string[]
  routes: string
  addrs: string
}
const hostState = (): HostState => ({ links: linkNames().sort(), routes: ip(undefined, 'route', 'show', 'table', 'all'), addrs: ip(undefined, '-o', 'addr', 'show') })

/** Safety net: removes from the host netns any link tagged for one of `ids` (there must be none). */
function cleanHost(t: Teardown, ids: string[]): void {
  t.teardown(() => {
    const links = JSON.parse(ip(undefined, '-j', '-d', 'link', 'show')) as Array<{ ifname: string; ifalias?: string }>
    for (const l of links) if (l.ifalias !== undefined && ids.some((id) => linkTag(id) === l.ifalias)) ip(undefined, 'link', 'del', l.ifname)
  })
}

async function mesh(t: Teardown): ReturnType<typeof inProcessDataplane> {
  const m = await inProcessDataplane(t)
  return m
}

t.test('a request to an endpoint whose path now opens the host netns is refused; the host is untouched', async (t) => {
  cleanHost(t, ['hn-1'])
  const m = await mesh(t)
  const fw = makeNetns(t, 'fw')
  const client = makeNetns(t, 'c')
  const pid = await hostChild(t)
  await registerEndpoint(m.registry, { name: 'fw-a', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], routes: ['10.60.0.0/16'] })
  repointAtHost(fw, pid)
  const before = hostState()
  await t.rejects(m.dp.handler.request(kernelRequest('hn-1', client.path, 'nsm0'), testContext()), { code: 'BAD_NETNS' })
  t.same(hostState(), before, 'no link, address or route in the host netns')
  t.same(linkNames(client.name), ['lo'], 'nothing left in the client')
  t.equal(m.table.size, 0)
})

t.test('after the path is re-pointed: healing, restart reconciliation and Close never touch the host netns', async (t) => {
  cleanHost(t, ['hn-2', 'hn-3'])
  const m = await mesh(t)
  const fw = makeNetns(t, 'fw')
  const [c2, c3] = [makeNetns(t, 'c'), makeNetns(t, 'c')]
  const pid = await hostChild(t)
  await registerEndpoint(m.registry, { name: 'fw-a', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/24'], routes: ['10.60.0.0/16'] })
  const conn2 = await m.dp.handler.request(kernelRequest('hn-2', c2.path, 'nsm0'), testContext())
  const conn3 = await m.dp.handler.request(kernelRequest('hn-3', c3.path, 'nsm0'), testContext())
  m.dp.sessions.closeAll() // as an agent that has not touched the namespace since: nothing cached
  repointAtHost(fw, pid)
  const before = hostState()

  // Restart reconciliation over the same table.
  const restarted = createDataplane({ registry: m.registry, table: m.table, nodeName: 'node-1', netnsAllow: ALLOW, log: silentLogger, healPollMs: 100 })
  t.teardown(() => restarted.stop())
  await restarted.healer.reconcile()
  t.same(hostState(), before, 'reconcile put nothing in the host netns')

  // Healing: the endpoint's path is refused now; its connections go DOWN, nothing is built in the host.
  restarted.healer.start()
  const deadline = Date.now() + 4000
  const settled = (): boolean => m.registry.endpoint('fw-a') === undefined && [conn2, conn3].every((c) => m.table.get(c.id)?.connection.state === State.DOWN)
  while (Date.now() < deadline && !settled()) await new Promise((r) => setTimeout(r, 50))
  await restarted.healer.idle()
  t.same(
    [conn2, conn3].map((c) => m.table.get(c.id)?.connection.state),
    [State.DOWN, State.DOWN],
    'the connections are DOWN',
  )
  t.equal(m.registry.endpoint('fw-a'), undefined, 'the endpoint whose path opens the host netns is unregistered')
  await new Promise((r) => setTimeout(r, 400)) // a few polls and retries
  await restarted.healer.idle()
  t.same(hostState(), before, 'healing put nothing in the host netns')

  // Close: succeeds, deletes nothing in the host.
  await restarted.handler.close(conn2, testContext())
  await restarted.handler.close(conn3, testContext())
  t.equal(m.table.size, 0, 'closed')
  t.same(hostState(), before, 'Close touched nothing in the host netns')
  t.same(linkNames(c2.name), ['lo'])
  t.same(linkNames(c3.name), ['lo'])
})
