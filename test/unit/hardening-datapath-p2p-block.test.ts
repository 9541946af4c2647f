// ipam/p2p blocks: addresses the kernel showed in use are skipped for a party until unblocked, are never
// part of the persisted state, and lifting them frees the addresses again.
import t from 'tap'
import { PointToPointPool } from '../../ipam/p2p/index'

const req = (id: string, clientId = 'client-a') => ({ connectionId: id, clientId, endpointId: 'ep', pools: ['10.0.0.0/29', 'fd00::/125'] })

t.test('a blocked pair is skipped for that party, and free again after unblock', async (t) => {
  const pool = new PointToPointPool()
  const first = pool.allocate(req('c1'))
  t.same(first.srcIpAddrs, ['10.0.0.1/32', 'fd00::1/128'])
  first.undo()
  t.equal(pool.block('ep', [...first.srcIpAddrs, ...first.dstIpAddrs, 'not-an-address']), 4, 'valid addresses blocked, the bad one ignored')
  const second = pool.allocate(req('c1'))
  t.same(second.dstIpAddrs, ['10.0.0.2/32', 'fd00::2/128'], 'the blocked pair is skipped')
  t.same(Object.keys(pool.snapshot().connections), ['c1'], 'blocks are not persisted')
  second.undo()
  pool.unblock()
  t.equal(pool.blocked, 0)
  t.same(pool.allocate(req('c1')).dstIpAddrs, ['10.0.0.0/32', 'fd00::/128'], 'free again')
})

t.test('a block for one party does not affect another', async (t) => {
  const pool = new PointToPointPool()
  pool.block('client-a', ['10.0.0.0', '10.0.0.1'])
  const x = pool.allocate({ connectionId: 'c2', clientId: 'client-b', endpointId: 'ep2', pools: ['10.0.0.0/29'] })
  t.same(x.dstIpAddrs, ['10.0.0.0/32'])
})
