// Unit tests for ipam/p2p/allocator.ts (ARCHITECTURE §7): table-driven request/release sequences, exhaustion,
// reuse, healing, undo, and the persisted-state round trip.
import t from 'tap'

/** The subtest type, taken from t.test's last overload `(cb: (t) => any)`. */
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]
import { P2PError, PointToPointPool, allocationOf, type P2PAllocation, type P2PRequest } from '../../ipam/p2p/index.js'

type Step =
  | { op: 'req'; r: Partial<P2PRequest> & { connectionId: string }; want: Partial<P2PAllocation> }
  | { op: 'req'; r: Partial<P2PRequest> & { connectionId: string }; error: { code: string; message?: RegExp } }
  | { op: 'rel'; id: string }

const FW = { endpointId: 'fw', pools: ['172.16.1.0/24'] }
const req = (connectionId: string, clientId: string, extra: Partial<P2PRequest> = {}): Partial<P2PRequest> & { connectionId: string } => ({ connectionId, clientId, ...FW, ...extra })
const v4 = (dst: string, src: string, routes: string[] = []): Partial<P2PAllocation> => ({
  dstIpAddrs: [`${dst}/32`],
  srcIpAddrs: [`${src}/32`],
  srcRoutes: [`${dst}/32`, ...routes],
  dstRoutes: [`${src}/32`],
})

