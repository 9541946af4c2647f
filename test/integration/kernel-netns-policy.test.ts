// The netns policy judges a path by what it opens (ARCHITECTURE §9): the agent's own (host) netns is refused
// whatever led there — a bind mount or a symlink under an allowed directory, /proc/<pid>/ns/net of a
// process in the host netns, /proc/<own pid> — while the same forms naming a pod's netns are accepted and
// usable; a path that is no netns (a file, a FIFO) fails as BAD_NETNS without hanging. The registry and
// the pipeline refuse the host netns through the same policy.
import t from 'tap'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NetnsPolicy } from '../../pkg/netns-policy'
import { NetlinkSessions, listLinks } from '../../pkg/netlink/index'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane } from '../../agent/pipeline/index'
import { silentLogger } from '../../agent/server/log'
import { RUN, makeNetns, sh, sleeper } from '../lib/netns'
import { kernelRequest, registerEndpoint, testContext } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** A test-made directory with bind mounts in it; unmounted, then removed, at teardown. */
function scratch(t: Teardown): { dir: string; bind(source: string, name: string): string; symlink(target: string, name: string): string } {
  const dir = mkdtempSync(join(tmpdir(), `nsm-netns-policy-${RUN}-`))
  const mounts: string[] = []
  t.teardown(() => {
    for (const m of mounts.reverse()) {
      try {
        sh('umount', [m])
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true })
  })
  return {
    dir,
    bind(source, name) {
      const target = join(dir, name)
      writeFileSync(target, '')
      sh('mount', ['--bind', source, target])
      mounts.push(target)
      return target
    },
    symlink(target, name) {
      const path = join(dir, name)
      symlinkSync(target, path)
      return path
    },
  }
}

const HOST = /agent's own \(host\) network namespace/

t.test('a bind mount or symlink of the host netns is refused; of a pod netns, accepted and usable', async (t) => {
  const s = scratch(t)
  const policy = new NetnsPolicy([`${s.dir}/*`])
  const sessions = new NetlinkSessions(policy)
  t.teardown(() => sessions.closeAll())
  const pod = makeNetns(t, 'pp')

  // `mount` resolves /proc/self in its own process: the root (host) netns the tests run in.
  const hostBind = s.bind('/proc/self/ns/net', 'host')
  const hostLink = s.symlink('/proc/self/ns/net', 'self-link')
  for (const p of [hostBind, hostLink]) {
    t.throws(() => policy.check(p), { name: 'KernelError', code: 'NETNS_NOT_ALLOWED', message: HOST }, `check refuses ${p}`)
    t.throws(() => policy.identify(p), { code: 'NETNS_NOT_ALLOWED' }, `identify refuses ${p}`)
    t.throws(() => policy.open(p), { code: 'NETNS_NOT_ALLOWED' }, `open refuses ${p}`)
    t.throws(() => sessions.forNetns(p), { code: 'NETNS_NOT_ALLOWED', message: HOST }, `no netlink socket for ${p}`)
    t.throws(() => sessions.openNetnsFd(p), { code: 'NETNS_NOT_ALLOWED' }, `no netns fd for ${p}`)
  }

  const podBind = s.bind(pod.path, 'pod')
  const podLink = s.symlink(pod.path, 'pod-link')
  const podKey = policy.identify(podBind).key
  t.ok(podKey !== undefined)
  for (const p of [podBind, podLink]) {
    t.equal(policy.check(p), p, `accepted: ${p}`)
    t.equal(policy.identify(p).key, podKey, `${p} is the pod's netns`)
    const links = await listLinks(sessions.forNetns(p))
    t.same(links.map((l) => l.name), ['lo'], `the socket for ${p} talks to the pod's netns`)
  }
})

