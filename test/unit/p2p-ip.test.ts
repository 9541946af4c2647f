// Unit tests for ipam/p2p/ip.ts: IPv4/IPv6 text <-> bigint, canonical formatting, prefixes.
import t from 'tap'
import { P2PError } from '../../ipam/p2p/errors.js'
import { formatAddr, formatPrefix, hostPrefix, parseAddr, parsePrefix, prefixContains } from '../../ipam/p2p/ip.js'

t.test('addresses round-trip to canonical text', async (t) => {
  const cases: Array<[string, bigint, string]> = [
    ['0.0.0.0', 0n, '0.0.0.0'],
    ['172.16.1.2', 0xac100102n, '172.16.1.2'],
    ['255.255.255.255', 0xffffffffn, '255.255.255.255'],
    ['::', 0n, '::'],
    ['::1', 1n, '::1'],
    ['1::', 1n << 112n, '1::'],
    ['FD00:0:0:0:0:0:0:1', (0xfd00n << 112n) | 1n, 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', 0x20010db8000000000001000000000001n, '2001:db8::1:0:0:1'], // leftmost of equal runs
    ['2001:0:0:1:0:0:0:1', 0x20010000000000010000000000000001n, '2001:0:0:1::1'], // longest run wins
    ['2001:db8:0:1:1:1:1:1', 0x20010db8000000010001000100010001n, '2001:db8:0:1:1:1:1:1'], // a single 0 is not compressed
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', (1n << 128n) - 1n, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ['::ffff:10.1.2.3', 0xffff0a010203n, '::ffff:10.1.2.3'],
    ['::10.1.2.3', 0x0a010203n, '::a01:203'],
    ['1:2:3:4:5:6:10.1.2.3', 0x0001000200030004000500060a010203n, '1:2:3:4:5:6:a01:203'],
    ['fd00::ffff:0:1', 0xfd000000000000000000ffff00000001n, 'fd00::ffff:0:1'],
  ]
  for (const [text, value, canon] of cases) {
    const a = parseAddr(text)
    t.equal(a.value, value, `${text} value`)
    t.equal(formatAddr(a), canon, `${text} formats as ${canon}`)
    t.equal(parseAddr(canon).value, value, `${canon} parses back`)
  }
  for (const bad of ['', '1.2.3', '1.2.3.256', '::g', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', ' 1.2.3.4']) {
    t.throws(() => parseAddr(bad, 'x'), { code: 'INVALID_PREFIX', field: 'x' }, JSON.stringify(bad))
  }
})

t.test('prefixes normalise host bits and bound their range', async (t) => {
  const cases: Array<[string, string, string, string]> = [
    ['192.168.3.4/16', '192.168.0.0/16', '192.168.0.0', '192.168.255.255'],
    ['10.0.0.7/32', '10.0.0.7/32', '10.0.0.7', '10.0.0.7'],
    ['0.0.0.0/0', '0.0.0.0/0', '0.0.0.0', '255.255.255.255'],
    ['fd00::1:2/64', 'fd00::/64', 'fd00::', 'fd00::ffff:ffff:ffff:ffff'],
    ['::/0', '::/0', '::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ]
  for (const [text, canon, first, last] of cases) {
    const p = parsePrefix(text)
    t.equal(formatPrefix(p), canon, text)
    t.equal(formatAddr({ family: p.family, value: p.first }), first, `${text} first`)
    t.equal(formatAddr({ family: p.family, value: p.last }), last, `${text} last`)
  }
  for (const bad of ['10.0.0.0', '10.0.0.0/33', '10.0.0.0/', '10.0.0.0/a', 'fd00::/129', 'x/8']) {
    const err = t.throws(() => parsePrefix(bad, 'pools[0]')) as unknown
    t.ok(err instanceof P2PError && err.code === 'INVALID_PREFIX' && err.message.startsWith('pools[0]: '), bad)
  }
  t.equal(hostPrefix(parseAddr('10.1.1.1')), '10.1.1.1/32')
  t.equal(hostPrefix(parseAddr('fd00::1')), 'fd00::1/128')
  t.ok(prefixContains(parsePrefix('10.0.0.0/8'), parseAddr('10.255.0.1')))
  t.notOk(prefixContains(parsePrefix('10.0.0.0/8'), parseAddr('11.0.0.0')))
  t.notOk(prefixContains(parsePrefix('::/0'), parseAddr('10.0.0.1')), 'families never mix')
})

t.test('edges: /0, /32, /128, the broadcast, v4-mapped, compressed forms, strict lengths', async (t) => {
  const cases: Array<[string, string, string, string]> = [
    ['255.255.255.255/32', '255.255.255.255/32', '255.255.255.255', '255.255.255.255'],
    ['10.0.0.255/24', '10.0.0.0/24', '10.0.0.0', '10.0.0.255'], // the broadcast is the last address
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ['FD00:0:0:0::1/127', 'fd00::/127', 'fd00::', 'fd00::1'],
    ['::ffff:10.1.2.3/112', '::ffff:10.1.0.0/112', '::ffff:10.1.0.0', '::ffff:10.1.255.255'],
    ['2001:db8:0:0:1::/80', '2001:db8:0:0:1::/80', '2001:db8:0:0:1::', '2001:db8::1:ffff:ffff:ffff'], // the longer zero run wins
  ]
  for (const [text, canon, first, last] of cases) {
    const p = parsePrefix(text)
    t.equal(formatPrefix(p), canon, text)
    t.equal(formatAddr({ family: p.family, value: p.first }), first, `${text} first`)
    t.equal(formatAddr({ family: p.family, value: p.last }), last, `${text} last`)
  }
  t.equal(parsePrefix('::ffff:10.0.0.0/104').family, 6, 'v4-mapped stays IPv6')
  t.equal(hostPrefix(parseAddr('::ffff:10.0.0.1')), '::ffff:10.0.0.1/128')
  const msgs: Array<[string, string]> = [
    ['10.0.0.0/08', 'p: "10.0.0.0/08" has an invalid prefix length'],
    ['fd00::/064', 'p: "fd00::/064" has an invalid prefix length'],
    ['fd00::/128/1', 'p: "fd00::/128/1" has an invalid prefix length'],
    ['fe80::%eth0/64', 'p: "fe80::%eth0" is not an IP address'],
    ['fe80::/64%eth0', 'p: "fe80::/64%eth0" has an invalid prefix length'],
    ['010.0.0.0/8', 'p: "010.0.0.0" is not an IP address'],
    ['10.0.0.0', 'p: "10.0.0.0" is not a prefix (address/length)'],
  ]
  for (const [bad, message] of msgs) t.throws(() => parsePrefix(bad, 'p'), { code: 'INVALID_PREFIX', field: 'p', message }, bad)
  t.throws(() => formatAddr({ family: 4, value: 1n << 32n }), 'a value past 255.255.255.255 is no address')
  t.throws(() => formatAddr({ family: 6, value: 1n << 128n }), 'a value past ffff:...:ffff is no address')
})

t.test('parsed prefixes are cached by text, never shared', async (t) => {
  const a = parsePrefix('fd00::/64')
  a.first = 0n
  a.length = 0
  const b = parsePrefix('fd00::/64')
  t.equal(formatPrefix(b), 'fd00::/64', 'a caller changing its result does not change the next one')
  t.not(a, b)
  let err: unknown
  try {
    parsePrefix('fd00::/64', 'again')
    parsePrefix('fd00::/640', 'again')
  } catch (e) {
    err = e
  }
  t.match(err, { field: 'again' }, 'errors are not cached')
})
