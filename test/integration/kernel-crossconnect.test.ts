// A full point-to-point cross-connect between two namespaces through the kernel layer, a ping across
// it, and the failure cases: each raises the typed error and leaves no link or address behind.
import t from 'tap'
import { NetlinkSessions, buildCrossConnect, createVeth, moveLink, removeCrossConnect } from '../../pkg/netlink'
import { NetnsPolicy } from '../../pkg/netns-policy'
import { ip, linkAddresses, linkNames, makeNetns, sh } from '../lib/netns'

const sessions = new NetlinkSessions()
t.teardown(() => sessions.closeAll())
t.afterEach(() => {
  sessions.sweep()
})

const ping = (ns: string, addr: string): string => sh('ip', ['netns', 'exec', ns, 'ping', '-c', '2', '-i', '0.2', '-W', '1', addr])

t.test('cross-connect: veth, /32 and /128 addresses, routes, up; ping both ways; removal', async (t) => {
  const client = makeNetns(t, 'cl')
  const endpoint = makeNetns(t, 'ep')
  // The endpoint offers 10.60.0.0/16 behind it: an address on its loopback stands for that network.
  ip(endpoint.name, 'addr', 'add', '10.60.0.1/32', 'dev', 'lo')
  await buildCrossConnect(sessions, {
    mtu: 1450,
    client: {
      netns: client.path,
      ifname: 'nsm-1',
      addresses: ['172.16.1.3/32', 'fd00:1::3/128'],
      routes: [{ dst: '172.16.1.2/32' }, { dst: 'fd00:1::2/128' }, { dst: '10.60.0.0/16', gateway: '172.16.1.2' }],
    },
    endpoint: {
      netns: endpoint.path,
      ifname: 'nsm-ab12',
      addresses: ['172.16.1.2/32', 'fd00:1::2/128'],
      routes: [{ dst: '172.16.1.3/32' }, { dst: 'fd00:1::3/128' }],
    },
  })
  t.same(linkAddresses(client.name, 'nsm-1').filter((a) => !a.startsWith('fe80')).sort(), ['172.16.1.3/32', 'fd00:1::3/128'])
  t.match(ping(client.name, '172.16.1.2'), /2 received/, 'client -> endpoint over IPv4')
  t.match(ping(client.name, 'fd00:1::2'), /2 received/, 'client -> endpoint over IPv6')
  t.match(ping(endpoint.name, '172.16.1.3'), /2 received/, 'endpoint -> client')
  t.match(ping(client.name, '10.60.0.1'), /2 received/, 'client reaches the network behind the endpoint')
  const mtu = (JSON.parse(ip(client.name, '-j', 'link', 'show', 'dev', 'nsm-1')) as Array<{ mtu: number }>)[0]?.mtu
  t.equal(mtu, 1450)
  const ends = { client: { netns: client.path, ifname: 'nsm-1' }, endpoint: { netns: endpoint.path, ifname: 'nsm-ab12' } }
  t.equal(await removeCrossConnect(sessions, ends), true)
  t.notOk(linkNames(client.name).includes('nsm-1'))
  t.notOk(linkNames(endpoint.name).includes('nsm-ab12'))
  t.equal(await removeCrossConnect(sessions, ends), false, 'idempotent')
})

t.test('a cross-connect whose last step fails leaves nothing behind', async (t) => {
  const client = makeNetns(t, 'cl')
  const endpoint = makeNetns(t, 'ep')
  await t.rejects(
    buildCrossConnect(sessions, {
      client: { netns: client.path, ifname: 'nsm-1', addresses: ['172.16.2.3/32'], routes: [{ dst: '172.16.2.2/32' }] },
      // a route via a gateway that is not reachable on a link: the kernel refuses it (ENETUNREACH)
      endpoint: { netns: endpoint.path, ifname: 'nsm-x', addresses: ['172.16.2.2/32'], routes: [{ dst: '10.0.0.0/8', gateway: '192.0.2.1' }] },
    }),
    { name: 'KernelError' },
  )
  t.same(linkNames(client.name), ['lo'], 'no link left in the client')
  t.same(linkNames(endpoint.name), ['lo'], 'no link left in the endpoint')
})

