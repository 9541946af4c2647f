// The pure parts around mechanisms: the IP context computed once from the allocator (routes both sides,
// composition), the persisted record (version 1 migrated on read, comparison), and the mechanism registry
// (preference order, MECHANISM_NOT_SUPPORTED naming the field).
import t from 'tap'
import { PointToPointPool } from '../../ipam/p2p/index.js'
import { ipContextOf } from '../../agent/pipeline/ip-context.js'
import { decodeDatapathRecord, sameDatapath } from '../../agent/mechanisms/record.js'
import { MechanismRegistry } from '../../agent/mechanisms/registry.js'
import type { DatapathRecord, Mechanism } from '../../agent/mechanisms/types.js'
import type { KernelRecord } from '../../agent/mechanisms/kernel/record.js'

t.test('ipContextOf: the allocator routes with next hops, plus the composition routes, once', async (t) => {
  const pool = new PointToPointPool()
  const alloc = pool.allocate({ connectionId: 'c1', clientId: 'cl', endpointId: 'fw', pools: ['172.16.1.0/29', 'fd00:1::/125'], routes: ['10.60.0.0/16', '10.61.0.9/16'] })
  const plain = ipContextOf(alloc, [])
  t.same(plain.src, ['172.16.1.1/32', 'fd00:1::1/128'])
  t.same(plain.dst, ['172.16.1.0/32', 'fd00:1::/128'])
  t.same(plain.srcRoutes, [
    { prefix: '172.16.1.0/32', nextHop: '' },
    { prefix: 'fd00:1::/128', nextHop: '' },
    { prefix: '10.60.0.0/16', nextHop: '172.16.1.0' },
    { prefix: '10.61.0.0/16', nextHop: '172.16.1.0' },
  ], 'the endpoint on the link, what it offers via it (host bits masked, as the kernel stores it)')
  t.same(plain.dstRoutes, [
    { prefix: '172.16.1.1/32', nextHop: '' },
    { prefix: 'fd00:1::1/128', nextHop: '' },
  ])
  const composed = ipContextOf(alloc, ['172.16.9.5/24', 'fd09::/64'])
  t.same(composed.dstRoutes.slice(2), [
    { prefix: '172.16.9.0/24', nextHop: '172.16.1.1' },
    { prefix: 'fd09::/64', nextHop: 'fd00:1::1' },
  ], "a client that is an endpoint gets its pools routed back via its address, per family")
  t.same(composed.srcRoutes, plain.srcRoutes, 'the client side does not change')

  const v4only = new PointToPointPool().allocate({ connectionId: 'c2', clientId: 'cl', endpointId: 'fw', pools: ['172.16.1.0/29'], routes: ['fd10::/48', '10.60.0.0/16'] })
  t.same(ipContextOf(v4only, ['fd09::/64']), {
    src: ['172.16.1.1/32'],
    dst: ['172.16.1.0/32'],
    srcRoutes: [
      { prefix: '172.16.1.0/32', nextHop: '' },
      { prefix: '10.60.0.0/16', nextHop: '172.16.1.0' },
    ],
    dstRoutes: [{ prefix: '172.16.1.1/32', nextHop: '' }],
  }, 'a prefix of a family the pair lacks is left out: nothing could carry it')
})

const v2: DatapathRecord & { mechanism: KernelRecord } = {
  version: 2,
  connectionId: 'c1',
  service: 'svc',
  endpointName: 'fw-1',
  clientNetns: '/var/run/netns/cl',
  clientIfname: 'nsm0',
  mtu: 1500,
  ipContext: {
    src: ['172.16.1.1/32'],
    dst: ['172.16.1.0/32'],
    srcRoutes: [{ prefix: '172.16.1.0/32', nextHop: '' }, { prefix: '10.60.0.0/16', nextHop: '172.16.1.0' }],
    dstRoutes: [{ prefix: '172.16.1.1/32', nextHop: '' }],
  },
  mechanism: { type: 'KERNEL', endpointNetns: '/var/run/netns/fw', endpointIfname: 'nsm-0123456789' },
  p2p: { connectionId: 'c1', clientId: '/var/run/netns/cl', endpointId: '/var/run/netns/fw', pairs: [{ pool: '172.16.1.0/29', src: '172.16.1.1', dst: '172.16.1.0' }] },
  clientLabels: { app: 'web' },
}

