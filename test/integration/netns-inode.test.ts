// A KERNEL mechanism's inodeURL as NSM's clients send it, `inode://<dev>/<ino>` (pkg/netns-inode.ts): it
// names the namespace a process holds, found by (st_dev, st_ino) among /proc/*/ns/net, and is then judged
// by the netns policy like the /proc/<pid>/ns/net path it resolves to — a pod's namespace is accepted and a
// connection into it is built, the host's namespace is refused, an inode no process holds is BAD_NETNS
// naming the field, a malformed one INVALID_ARGUMENT naming the field. Real namespaces and processes.
import t from 'tap'
import { statSync } from 'node:fs'
import { inodeUrlOf, netnsPathOfInodeUrl, parseInodeUrl, procPathOfNetns } from '../../pkg/netns-inode'
import { netnsFileUrl, netnsPathOfUrl } from '../../pkg/netns-url'
import { NetnsPolicy } from '../../pkg/netns-policy'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane } from '../../agent/pipeline/index'
import { silentLogger } from '../../agent/server/log'
import { linkAddresses, linkNames, makeNetns, sleeper } from '../lib/netns'
import { kernelRequest, registerEndpoint, seedServices, serviceMessage, testContext } from '../lib/mesh'

const sameNetns = (a: string, b: string): boolean => {
  const x = statSync(a)
  const y = statSync(b)
  return x.dev === y.dev && x.ino === y.ino
}

t.test('parseInodeUrl: decimal dev and inode, anything else refused naming the URL', async (t) => {
  t.same(parseInodeUrl('inode://4/4026532000'), { dev: 4n, ino: 4026532000n })
  t.same(parseInodeUrl('inode://18446744073709551615/1'), { dev: (1n << 64n) - 1n, ino: 1n })
  for (const bad of ['inode://', 'inode://4', 'inode://4/', 'inode:///4026532000', 'inode://0x4/5', 'inode://4/5/6', 'inode://-4/5', 'inode://4/5?x', 'inode://4/0', 'inode://18446744073709551616/1', 'inode:// 4/5']) {
    t.throws(() => parseInodeUrl(bad), { name: 'KernelError', code: 'INVALID_ARGUMENT', message: JSON.stringify(bad) }, bad)
  }
})

t.test('an inode held by a process resolves to the lowest pid holding it; none holding it is BAD_NETNS', async (t) => {
  const pod = makeNetns(t, 'in')
  const url = inodeUrlOf(pod.path)
  t.match(url, /^inode:\/\/[0-9]+\/[0-9]+$/)
  t.throws(() => netnsPathOfInodeUrl(url), { code: 'BAD_NETNS', message: `${url}: no process holds` }, 'a namespace kept only by its bind mount')
  t.equal(procPathOfNetns(parseInodeUrl(url)), undefined)

  const first = await sleeper(t, pod.name)
  const second = await sleeper(t, pod.name)
  const [low, high] = first.pid < second.pid ? [first, second] : [second, first]
  t.equal(netnsPathOfInodeUrl(url), `/proc/${low.pid}/ns/net`, 'the lowest pid')
  t.ok(sameNetns(netnsPathOfInodeUrl(url), pod.path), 'that path is the pod netns')
  t.equal(netnsPathOfUrl(url), `/proc/${low.pid}/ns/net`, 'through netnsPathOfUrl as well')
  await low.kill()
  t.equal(netnsPathOfInodeUrl(url), `/proc/${high.pid}/ns/net`, 'the remembered pid gone: the next one holding it')
  await high.kill()
  t.throws(() => netnsPathOfUrl(url), { code: 'BAD_NETNS', message: /no process holds/ }, 'the last holder gone')
})

t.test('netnsPathOfUrl: file:// decoded as before, other schemes refused', async (t) => {
  t.equal(netnsPathOfUrl(netnsFileUrl('/var/run/netns/a%b c')), '/var/run/netns/a%b c')
  t.throws(() => netnsPathOfUrl('file:///var/run/netns/%zz'), { code: 'INVALID_ARGUMENT', message: /bad % escape/ })
  t.throws(() => netnsPathOfUrl('/var/run/netns/x'), { code: 'INVALID_ARGUMENT', message: /file:\/\/ URL of a netns or inode:\/\/<dev>\/<ino>/ })
})

t.test('through the pipeline: a pod inode is connected, the host inode refused, an unheld or malformed one named', async (t) => {
  const policy = new NetnsPolicy() // the default: /var/run/netns/*, /run/netns/*, /proc/*/ns/net
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: policy, defaultTtlMs: 60_000 })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const dp = createDataplane({ registry, table: ConnectionTable.inMemory(), nodeName: 'node-1', netnsAllow: policy, log: silentLogger })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.9.0/29'] })
  const pod = makeNetns(t, 'pc')
  const holder = await sleeper(t, pod.name)

  const inodeRequest = (id: string, url: string) => {
    const req = kernelRequest(id, '/unused', 'nsm0')
    return { ...req, mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm0', inodeURL: url } }] }
  }
  const field = 'mechanism_preferences[0].parameters.inodeURL'

  const conn = await dp.handler.request(inodeRequest('inode-1', inodeUrlOf(pod.path)), testContext())
  t.equal(conn.mechanism?.parameters.inodeURL, `file:///proc/${holder.pid}/ns/net`, 'answered with the path it resolved to')
  t.ok(linkNames(pod.name).includes('nsm0'), 'the client interface is in the pod netns')
  t.same(linkAddresses(pod.name, 'nsm0').filter((a) => !a.startsWith('fe80:')), conn.context?.ipContext?.srcIpAddrs, 'with its address')
  const again = await dp.handler.request(inodeRequest('inode-1', inodeUrlOf(pod.path)), testContext())
  t.equal(again.context?.ipContext?.srcIpAddrs[0], conn.context?.ipContext?.srcIpAddrs[0], 'a refresh with the same inode URL keeps the connection')
  await dp.handler.close(conn, testContext())
  t.notOk(linkNames(pod.name).includes('nsm0'), 'closed')

  await t.rejects(dp.handler.request(inodeRequest('inode-host', inodeUrlOf('/proc/self/ns/net')), testContext()), { code: 'BAD_NETNS', field, message: /inodeURL: inode:\/\/[0-9]+\/[0-9]+ is \/proc\/[0-9]+\/ns\/net: .*agent's own \(host\) network namespace/ }, 'the host netns by inode: refused as by path')

  const empty = makeNetns(t, 'pe')
  await t.rejects(dp.handler.request(inodeRequest('inode-none', inodeUrlOf(empty.path)), testContext()), { code: 'BAD_NETNS', field, message: new RegExp(`^${field.replace(/[[\].]/g, '\\$&')}: inode://[0-9]+/[0-9]+: no process holds`) }, 'no process holds it')
  await t.rejects(dp.handler.request(inodeRequest('inode-bad', 'inode://4'), testContext()), { code: 'INVALID_ARGUMENT', field, message: /inode:\/\/<dev>\/<ino>/ }, 'malformed')
  t.same(linkNames(empty.name), ['lo'], 'nothing made by the refused requests')
})
