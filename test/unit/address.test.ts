// Unit tests for the two address codecs with one API: ipam/address.ts (the `ip-address` library, used by the
// agent) and ipam/range/ip.ts (hand-written, used by the exec'd CNI plugins). One table of edge cases runs
// through both, then a differential sample checks they agree; the library module's byte conversion last.
import t from 'tap'
import * as library from '../../ipam/address.js'
import * as lean from '../../ipam/range/ip.js'

const codecs = { 'ipam/address.ts (ip-address)': library, 'ipam/range/ip.ts (hand-written)': lean } as const
type Codec = Pick<typeof library, 'parseIp' | 'parseCidr' | 'formatIp' | 'formatCidr' | 'networkOf' | 'lastOf' | 'contains' | 'familyBits'>

const ADDRESSES: Array<[string, 4 | 6, bigint, string]> = [
  ['0.0.0.0', 4, 0n, '0.0.0.0'],
  ['255.255.255.255', 4, 0xffffffffn, '255.255.255.255'], // the limited broadcast is an address
  ['10.0.0.1', 4, 0x0a000001n, '10.0.0.1'],
  ['::', 6, 0n, '::'],
  ['0:0:0:0:0:0:0:0', 6, 0n, '::'],
  ['::1', 6, 1n, '::1'],
  ['1::', 6, 1n << 112n, '1::'],
  ['FD00:0:0:0:0:0:0:1', 6, (0xfd00n << 112n) | 1n, 'fd00::1'], // lowercase
  ['fd00:0000:0000:0000:0000:0000:0000:0001', 6, (0xfd00n << 112n) | 1n, 'fd00::1'], // leading zeros dropped
  ['2001:db8:0:0:1:0:0:1', 6, 0x20010db8000000000001000000000001n, '2001:db8::1:0:0:1'], // leftmost of equal runs
  ['2001:0:0:1:0:0:0:1', 6, 0x20010000000000010000000000000001n, '2001:0:0:1::1'], // longest run wins
  ['2001:db8:0:1:1:1:1:1', 6, 0x20010db8000000010001000100010001n, '2001:db8:0:1:1:1:1:1'], // one 0 group stays
  ['1:2:3:4:5:6:7::', 6, 0x00010002000300040005000600070000n, '1:2:3:4:5:6:7:0'], // `::` for one group is expanded
  ['::2:3:4:5:6:7:8', 6, 0x00000002000300040005000600070008n, '0:2:3:4:5:6:7:8'],
  ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 6, (1n << 128n) - 1n, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  // IPv4-mapped (::ffff:0:0/96) keeps a dotted tail (RFC 5952 §5), however it was written; it stays IPv6.
  ['::ffff:10.1.2.3', 6, 0xffff0a010203n, '::ffff:10.1.2.3'],
  ['::FFFF:a01:203', 6, 0xffff0a010203n, '::ffff:10.1.2.3'],
  ['0:0:0:0:0:ffff:10.1.2.3', 6, 0xffff0a010203n, '::ffff:10.1.2.3'],
  ['::ffff:0:0', 6, 0xffff00000000n, '::ffff:0.0.0.0'],
  ['::ffff:255.255.255.255', 6, 0xffffffffffffn, '::ffff:255.255.255.255'],
  // Other embeddings are plain hex: IPv4-compatible (deprecated), NAT64, a dotted tail anywhere else.
  ['::10.1.2.3', 6, 0x0a010203n, '::a01:203'],
  ['64:ff9b::1.2.3.4', 6, 0x0064ff9b000000000000000001020304n, '64:ff9b::102:304'],
  ['1:2:3:4:5:6:10.1.2.3', 6, 0x0001000200030004000500060a010203n, '1:2:3:4:5:6:a01:203'],
  ['fd00::ffff:0:1', 6, 0xfd000000000000000000ffff00000001n, 'fd00::ffff:0:1'],
  ['::1:ffff:10.1.2.3', 6, 0x1ffff0a010203n, '::1:ffff:a01:203'], // not in ::ffff:0:0/96
]

const NOT_ADDRESSES = [
  '', ' ', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '1.2.3.256', '-1.2.3.4', '0x1.2.3.4', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.4/32',
  '1..2.3', '\uff11.2.3.4', 'fe80::1%eth0', 'fe80::1%', '[::1]', ':::', ':1::', '1::2:', '1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9',
  '1:2:3:4:5:6:7:8::', 'g::', '12345::', '::ffff:01.2.3.4', '::ffff:1.2.3', '::1.2.3.4:5', 'fd00::1/128', 'localhost',
]

