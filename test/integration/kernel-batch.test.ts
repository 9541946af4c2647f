// Batched rtnetlink requests (Rtnl.batch) against the real kernel: a failing message is reported as
// itself, the kernel still runs the messages after it, tolerated codes pass, a cross-connect whose batch
// fails midway leaves nothing behind, and createVeth's ifindexes (from the kernel's echo, or looked up)
// are the kernel's. Assertions read the kernel back through `ip -j`, not through our own code.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import {
  NetlinkSessions,
  addAddressMessage,
  addRouteMessage,
  buildCrossConnect,
  createVeth,
  getLink,
  listLinks,
  setLinkMessage,
} from '../../pkg/netlink'
import { ip, linkAddresses, linkNames, makeNetns, showLink, type IpLink } from '../lib/netns'

const sessions = new NetlinkSessions()
t.teardown(() => sessions.closeAll())
t.afterEach(() => {
  sessions.sweep()
})

const routesOf = (ns: string): Array<{ dst: string; gateway?: string }> => JSON.parse(ip(ns, '-j', 'route', 'show')) as Array<{ dst: string; gateway?: string }>

t.test('the 3rd of 5 batched messages fails: rejected as that message, the kernel still ran the rest', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const { index } = await createVeth(sessions, { name: 'bt0', peer: { name: 'bt1', netns: b.path } }, a.path)
  const link = { index, name: 'bt0' }
  const h = sessions.forNetns(a.path)
  await t.rejects(
    h.batch([
      addAddressMessage(link, '10.77.0.1/32'),
      addAddressMessage(link, '10.77.0.2/32'),
      addAddressMessage(link, '10.77.0.1/32'), // the same address again: EEXIST
      addAddressMessage(link, '10.77.0.3/32'),
      setLinkMessage(link, { up: true }),
    ]),
    { name: 'KernelError', code: 'EXISTS', message: `add address 10.77.0.1/32 to bt0 (netns ${a.path}): EEXIST` },
  )
  // A batch is not a transaction: callers roll back as a whole (the cross-connect deletes the pair).
  t.same(linkAddresses(a.name, 'bt0').filter((x) => !x.startsWith('fe80')).sort(), ['10.77.0.1/32', '10.77.0.2/32', '10.77.0.3/32'], 'messages 4 and 5 ran')
  t.ok(showLink(a.name, 'bt0').flags.includes('UP'), 'the 5th message brought the link up')
})

t.test('a tolerated code passes; the first failure in send order wins over a later one', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const { index } = await createVeth(sessions, { name: 'tl0', peer: { name: 'tl1', netns: b.path } }, a.path)
  const link = { index, name: 'tl0' }
  const h = sessions.forNetns(a.path)
  await h.batch([addAddressMessage(link, '10.78.0.1/32'), setLinkMessage(link, { up: true }), addRouteMessage({ dst: '10.78.0.2/32' }, link)])
  const replies = await h.batch([{ ...addRouteMessage({ dst: '10.78.0.2/32' }, link), tolerate: ['EXISTS'] }])
  t.same(replies, [[]], 'EXISTS tolerated: resolves, no replies')
  await t.rejects(
    h.batch([addRouteMessage({ dst: '10.78.0.2/32' }, link), addRouteMessage({ dst: '10.0.0.0/8', gateway: '192.0.2.1' }, link)]),
    { code: 'EXISTS', message: /^add route 10\.78\.0\.2\/32 dev tl0 / },
  )
  t.same(await h.batch([]), [], 'an empty batch sends nothing')
})

t.test('a batch in flight when its socket is closed is rejected, not left hanging', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const { index } = await createVeth(sessions, { name: 'cl0', peer: { name: 'cl1', netns: b.path } }, a.path)
  const h = sessions.forNetns(a.path)
  const pending = h.batch([setLinkMessage({ index, name: 'cl0' }, { up: true })])
  sessions.drop(a.path)
  await t.rejects(pending, { code: 'BAD_NETNS' })
  await t.rejects(h.batch([setLinkMessage({ index, name: 'cl0' }, { up: true })]), { code: 'BAD_NETNS' }, 'and so is a new one')
})

t.test('createVeth returns the kernel ifindexes, from the echo and by lookup; queues: 1 on both ends', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  // The first end stays in the socket's namespace: the kernel echoes it.
  const echoed = await createVeth(sessions, { name: 'ix0', queues: 1, peer: { name: 'ix1', netns: b.path } }, a.path)
  t.same(echoed, { index: showLink(a.name, 'ix0').ifindex, peerIndex: showLink(b.name, 'ix1').ifindex })
  for (const [ns, name] of [[a.name, 'ix0'], [b.name, 'ix1']] as const) {
    const l = showLink(ns, name)
    t.equal(l.num_tx_queues, 1, `${name}: one TX queue`)
    t.equal(l.num_rx_queues, 1, `${name}: one RX queue`)
  }
  // Both ends in other namespaces than the socket's (no echo): looked up by name.
  const looked = await createVeth(sessions, { name: 'ix2', netns: a.path, peer: { name: 'ix3', netns: b.path } })
  t.same(looked, { index: showLink(a.name, 'ix2').ifindex, peerIndex: showLink(b.name, 'ix3').ifindex })
  t.notOk(linkNames().includes('ix2'), 'nothing in the root namespace')
  await t.rejects(createVeth(sessions, { name: 'ix4', queues: 0, peer: { name: 'ix5' } }, a.path), { code: 'INVALID_ARGUMENT' })
  t.equal(await getLink(sessions.forNetns(a.path), 'ix4'), undefined, 'a refused spec creates nothing')
})