t.test('/proc/<pid>/ns/net: refused for a process in the host netns and for the agent itself, accepted for a pod', async (t) => {
  const policy = new NetnsPolicy()
  const sessions = new NetlinkSessions(policy)
  t.teardown(() => sessions.closeAll())
  const pod = makeNetns(t, 'pp')
  const { pid: hostChild } = await sleeper(t)
  const { pid: podChild } = await sleeper(t, pod.name)
  for (const p of [`/proc/${hostChild}/ns/net`, `/proc/${process.pid}/ns/net`]) {
    t.throws(() => policy.check(p), { code: 'NETNS_NOT_ALLOWED', message: HOST }, `check refuses ${p}`)
    t.throws(() => policy.open(p), { code: 'NETNS_NOT_ALLOWED', message: HOST }, `open refuses ${p}`)
    t.throws(() => sessions.forNetns(p), { code: 'NETNS_NOT_ALLOWED' }, `no socket for ${p}`)
  }
  const podProc = `/proc/${podChild}/ns/net`
  t.equal(policy.check(podProc), podProc)
  t.equal(policy.identify(podProc).key, policy.identify(pod.path).key, 'the pid path names the pod netns')
  t.same((await listLinks(sessions.forNetns(podProc))).map((l) => l.name), ['lo'])
  // A symlink under an allowed directory to the host child's /proc path is still the host netns.
  const s = scratch(t)
  const linkPolicy = new NetnsPolicy([`${s.dir}/*`])
  t.throws(() => linkPolicy.check(s.symlink(`/proc/${hostChild}/ns/net`, 'child-link')), { code: 'NETNS_NOT_ALLOWED', message: HOST })
})

t.test('a path that is no netns is BAD_NETNS, and a FIFO does not hang the agent', async (t) => {
  const s = scratch(t)
  const policy = new NetnsPolicy([`${s.dir}/*`])
  const sessions = new NetlinkSessions(policy)
  t.teardown(() => sessions.closeAll())
  const file = join(s.dir, 'file')
  writeFileSync(file, 'not a namespace')
  const fifo = join(s.dir, 'fifo')
  sh('mkfifo', [fifo])
  for (const p of [file, fifo]) {
    t.equal(policy.check(p), p, 'the spelling is fine and it is not the host netns')
    t.throws(() => sessions.forNetns(p), { code: 'BAD_NETNS', message: /not a network namespace/ }, `${p}: setns refuses it`)
  }
  t.throws(() => sessions.forNetns(join(s.dir, 'missing')), { code: 'BAD_NETNS', message: /does not exist/ })
})

t.test('the registry and the pipeline refuse the host netns through the same policy', async (t) => {
  const s = scratch(t)
  const hostBind = s.bind('/proc/self/ns/net', 'host')
  const policy = new NetnsPolicy([`${s.dir}/*`, '/var/run/netns/*'])
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: policy, defaultTtlMs: 60_000 })
  const dp = createDataplane({ registry, table: ConnectionTable.inMemory(), nodeName: 'node-1', netnsAllow: policy, log: silentLogger })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  t.equal(dp.netnsPolicy, policy, 'the dataplane uses the policy it was given')
  await t.rejects(registerEndpoint(registry, { name: 'fw-host', netns: hostBind, labels: {}, pools: ['172.16.1.0/29'] }), { code: 'BAD_NETNS', message: HOST }, 'registration refused')
  await t.rejects(registerEndpoint(registry, { name: 'fw-host', netns: hostBind, labels: {}, pools: ['172.16.1.0/29'], urlOnly: true }), { code: 'BAD_NETNS', field: 'network_service_endpoint.url' }, 'by url too')
  await t.rejects(dp.handler.request(kernelRequest('host-1', hostBind, 'nsm0'), testContext()), { code: 'BAD_NETNS', message: /inodeURL: .*agent's own \(host\)/ }, 'request refused')
  await t.rejects(dp.handler.request(kernelRequest('self-1', '/proc/self/ns/net', 'nsm0'), testContext()), { code: 'BAD_NETNS' }, '/proc/self refused (not in this policy)')
})