t.test('failure cases raise the typed error and change nothing', async (t) => {
  const a = makeNetns(t)
  const rootLinks = linkNames().sort()
  const before = linkNames(a.name)

  await t.rejects(createVeth(sessions, { name: 'x0', netns: '/var/run/netns/does-not-exist-xyz', peer: { name: 'x1' } }, a.path), { code: 'BAD_NETNS' }, 'missing namespace')
  await t.rejects(
    buildCrossConnect(sessions, {
      client: { netns: '/var/run/netns/does-not-exist-xyz', ifname: 'c0', addresses: [], routes: [] },
      endpoint: { netns: a.path, ifname: 'e0', addresses: [], routes: [] },
    }),
    { code: 'BAD_NETNS' },
    'cross-connect to a missing namespace',
  )
  await t.rejects(createVeth(sessions, { name: 'this-name-is-too-long', peer: { name: 'p0' } }, a.path), { code: 'NAME_TOO_LONG' }, 'name over 15 characters')
  await t.rejects(createVeth(sessions, { name: 'ok0', peer: { name: 'bad/name' } }, a.path), { code: 'NAME_TOO_LONG' }, 'name with a slash')
  await createVeth(sessions, { name: 'dup0', peer: { name: 'dup1' } }, a.path)
  await t.rejects(createVeth(sessions, { name: 'dup0', peer: { name: 'dup2' } }, a.path), { code: 'EXISTS' }, 'duplicate name')
  await t.rejects(createVeth(sessions, { name: 'dup3', peer: { name: 'dup1' } }, a.path), { code: 'EXISTS' }, 'duplicate peer name')
  t.throws(() => sessions.forNetns('/etc/passwd'), { code: 'NETNS_NOT_ALLOWED' }, 'path outside the allowlist')
  t.throws(() => sessions.forNetns('/var/run/netns/../../etc/x'), { code: 'NETNS_NOT_ALLOWED' }, 'path that climbs out')
  await t.rejects(createVeth(sessions, { name: 'y0', netns: '/tmp/netns', peer: { name: 'y1' } }, a.path), { code: 'NETNS_NOT_ALLOWED' })
  await t.rejects(moveLink(sessions, 'ghost0', a.path), { code: 'NO_SUCH_DEVICE' }, 'moving a link that does not exist')

  t.same(linkNames(a.name).sort(), [...before, 'dup0', 'dup1'].sort(), 'only the one good veth exists in the namespace')
  t.same(linkNames().sort(), rootLinks, 'nothing appeared in the root namespace')
  t.same(linkAddresses(a.name, 'dup0'), [], 'no address was added')
})

t.test('netns policy: default patterns, and custom ones', async (t) => {
  const al = new NetnsPolicy()
  t.equal(al.check('/var/run/netns/cni-1234'), '/var/run/netns/cni-1234')
  t.equal(al.check('/run/netns/x'), '/run/netns/x')
  t.equal(al.check('/proc/999999999/ns/net'), '/proc/999999999/ns/net', 'a pid (none such exists: pid_max is lower)')
  for (const bad of ['', 'relative/x', '/var/run/netns/', '/var/run/netns/a/b', '/var/run/netns/./x', '/proc/self/ns/net', '/proc/0/ns/net', '/dev/null', '/var/run/netns/a\0b']) {
    t.throws(() => al.check(bad), { name: 'KernelError' }, JSON.stringify(bad))
  }
  const custom = new NetnsPolicy(['/srv/ns/*'])
  t.equal(custom.check('/srv/ns/x'), '/srv/ns/x')
  t.throws(() => custom.check('/var/run/netns/x'), { code: 'NETNS_NOT_ALLOWED' })
  t.throws(() => custom.check('/proc/42/ns/net'), { code: 'NETNS_NOT_ALLOWED' })
})
