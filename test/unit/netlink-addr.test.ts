// Unit tests for pkg/netlink/addr.ts: addresses and prefixes <-> the bytes rtnetlink carries (through the
// ip-address library), strict errors naming the input, MAC addresses.
import t from 'tap'
import { KernelError } from '../../pkg/errors.js'
import { AF_INET, AF_INET6 } from '../../pkg/netlink/codec.js'
import { formatIp, formatMac, formatPrefix, parseIp, parseMac, parsePrefix } from '../../pkg/netlink/addr.js'

const hex = (b: Buffer): string => b.toString('hex')

t.test('addresses to bytes and back', async (t) => {
  const cases: Array<[string, number, string, string]> = [
    ['10.1.2.3', AF_INET, '0a010203', '10.1.2.3'],
    ['0.0.0.0', AF_INET, '00000000', '0.0.0.0'],
    ['255.255.255.255', AF_INET, 'ffffffff', '255.255.255.255'],
    ['::', AF_INET6, '0'.repeat(32), '::'],
    ['FD00::1', AF_INET6, `fd00${'0'.repeat(26)}01`, 'fd00::1'],
    ['::ffff:10.1.2.3', AF_INET6, `${'0'.repeat(20)}ffff0a010203`, '::ffff:10.1.2.3'], // mapped: dotted tail, AF_INET6
    ['fe80:0:0:0:0:0:0:1', AF_INET6, `fe80${'0'.repeat(26)}01`, 'fe80::1'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', AF_INET6, 'f'.repeat(32), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ]
  for (const [text, family, bytes, canon] of cases) {
    const ip = parseIp(text)
    t.equal(ip.family, family, `${text} family`)
    t.equal(hex(ip.bytes), bytes, `${text} bytes`)
    t.equal(formatIp(ip.bytes), canon, `${text} formats as ${canon}`)
    t.equal(formatIp(new Uint8Array(ip.bytes)), canon, `${text} from a Uint8Array`)
  }
  for (const bad of ['', '10.0.0', '10.0.0.256', '010.0.0.1', 'fe80::1%eth0', '10.0.0.1/32', '1::2::3', 'eth0']) {
    t.throws(() => parseIp(bad), { name: 'KernelError', code: 'INVALID_ARGUMENT', message: `${JSON.stringify(bad)} is not an IP address` }, JSON.stringify(bad))
  }
  for (const n of [0, 1, 3, 5, 6, 15, 17]) {
    const err = t.throws(() => formatIp(Buffer.alloc(n))) as unknown
    t.ok(KernelError.is(err, 'INVALID_ARGUMENT') && err.message.includes(`${n}-byte`), `${n} bytes are refused, naming the length`)
  }
})

t.test('prefixes: CIDR or a bare address (host prefix)', async (t) => {
  const cases: Array<[string, number, number, string]> = [
    ['10.0.0.1/24', AF_INET, 24, '10.0.0.1/24'], // the host bits stay: an interface address
    ['10.0.0.1', AF_INET, 32, '10.0.0.1/32'],
    ['0.0.0.0/0', AF_INET, 0, '0.0.0.0/0'],
    ['255.255.255.255/32', AF_INET, 32, '255.255.255.255/32'],
    ['::/0', AF_INET6, 0, '::/0'],
    ['fd00::1', AF_INET6, 128, 'fd00::1/128'],
    ['fd00::1/128', AF_INET6, 128, 'fd00::1/128'],
    ['FD00:0::/64', AF_INET6, 64, 'fd00::/64'],
  ]
  for (const [text, family, len, canon] of cases) {
    const p = parsePrefix(text)
    t.equal(p.family, family, `${text} family`)
    t.equal(p.len, len, `${text} length`)
    t.equal(formatPrefix(p), canon, `${text} formats as ${canon}`)
  }
  const badLength: Array<[string, number]> = [['10.0.0.0/33', 32], ['10.0.0.0/', 32], ['10.0.0.0/08', 32], ['10.0.0.0/-1', 32], ['fd00::/129', 128], ['fd00::/064', 128], ['fd00::/64%eth0', 128]]
  for (const [bad, max] of badLength) {
    t.throws(() => parsePrefix(bad), { code: 'INVALID_ARGUMENT', message: `${JSON.stringify(bad)}: prefix length must be 0..${max}` }, bad)
  }
  for (const bad of ['x/8', 'fe80::1%eth0/64', '10.0.0/8']) {
    t.throws(() => parsePrefix(bad), { code: 'INVALID_ARGUMENT', message: /is not an IP address/ }, bad)
  }
})

t.test('MAC addresses', async (t) => {
  t.equal(formatMac(parseMac('AA:bb:0c:dd:ee:0F')), 'aa:bb:0c:dd:ee:0f')
  for (const bad of ['', 'aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:ff:00', 'aa-bb-cc-dd-ee-ff', 'a:bb:cc:dd:ee:ff', 'gg:bb:cc:dd:ee:ff']) {
    t.throws(() => parseMac(bad), { code: 'INVALID_ARGUMENT', message: /is not a MAC address/ }, JSON.stringify(bad))
  }
})
