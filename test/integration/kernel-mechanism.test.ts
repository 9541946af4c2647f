// The KERNEL mechanism element in-process over the real kernel: an endpoint that offers routes gets IP
// forwarding in its namespace, and again in a namespace re-created under the same path (forwarding is
// enabled once per namespace, so a new namespace behind an old path must not be taken for the old one).
import t from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane } from '../../agent/pipeline/index'
import { silentLogger } from '../../agent/server/log'
import { State } from '../../proto/gen/networkservice/connection'
import { ip, linkNames, makeNetns, removeNetns, sh } from '../lib/netns'
import { kernelRequest, registerEndpoint, seedServices, serviceMessage, testContext } from '../lib/mesh'

const KEYS = ['net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']
const sysctl = (ns: string, key: string): string => ip(undefined, 'netns', 'exec', ns, 'cat', `/proc/sys/${key.replaceAll('.', '/')}`).trim()
// A new namespace may inherit forwarding from the host's (other tests, podman): start from off.
const forwardingOff = (ns: string): void => {
  for (const key of KEYS) ip(undefined, 'netns', 'exec', ns, 'sysctl', '-qw', `${key}=0`)
}

t.test('forwarding is enabled in an endpoint netns that offers routes, and again once that netns is re-created', async (t) => {
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: ['/var/run/netns/*'], defaultTtlMs: 60_000 })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const dp = createDataplane({ registry, table: ConnectionTable.inMemory(), nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: silentLogger })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  const endpoint = { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.7.0/29', 'fd00:7::/125'], routes: ['10.63.0.0/16'] }
  await registerEndpoint(registry, endpoint)
  forwardingOff(fw.name)

  const first = await dp.handler.request(kernelRequest('fwd-1', client.path, 'nsm0', { app: 'web' }), testContext())
  t.equal(first.state, State.UP)
  t.equal(sysctl(fw.name, 'net.ipv4.ip_forward'), '1')
  t.equal(sysctl(fw.name, 'net.ipv6.conf.all.forwarding'), '1')
  await dp.handler.close(first, testContext())

  // The endpoint's namespace goes away and a new one appears under the same path.
  removeNetns(fw.name)
  sh('ip', ['netns', 'add', fw.name])
  forwardingOff(fw.name)
  const second = await dp.handler.request(kernelRequest('fwd-2', client.path, 'nsm0', { app: 'web' }), testContext())
  t.equal(second.state, State.UP)
  t.equal(sysctl(fw.name, 'net.ipv4.ip_forward'), '1', 'enabled in the new namespace too')
  t.equal(sysctl(fw.name, 'net.ipv6.conf.all.forwarding'), '1')
  await dp.handler.close(second, testContext())
  t.same(linkNames(client.name), ['lo'])
})
