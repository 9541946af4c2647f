// Unit tests for ipam/range: address parsing/formatting, host-local range semantics, allocation order,
// and the allocator over the in-memory store (requested addresses, exhaustion, rollback, release, GC).
import t from 'tap'
import { allocate, allocationCidr, exhaustedSets, gc, release } from '../../ipam/range/allocator'
import { IpamError } from '../../ipam/range/errors'
import { formatIp, parseCidr, parseIp, type Ip } from '../../ipam/range/ip'
import { canonicalizeRangeSets, candidates, capacity, type RangeSet } from '../../ipam/range/range'
import { MemoryStore } from '../../ipam/store/memory'

const ip = (s: string): Ip => {
  const x = parseIp(s)
  if (x === undefined) throw new Error(`bad test address ${s}`)
  return x
}
const sets = (...s: Array<Array<Record<string, string>>>): RangeSet[] => canonicalizeRangeSets(s.map((ranges, i) => ({ field: `ipam.ranges[${i}]`, ranges })))
async function ipamCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p
  } catch (err) {
    if (err instanceof IpamError) return err.code
    throw err
  }
  return undefined
}

t.test('addresses: parse and canonical format', async (t) => {
  const cases: Array<[string, string]> = [
    ['10.0.0.1', '10.0.0.1'],
    ['255.255.255.255', '255.255.255.255'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:0:0:1:1:0:0:1', '2001::1:1:0:0:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fd00::', 'fd00::'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
    ['::ffff:10.1.2.3', '::ffff:10.1.2.3'], // RFC 5952 §5: IPv4-mapped keeps the dotted tail
  ]
  for (const [input, want] of cases) t.equal(formatIp(ip(input)), want, `${input} -> ${want}`)
  for (const bad of ['10.0.0', '10.0.0.256', '01.0.0.1', '1::2::3', '1:2:3:4:5:6:7:8:9', 'g::1', '', '10.0.0.1 ', 'fe80::1%eth0']) {
    t.equal(parseIp(bad), undefined, `${JSON.stringify(bad)} is not an address`)
  }
  t.same(parseCidr('10.0.0.5/24'), { ip: ip('10.0.0.5'), prefix: 24 })
  for (const bad of ['10.0.0.0/33', '10.0.0.0', 'fd00::/129', '10.0.0.0/024']) t.equal(parseCidr(bad), undefined, `${bad} is not a CIDR`)
})

t.test('ranges: host-local defaults and validation naming the field', async (t) => {
  const [[r]] = sets([{ subnet: '10.1.2.77/24' }]) as [[RangeSet[number]]]
  t.equal(formatIp(r.subnet.ip), '10.1.2.0', 'host bits cleared')
  t.equal(formatIp(r.gateway), '10.1.2.1')
  t.equal(formatIp(r.start), '10.1.2.1')
  t.equal(formatIp(r.end), '10.1.2.254', 'IPv4 ends before the broadcast')
  t.equal(capacity([r]), 253n, '.2 to .254')
  const [[r6]] = sets([{ subnet: 'fd00::/120' }]) as [[RangeSet[number]]]
  t.equal(formatIp(r6.end), 'fd00::ff', 'IPv6 ends at the last address')
  t.equal(capacity([r6]), 254n)
  const bad: Array<[Array<Array<Record<string, string>>>, RegExp]> = [
    [[[{ subnet: '10.0.0.0/31' }]], /ipam.ranges\[0\]\[0\].subnet: 10.0.0.0\/31 is too small/],
    [[[{ subnet: 'nope' }]], /ipam.ranges\[0\]\[0\].subnet: "nope" is not a CIDR/],
    [[[{ subnet: '10.0.0.0/24', gateway: '10.0.1.1' }]], /ipam.ranges\[0\]\[0\].gateway: 10.0.1.1 is not in 10.0.0.0\/24/],
    [[[{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.50', rangeEnd: '10.0.0.40' }]], /rangeStart: 10.0.0.50 is after rangeEnd/],
    [[[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]], /ipam.ranges\[0\]\[1\].subnet: mixes IPv4 and IPv6/],
    [[[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.0.0.128/25' }]], /ipam.ranges\[1\]\[0\].subnet: 10.0.0.128\/25 overlaps ipam.ranges\[0\]\[0\]/],
    [[[]], /ipam.ranges\[0\]: a range set must be a non-empty list/],
  ]
  for (const [input, re] of bad) t.throws(() => sets(...input), re)
  t.throws(() => canonicalizeRangeSets([]), /no ranges configured/)
})

t.test('candidates: gateway skipped, round-robin after the last reserved, wrap-around, across ranges', async (t) => {
  const s = sets([{ subnet: '10.0.0.0/29' }, { subnet: '10.0.1.0/30' }])[0] as RangeSet
  const all = [...candidates(s, new Set())].map((c) => formatIp(c.ip))
  t.same(all, ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.1.2'])
  const afterLast = [...candidates(s, new Set(['10.0.0.3']), ip('10.0.0.5'))].map((c) => formatIp(c.ip))
  t.same(afterLast, ['10.0.0.6', '10.0.1.2', '10.0.0.2', '10.0.0.4', '10.0.0.5'], 'starts after last, wraps, skips reserved')
  const g = sets([{ subnet: '10.0.0.0/29', gateway: '10.0.0.4', rangeStart: '10.0.0.3' }])[0] as RangeSet
  t.same([...candidates(g, new Set())].map((c) => formatIp(c.ip)), ['10.0.0.3', '10.0.0.5', '10.0.0.6'])
})

t.test('allocator: dual-stack, requested addresses, duplicates refused, exhaustion, rollback', async (t) => {
  const store = new MemoryStore()
  const s = sets([{ subnet: '10.0.0.0/29' }], [{ subnet: 'fd00::/125' }])
  const a = await allocate(store, s, { containerID: 'c1', ifname: 'eth0' })
  t.same(a.map(allocationCidr), ['10.0.0.2/29', 'fd00::2/125'])
  t.equal(await ipamCode(allocate(store, s, { containerID: 'c1', ifname: 'eth0' })), 'ATTACHMENT_EXISTS')
  const b = await allocate(store, s, { containerID: 'c1', ifname: 'eth1' }, [ip('10.0.0.6')])
  t.same(b.map(allocationCidr), ['10.0.0.6/29', 'fd00::3/125'], 'requested v4, next free v6')
  t.equal(await ipamCode(allocate(store, s, { containerID: 'c2', ifname: 'eth0' }, [ip('10.0.0.6')])), 'ADDRESS_UNAVAILABLE')
  t.equal(await ipamCode(allocate(store, s, { containerID: 'c2', ifname: 'eth0' }, [ip('10.0.0.1')])), 'ADDRESS_OUTSIDE_RANGES', 'the gateway cannot be requested')
  t.equal(await ipamCode(allocate(store, s, { containerID: 'c2', ifname: 'eth0' }, [ip('10.9.0.1')])), 'ADDRESS_OUTSIDE_RANGES')
  t.equal(store.reservations.size, 4, 'failed calls left nothing behind')
  // v4 has .3 .4 .5 left; v6 has ::4 ::5 ::6 ::7 (fd00::/125 = ::1 gateway, ::2..::7).
  for (const id of ['c3', 'c4', 'c5']) await allocate(store, s, { containerID: id, ifname: 'eth0' })
  t.same(await exhaustedSets(store, s), [0], 'v4 set is full')
  const before = store.reservations.size
  t.equal(await ipamCode(allocate(store, s, { containerID: 'c6', ifname: 'eth0' })), 'POOL_EXHAUSTED')
  t.equal(store.reservations.size, before, 'the v6 address claimed before the v4 failure was rolled back')
  // Release is idempotent and by owner.
  t.same((await release(store, { containerID: 'c1', ifname: 'eth0' })).sort(), ['10.0.0.2', 'fd00::2'])
  t.same(await release(store, { containerID: 'c1', ifname: 'eth0' }), [])
  t.same(await exhaustedSets(store, s), [])
  // Round-robin: the next address after the last handed out, not the one just released.
  const next = await allocate(store, s, { containerID: 'c7', ifname: 'eth0' })
  t.same(next.map(allocationCidr), ['10.0.0.2/29', 'fd00::7/125'], 'v4 wrapped to the only free one; v6 continues after ::6')
})

t.test('allocator: GC keeps valid attachments only', async (t) => {
  const store = new MemoryStore()
  const s = sets([{ subnet: '10.0.0.0/24' }])
  for (const [c, i] of [['a', 'eth0'], ['a', 'eth1'], ['b', 'eth0'], ['c', 'eth0']] as const) await allocate(store, s, { containerID: c, ifname: i })
  const released = await gc(store, [{ containerID: 'a', ifname: 'eth0' }, { containerID: 'c', ifname: 'eth0' }, { containerID: 'zzz', ifname: 'eth0' }])
  t.same(released.map((r) => `${r.containerID}/${r.ifname}`).sort(), ['a/eth1', 'b/eth0'])
  t.same([...store.reservations.values()].map((r) => `${r.containerID}/${r.ifname}`).sort(), ['a/eth0', 'c/eth0'])
  t.same((await gc(store, [])).length, 2, 'an empty list releases everything')
  t.equal(store.reservations.size, 0)
})

t.test('allocator: a store failure is an error, not a silent success', async (t) => {
  const store = new MemoryStore()
  store.broken = new IpamError('STORE', 'disk on fire')
  t.equal(await ipamCode(allocate(store, sets([{ subnet: '10.0.0.0/24' }]), { containerID: 'a', ifname: 'eth0' })), 'STORE')
})