const cases: Array<{ name: string; steps: Step[] }> = [
  {
    name: 'the seed: two clients of the firewall get the lowest pairs, dst first',
    steps: [
      { op: 'req', r: req('c1', 'client-a'), want: { ...v4('172.16.1.0', '172.16.1.1'), reused: false } },
      { op: 'req', r: req('c2', 'client-b'), want: v4('172.16.1.2', '172.16.1.3') },
    ],
  },
  {
    name: 'excluded prefixes are skipped, also in the middle of a pool',
    steps: [
      { op: 'req', r: req('c1', 'a', { excludedPrefixes: ['172.16.1.0/30', '10.0.0.0/8', 'fd00::/8'] }), want: v4('172.16.1.4', '172.16.1.5') },
      { op: 'req', r: req('c2', 'b', { excludedPrefixes: ['172.16.1.1/32', '172.16.1.3/32'] }), want: v4('172.16.1.0', '172.16.1.2') },
    ],
  },
  {
    name: 'dual stack: one pair per family, IPv4 first, routes normalised and deduplicated',
    steps: [
      {
        op: 'req',
        r: { connectionId: 'c1', clientId: 'a', endpointId: 'vpn', pools: ['fd00::5/64', '10.1.0.0/24'], routes: ['10.9.9.9/8', 'fd10::/48', '10.0.0.0/8'] },
        want: {
          dstIpAddrs: ['10.1.0.0/32', 'fd00::/128'],
          srcIpAddrs: ['10.1.0.1/32', 'fd00::1/128'],
          srcRoutes: ['10.1.0.0/32', 'fd00::/128', '10.0.0.0/8', 'fd10::/48'],
          dstRoutes: ['10.1.0.1/32', 'fd00::1/128'],
        },
      },
    ],
  },
  {
    name: 're-request keeps the addresses; new excluded prefixes over them move it',
    steps: [
      { op: 'req', r: req('c1', 'a'), want: { ...v4('172.16.1.0', '172.16.1.1'), reused: false } },
      { op: 'req', r: req('c2', 'b'), want: v4('172.16.1.2', '172.16.1.3') },
      { op: 'req', r: req('c1', 'a'), want: { ...v4('172.16.1.0', '172.16.1.1'), reused: true } },
      { op: 'req', r: req('c1', 'a', { excludedPrefixes: ['172.16.1.1/32'] }), want: { ...v4('172.16.1.0', '172.16.1.4'), reused: false } },
    ],
  },
  {
    name: 'release frees the pair for the next connection; releasing twice is harmless',
    steps: [
      { op: 'req', r: req('c1', 'a'), want: v4('172.16.1.0', '172.16.1.1') },
      { op: 'req', r: req('c2', 'b'), want: v4('172.16.1.2', '172.16.1.3') },
      { op: 'req', r: req('c3', 'c'), want: v4('172.16.1.4', '172.16.1.5') },
      { op: 'rel', id: 'c2' },
      { op: 'rel', id: 'c2' },
      { op: 'req', r: req('c4', 'd'), want: v4('172.16.1.2', '172.16.1.3') },
      { op: 'rel', id: 'c1' },
      { op: 'req', r: req('c5', 'e'), want: v4('172.16.1.0', '172.16.1.1') },
    ],
  },
  {
    name: "a client's connections to two endpoints with the same pool never overlap; unrelated parties may",
    steps: [
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e1', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.0', '10.0.0.1') },
      { op: 'req', r: { connectionId: 'c2', clientId: 'pod', endpointId: 'e2', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.2', '10.0.0.3') },
      { op: 'req', r: { connectionId: 'c3', clientId: 'other', endpointId: 'e3', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.0', '10.0.0.1') },
    ],
  },
  {
    name: 'composition: the firewall (endpoint and client, one party) gets no address twice',
    steps: [
      { op: 'req', r: { connectionId: 'client-fw', clientId: 'client', endpointId: 'fw', pools: ['172.16.0.0/16'] }, want: v4('172.16.0.0', '172.16.0.1') },
      { op: 'req', r: { connectionId: 'fw-vpn', clientId: 'fw', endpointId: 'vpn', pools: ['172.16.0.0/24'], routes: ['10.0.0.0/8'] }, want: v4('172.16.0.2', '172.16.0.3', ['10.0.0.0/8']) },
    ],
  },
  {
    name: 'exhaustion: a /31 holds one pair, a /32 none; the next pool is used',
    steps: [
      { op: 'req', r: req('c1', 'a', { pools: ['10.0.0.0/31'] }), want: v4('10.0.0.0', '10.0.0.1') },
      { op: 'req', r: req('c2', 'b', { pools: ['10.0.0.0/31'] }), error: { code: 'POOL_EXHAUSTED', message: /^no free IPv4 address pair for connection c2 in the pools of endpoint fw \(10\.0\.0\.0\/31\)$/ } },
      { op: 'req', r: req('c2', 'b', { pools: ['10.0.0.0/31', '10.0.1.0/32', '10.0.2.0/30'] }), want: v4('10.0.2.0', '10.0.2.1') },
      { op: 'req', r: req('c3', 'c', { pools: ['10.0.0.0/31'], excludedPrefixes: [] }), error: { code: 'POOL_EXHAUSTED' } },
    ],
  },
  {
    name: 'exhaustion by excluded prefixes, and in one family of two',
    steps: [
      { op: 'req', r: req('c1', 'a', { excludedPrefixes: ['172.16.0.0/16'] }), error: { code: 'POOL_EXHAUSTED' } },
      { op: 'req', r: req('c1', 'a', { pools: ['10.0.0.0/24', 'fd00::/127'] }), want: { dstIpAddrs: ['10.0.0.0/32', 'fd00::/128'] } },
      { op: 'req', r: req('c2', 'b', { pools: ['10.0.0.0/24', 'fd00::/127'] }), error: { code: 'POOL_EXHAUSTED', message: /IPv6/ } },
    ],
  },
  {
    name: 'the ends of the address space: /0 pools, pairs up to the last address, nothing past it',
    steps: [
      { op: 'req', r: req('c1', 'a', { pools: ['0.0.0.0/0', '::/0'] }), want: { dstIpAddrs: ['0.0.0.0/32', '::/128'], srcIpAddrs: ['0.0.0.1/32', '::1/128'] } },
      { op: 'req', r: req('c2', 'b', { pools: ['255.255.255.252/30'] }), want: v4('255.255.255.252', '255.255.255.253') },
      { op: 'req', r: req('c3', 'c', { pools: ['255.255.255.252/30'] }), want: v4('255.255.255.254', '255.255.255.255') },
      { op: 'req', r: req('c4', 'd', { pools: ['255.255.255.252/30'] }), error: { code: 'POOL_EXHAUSTED', message: /\(255\.255\.255\.252\/30\)$/ } },
      { op: 'req', r: req('c4', 'd', { pools: ['255.255.255.254/30'] }), error: { code: 'POOL_EXHAUSTED' } }, // host bits set: the same /30
      {
        op: 'req',
        r: req('c5', 'e', { pools: ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127'] }),
        want: { dstIpAddrs: ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/128'], srcIpAddrs: ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'] },
      },
      { op: 'req', r: req('c6', 'f', { pools: ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127'] }), error: { code: 'POOL_EXHAUSTED', message: /IPv6/ } },
      // Excluding the pool's top (or everything) moves the search past the last address: exhausted, not an overflow.
      { op: 'req', r: req('c6', 'f', { pools: ['::/0'], excludedPrefixes: ['::/0'] }), error: { code: 'POOL_EXHAUSTED' } },
      { op: 'req', r: req('c6', 'f', { pools: ['0.0.0.0/0'], excludedPrefixes: ['0.0.0.0/1', '128.0.0.0/1'] }), error: { code: 'POOL_EXHAUSTED' } },
      { op: 'req', r: req('c6', 'f', { pools: ['255.255.255.248/29'], excludedPrefixes: ['255.255.255.248/30', '255.255.255.253/32'] }), error: { code: 'POOL_EXHAUSTED' } },
    ],
  },
  {
    name: 'IPv4-mapped pools are IPv6: canonical text with a dotted tail',
    steps: [
      { op: 'req', r: req('c1', 'a', { pools: ['::FFFF:10.0.0.9/120'], routes: ['::ffff:a00:0/104'] }), want: { dstIpAddrs: ['::ffff:10.0.0.0/128'], srcIpAddrs: ['::ffff:10.0.0.1/128'], srcRoutes: ['::ffff:10.0.0.0/128', '::ffff:10.0.0.0/104'] } },
    ],
  },
  {
    name: 'healing to another endpoint keeps the addresses where its pool allows',
    steps: [
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e1', pools: ['10.0.0.0/24', 'fd00::/64'] }, want: { dstIpAddrs: ['10.0.0.0/32', 'fd00::/128'], srcIpAddrs: ['10.0.0.1/32', 'fd00::1/128'] } },
      { op: 'req', r: { connectionId: 'x', clientId: 'someone', endpointId: 'e2', pools: ['10.0.0.0/16'] }, want: v4('10.0.0.0', '10.0.0.1') },
      { op: 'rel', id: 'x' },
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e2', pools: ['10.0.0.0/16'] }, want: { ...v4('10.0.0.0', '10.0.0.1'), reused: false } },
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e3', pools: ['192.168.0.0/24'] }, want: v4('192.168.0.0', '192.168.0.1') },
    ],
  },
  {
    name: 'healing moves when the kept addresses are taken at the new endpoint',
    steps: [
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e1', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.0', '10.0.0.1') },
      { op: 'req', r: { connectionId: 'c2', clientId: 'other', endpointId: 'e2', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.0', '10.0.0.1') },
      { op: 'req', r: { connectionId: 'c1', clientId: 'pod', endpointId: 'e2', pools: ['10.0.0.0/24'] }, want: v4('10.0.0.2', '10.0.0.3') },
    ],
  },
  {
    name: 'bad input: no pool, bad prefixes name the field',
    steps: [
      { op: 'req', r: req('c1', 'a', { pools: [] }), error: { code: 'NO_POOL', message: /endpoint fw has no address pool/ } },
      { op: 'req', r: req('c1', 'a', { pools: ['10.0.0.0/24', '10.0.0/24'] }), error: { code: 'INVALID_PREFIX', message: /^pools\[1\]: / } },
      { op: 'req', r: req('c1', 'a', { excludedPrefixes: ['nope'] }), error: { code: 'INVALID_PREFIX', message: /^excludedPrefixes\[0\]: / } },
      { op: 'req', r: req('c1', 'a', { routes: ['10.0.0.0/40'] }), error: { code: 'INVALID_PREFIX', message: /^routes\[0\]: / } },
    ],
  },
]

function run(t: TapTest, steps: Step[], pool = new PointToPointPool()): PointToPointPool {
  for (const [i, s] of steps.entries()) {
    if (s.op === 'rel') {
      const had = pool.get(s.id)
      t.equal(pool.release(s.id), had, `step ${i}: release returns the record`)
      t.equal(pool.get(s.id), undefined, `step ${i}: ${s.id} released`)
      continue
    }
    const r: P2PRequest = { clientId: 'x', endpointId: 'e', pools: [], ...s.r }
    const before = JSON.stringify(pool.snapshot())
    if ('error' in s) {
      const err = t.throws(() => pool.allocate(r), `step ${i}: throws`) as unknown
      t.ok(err instanceof P2PError, `step ${i}: P2PError`)
      if (err instanceof P2PError) {
        t.equal(err.code, s.error.code, `step ${i}: code`)
        if (s.error.message) t.match(err.message, s.error.message, `step ${i}: message`)
      }
      t.equal(JSON.stringify(pool.snapshot()), before, `step ${i}: a failure changes nothing`)
      continue
    }
    const out = pool.allocate(r)
    t.match(out, s.want, `step ${i}: ${s.r.connectionId}`)
    for (const k of ['srcIpAddrs', 'dstIpAddrs', 'srcRoutes', 'dstRoutes'] as const) {
      const exact: string[] | undefined = s.want[k]
      if (exact !== undefined) t.strictSame(out[k], exact, `step ${i}: ${k} exactly`)
    }
    t.equal(pool.get(r.connectionId), out.record, `step ${i}: recorded`)
  }
  return pool
}

for (const c of cases) t.test(c.name, async (t) => void run(t, c.steps))

const alloc = (pool: PointToPointPool, connectionId: string, clientId: string, extra: Partial<P2PRequest> = {}) =>
  pool.allocate({ connectionId, clientId, ...FW, ...extra })

t.test('a /24 holds exactly 128 pairs, all distinct; the 129th is exhausted; holes are refilled lowest first', async (t) => {
  const pool = new PointToPointPool()
  const seen = new Set<string>()
  for (let i = 0; i < 128; i++) {
    const out = alloc(pool, `c${i}`, `pod${i}`)
    for (const a of [...out.srcIpAddrs, ...out.dstIpAddrs]) seen.add(a)
  }
  t.equal(seen.size, 256)
  t.equal(pool.size, 128)
  t.throws(() => alloc(pool, 'c128', 'p'), { code: 'POOL_EXHAUSTED' })
  pool.release('c100')
  pool.release('c7')
  t.strictSame(alloc(pool, 'n1', 'p').dstIpAddrs, ['172.16.1.14/32'])
  t.strictSame(alloc(pool, 'n2', 'q').dstIpAddrs, ['172.16.1.200/32'])
})

t.test('large IPv6 and IPv4 pools are not walked address by address; families never collide', async (t) => {
  const pool = new PointToPointPool()
  for (let i = 0; i < 50; i++) pool.allocate({ connectionId: `c${i}`, clientId: `p${i}`, endpointId: 'e', pools: ['fd00::/64'], excludedPrefixes: ['fd00::/65'] })
  const out = pool.allocate({ connectionId: 'last', clientId: 'z', endpointId: 'e', pools: ['0.0.0.0/0', 'fd00::/64'], excludedPrefixes: ['0.0.0.0/1', 'fd00::/65'] })
  t.strictSame(out.dstIpAddrs, ['128.0.0.0/32', 'fd00::8000:0:0:64/128'])
  t.strictSame(out.srcIpAddrs, ['128.0.0.1/32', 'fd00::8000:0:0:65/128'])
  const mixed = new PointToPointPool()
  mixed.allocate({ connectionId: 'a', clientId: 'p', endpointId: 'e', pools: ['0.0.0.0/30'] })
  t.strictSame(mixed.allocate({ connectionId: 'b', clientId: 'p', endpointId: 'e', pools: ['::/126'] }).dstIpAddrs, ['::/128'], '0.0.0.0 held does not block ::')
})

t.test('restored states with interleaved or duplicated holdings still yield only free addresses', async (t) => {
  const rec = (connectionId: string, clientId: string, endpointId: string, dst: string, src: string) => ({ connectionId, clientId, endpointId, pairs: [{ pool: '10.0.0.0/24', dst, src }] })
  const interleaved = new PointToPointPool({
    version: 1,
    connections: { r1: rec('r1', 'p', 'x1', '10.0.0.0', '10.0.0.2'), r2: rec('r2', 'y', 'e', '10.0.0.1', '10.0.0.3'), r3: rec('r3', 'p', 'x2', '10.0.0.5', '10.0.0.7') },
  })
  t.match(interleaved.allocate({ connectionId: 'n', clientId: 'p', endpointId: 'e', pools: ['10.0.0.0/24'] }), v4('10.0.0.4', '10.0.0.6'))
  const duplicated = new PointToPointPool({
    version: 1,
    connections: { r1: rec('r1', 'p', 'e', '10.0.0.0', '10.0.0.1'), r2: rec('r2', 'q', 'e', '10.0.0.0', '10.0.0.1'), r3: rec('r3', 'q', 'e', '10.0.0.2', '10.0.0.3') },
  })
  t.match(duplicated.allocate({ connectionId: 'n', clientId: 'z', endpointId: 'e', pools: ['10.0.0.0/24'] }), v4('10.0.0.4', '10.0.0.5'))
  duplicated.release('r1')
  t.match(duplicated.allocate({ connectionId: 'n2', clientId: 'z2', endpointId: 'e', pools: ['10.0.0.0/24'] }), v4('10.0.0.6', '10.0.0.7'), 'an address held twice stays held until both release it')
})

t.test('undo restores exactly the state before the allocate', async (t) => {
  const pool = new PointToPointPool()
  const first = alloc(pool, 'c1', 'a')
  const empty = JSON.stringify(new PointToPointPool().snapshot())
  const s1 = JSON.stringify(pool.snapshot())
  const moved = alloc(pool, 'c1', 'a', { excludedPrefixes: ['172.16.1.0/31'] })
  t.strictSame(moved.dstIpAddrs, ['172.16.1.2/32'])
  moved.undo()
  t.equal(JSON.stringify(pool.snapshot()), s1, 'a re-request undone gets its old addresses back')
  t.strictSame(alloc(pool, 'c2', 'b').dstIpAddrs, ['172.16.1.2/32'], 'and the moved-to addresses are free again')
  pool.release('c2')
  first.undo()
  t.equal(JSON.stringify(pool.snapshot()), empty, 'a new connection undone leaves nothing')
  t.strictSame(alloc(pool, 'c3', 'c').dstIpAddrs, ['172.16.1.0/32'])
  const again = alloc(pool, 'c4', 'd')
  pool.release('c4')
  const c5 = alloc(pool, 'c5', 'e')
  again.undo()
  t.equal(pool.get('c5'), c5.record, 'a stale undo (connection released since) touches nothing')
})

t.test('snapshots are plain JSON, immutable, and restore the pool', async (t) => {
  const pool = run(t, [
    { op: 'req', r: req('c1', 'a', { pools: ['10.0.0.0/24', 'fd00::/64'] }), want: {} },
    { op: 'req', r: req('c2', 'b'), want: {} },
  ])
  const snap = pool.snapshot()
  const text = JSON.stringify(snap)
  pool.release('c1')
  alloc(pool, 'c3', 'c')
  t.equal(JSON.stringify(snap), text, 'a snapshot does not change with the pool')
  t.throws(() => {
    ;(snap.connections.c1?.pairs as unknown as unknown[]).push({})
  }, TypeError, 'records are frozen')
  const loaded = new PointToPointPool(JSON.parse(text))
  t.strictSame(loaded.snapshot(), JSON.parse(text))
  t.equal(alloc(loaded, 'c1', 'a', { pools: ['10.0.0.0/24', 'fd00::/64'] }).reused, true, 'reuse survives a restart')
  t.strictSame(alloc(loaded, 'c3', 'c').dstIpAddrs, ['172.16.1.2/32'], 'restored reservations stay reserved')
  const c2 = loaded.get('c2')
  t.ok(c2, 'c2 restored')
  if (c2) t.strictSame(allocationOf(c2, ['10.0.0.0/8']), { ...v4('172.16.1.0', '172.16.1.1', ['10.0.0.0/8']), reused: true })
  t.strictSame(loaded.retain(new Set(['c2', 'gone'])).map((r) => r.connectionId).sort(), ['c1', 'c3'])
  t.strictSame(Object.keys(loaded.snapshot().connections), ['c2'])
  t.equal(loaded.release('nope'), undefined)
  const bad: unknown[] = [
    null,
    { version: 2, connections: {} },
    { version: 1, connections: { a: { connectionId: 'b', clientId: 'x', endpointId: 'y', pairs: [] } } },
    { version: 1, connections: { a: { connectionId: 'a', clientId: 'x', endpointId: 'y', pairs: [{ pool: '10.0.0.0/24', src: '10.0.1.1', dst: '10.0.0.0' }] } } },
    { version: 1, connections: { a: { connectionId: 'a', clientId: 'x', endpointId: 'y', pairs: [{ pool: '10.0.0.0/24', src: 'bad', dst: '10.0.0.0' }] } } },
    { version: 1, connections: { a: { connectionId: 'a', clientId: 'x', endpointId: 'y', pairs: [{ pool: 1 }] } } },
  ]
  for (const b of bad) t.throws(() => new PointToPointPool(b), { code: 'INVALID_STATE' }, JSON.stringify(b))
})