t.test('a cross-connect whose endpoint batch fails at its 3rd of 5 messages reports it and leaves nothing', async (t) => {
  const client = makeNetns(t, 'cl')
  const endpoint = makeNetns(t, 'ep')
  // Endpoint batch: address, up, a route via an unreachable gateway (ENETUNREACH), two good routes.
  await t.rejects(
    buildCrossConnect(sessions, {
      client: { netns: client.path, ifname: 'nsm-1', addresses: ['172.16.5.3/32', 'fd00:5::3/128'], routes: [{ dst: '172.16.5.2/32' }, { dst: 'fd00:5::2/128' }] },
      endpoint: {
        netns: endpoint.path,
        ifname: 'nsm-5',
        addresses: ['172.16.5.2/32'],
        routes: [{ dst: '10.0.0.0/8', gateway: '192.0.2.1' }, { dst: '172.16.5.3/32' }, { dst: '10.61.0.0/16', gateway: '172.16.5.3' }],
      },
    }),
    { name: 'KernelError', message: `add route 10.0.0.0/8 dev nsm-5 (netns ${endpoint.path}): errno 101` },
  )
  t.same(linkNames(client.name), ['lo'], 'no link left in the client')
  t.same(linkNames(endpoint.name), ['lo'], 'no link left in the endpoint')
  t.same(routesOf(client.name), [], 'no route left in the client')
  t.same(routesOf(endpoint.name), [], 'no route left in the endpoint')
})

t.test('a cross-connect with a malformed address or route (found after the veth exists) leaves nothing', async (t) => {
  const client = makeNetns(t, 'cl')
  const endpoint = makeNetns(t, 'ep')
  for (const bad of [{ addresses: ['172.16.8.300/32'], routes: [] }, { addresses: ['172.16.8.2/32'], routes: [{ dst: '10.0.0.0/99' }] }]) {
    await t.rejects(
      buildCrossConnect(sessions, {
        client: { netns: client.path, ifname: 'nsm-1', addresses: ['172.16.8.3/32'], routes: [{ dst: '172.16.8.2/32' }] },
        endpoint: { netns: endpoint.path, ifname: 'nsm-8', ...bad },
      }),
      { code: 'INVALID_ARGUMENT' },
      JSON.stringify(bad),
    )
    t.same(linkNames(client.name), ['lo'], 'no link left in the client')
    t.same(linkNames(endpoint.name), ['lo'], 'no link left in the endpoint')
  }
})

t.test('a cross-connect: both ends up with their addresses, routes, MTU and MAC, one queue each', async (t) => {
  const client = makeNetns(t, 'cl')
  const endpoint = makeNetns(t, 'ep')
  await buildCrossConnect(sessions, {
    mtu: 1400,
    client: { netns: client.path, ifname: 'nsm-c', mac: '02:00:00:00:00:c1', addresses: ['172.16.6.3/32'], routes: [{ dst: '172.16.6.2/32' }, { dst: '10.62.0.0/16', gateway: '172.16.6.2' }] },
    endpoint: { netns: endpoint.path, ifname: 'nsm-e', addresses: ['172.16.6.2/32'], routes: [{ dst: '172.16.6.3/32' }] },
  })
  const c = JSON.parse(ip(client.name, '-j', '-d', 'link', 'show', 'dev', 'nsm-c')) as IpLink[]
  t.equal(c[0]?.mtu, 1400)
  t.equal(c[0]?.address, '02:00:00:00:00:c1')
  t.ok(c[0]?.flags.includes('UP') && c[0]?.flags.includes('LOWER_UP'), 'client end up with carrier')
  t.equal(c[0]?.num_tx_queues, 1)
  t.ok(showLink(endpoint.name, 'nsm-e').flags.includes('UP'), 'endpoint end up')
  t.same(linkAddresses(endpoint.name, 'nsm-e').filter((x) => !x.startsWith('fe80')), ['172.16.6.2/32'])
  t.ok(routesOf(client.name).some((r) => r.dst === '10.62.0.0/16' && r.gateway === '172.16.6.2'), 'the route via the endpoint')
  t.ok(routesOf(endpoint.name).some((r) => r.dst === '172.16.6.3'), 'the host route back')
})

t.test('a dump spanning many datagrams, with batch ACKs arriving between them on the same socket, lists every link', async (t) => {
  const a = makeNetns(t)
  // 40 veth pairs (no dummy links in this kernel), 80 links: their RTM_NEWLINK replies (~1.5 KB each) take
  // many datagrams.
  const pairs = Array.from({ length: 40 }, (_, i) => [`dd${i}`, `de${i}`] as const)
  execFileSync('ip', ['-n', a.name, '-batch', '-'], { input: pairs.map(([x, y]) => `link add ${x} type veth peer name ${y}\n`).join('') })
  const names = pairs.flat()
  const h = sessions.forNetns(a.path)
  const flip = await getLink(h, 'dd0')
  t.ok(flip !== undefined)
  const link = { index: flip?.index ?? 0, name: 'dd0' }
  let batches = 0
  for (let round = 0; round < 20; round++) {
    let listing = true
    // Batches on the same socket for as long as the dump runs: their ACKs land between its datagrams.
    const flipping = (async () => {
      for (let up = true; listing; up = !up) {
        await h.batch([setLinkMessage(link, { up })])
        batches++
      }
    })()
    const listed = await listLinks(h).finally(() => (listing = false))
    await flipping
    t.same(
      listed.map((l) => l.name).sort(),
      ['lo', ...names].sort(),
      `round ${round}: every link listed`,
    )
  }
  t.ok(batches >= 20, `${batches} batches ran while the dumps did`)
})
