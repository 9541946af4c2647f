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

t.test('ranges at the ends of the address space: /0, the smallest subnets, wrap-around past the last address', async (t) => {
  const [[all4]] = sets([{ subnet: '0.0.0.0/0' }]) as [[RangeSet[number]]]
  t.same([all4.subnet.ip, all4.gateway, all4.start, all4.end].map(formatIp), ['0.0.0.0', '0.0.0.1', '0.0.0.1', '255.255.255.254'], '0.0.0.0/0 ends before 255.255.255.255')
  t.equal(capacity([all4]), 2n ** 32n - 3n, 'network, gateway and broadcast excluded')
  const [[all6]] = sets([{ subnet: '::/0' }]) as [[RangeSet[number]]]
  t.same([all6.subnet.ip, all6.start, all6.end].map(formatIp), ['::', '::1', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'])
  t.equal(capacity([all6]), 2n ** 128n - 2n, 'IPv6 keeps its last address; network and gateway excluded')
  const first = (s: RangeSet, reserved: string[], last?: string, n = 3): string[] => {
    const out: string[] = []
    for (const c of candidates(s, new Set(reserved), last === undefined ? undefined : ip(last))) {
      out.push(formatIp(c.ip))
      if (out.length === n) break
    }
    return out
  }
  t.same(first([all6], [], 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'), ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '::2', '::3'], 'the last address, then around to the start')
  t.same(first([all6], [], 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), ['::2', '::3', '::4'], 'after the very last address: wraps, no overflow')
  t.same(first([all4], [], '255.255.255.254'), ['0.0.0.2', '0.0.0.3', '0.0.0.4'], 'after rangeEnd: wraps without offering the broadcast')
  t.same(first([all4], ['255.255.255.253'], '255.255.255.252'), ['255.255.255.254', '0.0.0.2', '0.0.0.3'], 'a reserved one is skipped, rangeEnd offered, then around')
  // The smallest subnets that have a host after the gateway.
  const sets30 = sets([{ subnet: '255.255.255.252/30' }])
  const s30 = sets30[0] as RangeSet
  t.same(first(s30, [], undefined, 9), ['255.255.255.254'], '/30: .252 network, .253 gateway, .255 broadcast')
  t.same(first(s30, [], '255.255.255.254', 9), ['255.255.255.254'], 'wraps onto itself')
  const s126 = sets([{ subnet: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126' }])[0] as RangeSet
  t.same(first(s126, [], undefined, 9), ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'], '/126: IPv6 hands out its last address')
  t.throws(() => sets([{ subnet: 'fd00::/127' }]), /fd00::\/127 is too small/)
  t.throws(() => sets([{ subnet: '10.0.0.0/32' }]), /10.0.0.0\/32 is too small/)
  t.throws(() => sets([{ subnet: '::ffff:10.0.0.0/128' }]), /::ffff:10.0.0.0\/128 is too small/, 'v4-mapped is IPv6, named as written canonically')
  const mapped = sets([{ subnet: '::FFFF:10.0.0.0/120' }])[0] as RangeSet
  t.same(first(mapped, []), ['::ffff:10.0.0.2', '::ffff:10.0.0.3', '::ffff:10.0.0.4'], 'v4-mapped subnets: IPv6 rules, dotted text')
  const store = new MemoryStore()
  const full = await allocate(store, sets30, { containerID: 'a', ifname: 'eth0' })
  t.same(full.map(allocationCidr), ['255.255.255.254/30'])
  t.equal(await ipamCode(allocate(store, sets30, { containerID: 'b', ifname: 'eth0' })), 'POOL_EXHAUSTED', 'one host, then exhausted')
  t.equal(await ipamCode(allocate(store, sets30, { containerID: 'b', ifname: 'eth0' }, [ip('255.255.255.255')])), 'ADDRESS_OUTSIDE_RANGES', 'the broadcast cannot be requested')
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