// As agent/pipeline/types.ts wrote it before mechanisms owned their datapath.
const v1 = {
  version: 1,
  connectionId: 'c1',
  service: 'svc',
  endpointName: 'fw-1',
  clientNetns: '/var/run/netns/cl',
  clientIfname: 'nsm0',
  endpointNetns: '/var/run/netns/fw',
  endpointIfname: 'nsm-0123456789',
  src: ['172.16.1.1/32'],
  dst: ['172.16.1.0/32'],
  srcRoutes: [{ prefix: '172.16.1.0/32', nextHop: '' }, { prefix: '10.60.0.0/16', nextHop: '172.16.1.0' }],
  dstRoutes: [{ prefix: '172.16.1.1/32', nextHop: '' }],
  mtu: 1500,
  p2p: v2.p2p,
  clientLabels: { app: 'web' },
}

t.test('records: version 1 is migrated on read, version 2 read as is, anything else refused', async (t) => {
  t.same(decodeDatapathRecord(v1), v2, 'version 1 → 2')
  t.equal(decodeDatapathRecord(v2), v2)
  t.same(decodeDatapathRecord(JSON.parse(JSON.stringify(v2))), v2, 'through JSON (the journal)')
  for (const bad of [undefined, null, 'x', { ...v2, version: 3 }, { ...v2, mechanism: undefined }, { ...v2, ipContext: { src: [] } }, { ...v1, endpointIfname: 7 }, { version: 1, connectionId: 'c1' }]) {
    t.equal(decodeDatapathRecord(bad), undefined, JSON.stringify(bad) ?? 'undefined')
  }
})

t.test('sameDatapath: what the kernel holds, whatever the key order; not labels or bookkeeping', async (t) => {
  const migrated = decodeDatapathRecord(v1)
  t.ok(migrated !== undefined && sameDatapath(migrated, v2))
  const reordered = { ...v2, mechanism: { endpointIfname: 'nsm-0123456789', endpointNetns: '/var/run/netns/fw', type: 'KERNEL' as const } }
  t.ok(sameDatapath(v2, reordered), 'mechanism keys in another order')
  t.ok(sameDatapath(v2, { ...v2, clientLabels: { app: 'other' }, p2p: { ...v2.p2p, clientId: 'x' } }), 'labels and allocator bookkeeping do not count')
  t.notOk(sameDatapath(v2, { ...v2, mtu: 1400 }))
  t.notOk(sameDatapath(v2, { ...v2, ipContext: { ...v2.ipContext, srcRoutes: v2.ipContext.srcRoutes.slice(0, 1) } }), 'a route less')
  t.notOk(sameDatapath(v2, { ...v2, mechanism: { ...v2.mechanism, endpointNetns: '/var/run/netns/fw2' } }), 'another endpoint netns')
})

t.test('mechanism registry: first requested type served wins; none served names the field', async (t) => {
  const fake = (type: string): Mechanism => ({ type }) as unknown as Mechanism
  const registry = new MechanismRegistry([fake('KERNEL'), fake('MEMIF')])
  const req = (type: string) => ({ cls: 'LOCAL', type, parameters: { x: type } })
  const picked = registry.pick([req('VXLAN'), req('MEMIF'), req('KERNEL')], 'mechanism_preferences')
  t.equal(picked.mechanism.type, 'MEMIF')
  t.equal(picked.index, 1)
  t.same(picked.parameters, req('MEMIF'))
  t.throws(() => registry.pick([req('VXLAN'), req('')], 'mechanism_preferences'), {
    name: 'AgentError',
    code: 'MECHANISM_NOT_SUPPORTED',
    field: 'mechanism_preferences',
    message: 'mechanism_preferences: none of VXLAN, (empty) is supported (KERNEL, MEMIF are)',
  })
  t.throws(() => new MechanismRegistry([fake('KERNEL'), fake('KERNEL')]), /registered twice/)
  t.throws(() => registry.of({ ...v2, mechanism: { ...v2.mechanism, type: 'SRIOV' as 'KERNEL' } }), { code: 'INTERNAL', message: /no mechanism SRIOV/ })
})