const CIDRS: Array<[string, string, string, string]> = [
  // text, as written (host bits kept), network, last address
  ['0.0.0.0/0', '0.0.0.0/0', '0.0.0.0', '255.255.255.255'],
  ['10.0.0.5/24', '10.0.0.5/24', '10.0.0.0', '10.0.0.255'], // the IPv4 broadcast is the last address
  ['10.0.0.5/31', '10.0.0.5/31', '10.0.0.4', '10.0.0.5'],
  ['10.0.0.5/32', '10.0.0.5/32', '10.0.0.5', '10.0.0.5'],
  ['255.255.255.255/32', '255.255.255.255/32', '255.255.255.255', '255.255.255.255'],
  ['::/0', '::/0', '::', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['FD00::1:2/64', 'fd00::1:2/64', 'fd00::', 'fd00::ffff:ffff:ffff:ffff'],
  ['fd00::1/127', 'fd00::1/127', 'fd00::', 'fd00::1'],
  ['fd00::1/128', 'fd00::1/128', 'fd00::1', 'fd00::1'],
  ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ['::ffff:10.9.8.7/104', '::ffff:10.9.8.7/104', '::ffff:10.0.0.0', '::ffff:10.255.255.255'],
]

const NOT_CIDRS = [
  '10.0.0.0', '10.0.0.0/', '10.0.0.0/33', '10.0.0.0/024', '10.0.0.0/08', '10.0.0.0/-1', '10.0.0.0/+8', '10.0.0.0/ 8', '10.0.0.0/8 ', '10.0.0.0/8/8',
  '10.0.0.0/1e1', 'fd00::/129', 'fd00::/064', 'fd00::/1000', 'fe80::%eth0/64', 'fe80::/64%eth0', 'x/8', '/8', '01.0.0.0/8',
]

for (const [name, c] of Object.entries(codecs) as Array<[string, Codec]>) {
  t.test(`${name}: addresses`, async (t) => {
    for (const [text, family, value, canon] of ADDRESSES) {
      const ip = c.parseIp(text)
      t.same(ip, { family, value }, `${text} parses`)
      if (ip === undefined) continue
      t.equal(c.formatIp(ip), canon, `${text} formats as ${canon}`)
      t.same(c.parseIp(canon), ip, `${canon} parses back`)
    }
    for (const bad of NOT_ADDRESSES) t.equal(c.parseIp(bad), undefined, `${JSON.stringify(bad)} is not an address`)
    for (const [family, value] of [[4, 1n << 32n], [4, -1n], [6, 1n << 128n]] as const) {
      t.throws(() => c.formatIp({ family, value }), `${value} is outside IPv${family}`)
    }
  })

  t.test(`${name}: CIDRs, bounds and membership`, async (t) => {
    for (const [text, written, network, last] of CIDRS) {
      const cidr = c.parseCidr(text)
      if (cidr === undefined) {
        t.fail(`${text} parses`)
        continue
      }
      t.equal(c.formatCidr(cidr), written, `${text} keeps its host bits`)
      t.equal(c.formatIp(c.networkOf(cidr)), network, `${text} network`)
      t.equal(c.formatIp(c.lastOf(cidr)), last, `${text} last address`)
      t.ok(c.contains(cidr, c.networkOf(cidr)) && c.contains(cidr, c.lastOf(cidr)) && c.contains(cidr, cidr.ip), `${text} contains its bounds and its address`)
      const below = c.networkOf(cidr).value - 1n
      const above = c.lastOf(cidr).value + 1n
      const size = 1n << BigInt(c.familyBits(cidr.ip.family))
      if (below >= 0n) t.notOk(c.contains(cidr, { family: cidr.ip.family, value: below }), `${text} does not contain the address below`)
      if (above < size) t.notOk(c.contains(cidr, { family: cidr.ip.family, value: above }), `${text} does not contain the address above`)
    }
    for (const bad of NOT_CIDRS) t.equal(c.parseCidr(bad), undefined, `${JSON.stringify(bad)} is not a CIDR`)
    const all4 = c.parseCidr('0.0.0.0/0')
    const all6 = c.parseCidr('::/0')
    const mapped = c.parseCidr('::ffff:0.0.0.0/96')
    const v4 = c.parseIp('10.0.0.1')
    if (all4 === undefined || all6 === undefined || mapped === undefined || v4 === undefined) throw new Error('test input')
    t.notOk(c.contains(all6, v4), '::/0 holds no IPv4 address: families never mix')
    t.notOk(c.contains(mapped, v4), 'nor does ::ffff:0:0/96')
    t.notOk(c.contains(all4, { family: 6, value: 1n }), '0.0.0.0/0 holds no IPv6 address')
    t.ok(c.contains(mapped, { family: 6, value: 0xffff0a000001n }), '::ffff:10.0.0.1 is in ::ffff:0:0/96')
  })
}

/** A deterministic pseudo-random sequence (xorshift32), so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
}

t.test('the two codecs agree on a differential sample', async (t) => {
  const r = rng(0x5eed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T
  const show = (x: unknown): string => JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString(16) : v))
  // Texts built from tokens that exercise the parsers' corners.
  const tokens = ['0', '00', '0000', '1', 'a', 'F', 'ffff', 'FFFF', '12345', 'g', '', '1.2.3.4', '255.255.255.255', '256.1.1.1', '01.2.3.4', '10.0.0']
  const lengths = ['0', '1', '8', '31', '32', '33', '64', '127', '128', '129', '08', '', '-1']
  let texts = 0
  let parsed = 0
  const mismatches: string[] = []
  for (let i = 0; i < 6000; i++) {
    let s: string
    if (i % 3 === 0) {
      s = Array.from({ length: 4 }, () => pick(['0', '1', '9', '10', '99', '127', '255', '256', '01', ''])).join('.')
    } else {
      s = Array.from({ length: Math.floor(r() * 10) }, () => pick(tokens)).join(':')
      if (r() < 0.3) s = `::${s}`
      else if (r() < 0.3) s = s.replace(':', '::')
    }
    if (r() < 0.4) s += `/${pick(lengths)}`
    texts++
    const a = library.parseIp(s)
    const b = lean.parseIp(s)
    if (show(a) !== show(b) || (a !== undefined && library.formatIp(a) !== lean.formatIp(a))) mismatches.push(`address ${JSON.stringify(s)}: ${show(a)} vs ${show(b)}`)
    const ca = library.parseCidr(s)
    const cb = lean.parseCidr(s)
    if (ca !== undefined) parsed++
    const bounds = (m: typeof library | typeof lean, c: library.Cidr | undefined): string =>
      c === undefined ? 'none' : `${m.formatCidr(c)} ${m.formatIp(m.networkOf(c))} ${m.formatIp(m.lastOf(c))}`
    if (bounds(library, ca) !== bounds(lean, cb)) mismatches.push(`CIDR ${JSON.stringify(s)}: ${bounds(library, ca)} vs ${bounds(lean, cb)}`)
  }
  // Values: random groups, biased to zero runs (compression) and to the mapped prefix (dotted tail).
  for (let i = 0; i < 6000; i++) {
    const groups = Array.from({ length: 8 }, () => (r() < 0.5 ? 0n : BigInt(Math.floor(r() * 0x10000))))
    let value = groups.reduce((v, g) => (v << 16n) | g, 0n)
    if (i % 5 === 0) value = 0xffff00000000n | (value & 0xffffffffn)
    const ip = { family: 6 as const, value }
    if (library.formatIp(ip) !== lean.formatIp(ip)) mismatches.push(`format ${value.toString(16)}: ${library.formatIp(ip)} vs ${lean.formatIp(ip)}`)
    const v4 = { family: 4 as const, value: value & 0xffffffffn }
    if (library.formatIp(v4) !== lean.formatIp(v4)) mismatches.push(`format v4 ${v4.value}`)
  }
  t.strictSame(mismatches.slice(0, 20), [], `${texts} texts (${parsed} CIDRs among them) and 12000 values give the same results`)
  t.ok(parsed > 50, 'the sample holds CIDRs that parse')
})

t.test('ipam/address.ts: network byte order through the library', async (t) => {
  const cases: Array<[string, number[]]> = [
    ['10.1.2.3', [10, 1, 2, 3]],
    ['255.255.255.255', [255, 255, 255, 255]],
    ['::1', [...Array<number>(15).fill(0), 1]],
    ['::ffff:10.1.2.3', [...Array<number>(10).fill(0), 255, 255, 10, 1, 2, 3]],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', Array<number>(16).fill(255)],
  ]
  for (const [text, bytes] of cases) {
    const ip = library.parseIp(text)
    if (ip === undefined) throw new Error(text)
    t.strictSame(library.ipToBytes(ip), bytes, `${text} -> bytes`)
    t.same(library.ipFromBytes(bytes), ip, `bytes -> ${text}`)
    t.same(library.ipFromBytes(Uint8Array.from(bytes)), ip, `Uint8Array -> ${text}`)
  }
  for (const n of [0, 3, 5, 6, 15, 17]) t.equal(library.ipFromBytes(Array<number>(n).fill(1)), undefined, `${n} bytes are no address`)
  t.throws(() => library.ipFromBytes([1, 2, 3, 256]), 'a byte above 255')
})
