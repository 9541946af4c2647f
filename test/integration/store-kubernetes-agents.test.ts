// The Kubernetes backend of the cluster store (agent/store/kubernetes.ts) with agents together, on the
// project's Kubernetes API fixture: two agents racing on one object with revisions, an entry whose writer
// died collected at its expiry by an agent that outlives it (and a refresh winning against a stale
// collector), and an entry past its expiry gone for every call before any collector deleted it.
import t from 'tap'
import { KvConflict, type Kv } from '../../agent/store/kv'
import { startK8sFixture } from '../lib/k8s-fixture'
import { annotations, NS, raw, store, until } from '../lib/kv-kubernetes'
import { WatchRecorder } from '../lib/kv-watch-recorder'

t.test('two agents incrementing one object 50 times each with revisions lose no update', async (t) => {
  const f = await startK8sFixture(t)
  const [a, b] = [store(t, f), store(t, f)]
  await a.create('nodes', 'counter', { count: 0 })
  let conflicts = 0
  const increment = async (kv: Kv): Promise<void> => {
    for (;;) {
      const cur = await kv.get('nodes', 'counter')
      if (cur === undefined) throw new Error('the counter vanished')
      try {
        await kv.put('nodes', 'counter', { count: (cur.value as { count: number }).count + 1 }, { revision: cur.revision })
        return
      } catch (err) {
        if (!(err instanceof KvConflict)) throw err
        conflicts++
      }
    }
  }
  await Promise.all([a, b].map(async (kv) => {
    for (let i = 0; i < 50; i++) await increment(kv)
  }))
  t.strictSame((await b.get('nodes', 'counter'))?.value, { count: 100 }, `100 increments, none lost (${conflicts} 409 Conflicts retried)`)
})

t.test('an entry whose writer died is collected by another agent at its expiry; a refresh wins against a stale collector', async (t) => {
  const f = await startK8sFixture(t)
  const writer = store(t, f)
  const other = store(t, f)
  const listed = await other.list('nodes')
  const rec = new WatchRecorder().seed(listed.entries)
  t.teardown(other.watch('nodes', listed.revision, rec.handlers))
  // The endpoint first: when the node's expiry has passed, the endpoint's has too.
  await writer.put('endpoints', 'nse-dead', { endpoint: { name: 'nse-dead' } }, { ttlMs: 800 })
  await writer.put('nodes', 'node-dead', { name: 'node-dead' }, { ttlMs: 800 })
  await writer.close()
  await rec.until('node-dead deleted', () => rec.events().some((e) => e.type === 'delete' && e.name === 'node-dead'))
  t.equal(f.get('nsmnodes', NS, 'node-dead'), undefined, 'the object is gone from the API')
  t.ok(f.requests.some((r) => r.method === 'DELETE' && r.path.endsWith('/nsmnodes/node-dead')), 'deleted by the surviving agent')
  t.ok(f.get('networkserviceendpoints', NS, 'nse-dead'), 'an expired object of a kind nobody watched is still there ...')
  t.equal(await other.get('endpoints', 'nse-dead'), undefined, '... but get never returns it past its expiry')
  t.notOk((await other.list('endpoints')).entries.some((e) => e.name === 'nse-dead'), '... nor list')
  await until('nse-dead collected', () => f.get('networkserviceendpoints', NS, 'nse-dead') === undefined)
  t.pass('and the agent that saw it collects it')

  // A collector that holds an old revision and whose clock runs ahead (it thinks the entry expired) meets
  // a refresh it did not see: its precondition fails, it reads the object again, and leaves it.
  const hour = 3_600_000
  let ahead = 0
  const skewed = store(t, f, { now: () => Date.now() + ahead })
  const live = store(t, f)
  const r1 = await live.put('claims', 'pool.10.0.0.9', { n: 1 }, { ttlMs: hour })
  t.ok(await skewed.get('claims', 'pool.10.0.0.9'), 'the skewed agent has seen revision 1')
  const r2 = await live.put('claims', 'pool.10.0.0.9', { n: 2 }, { ttlMs: 2 * hour })
  await live.put('claims', 'pool.10.0.0.8', { n: 3 }, { ttlMs: hour / 2 })
  const reread = new Promise<void>((resolve) => {
    let deleted = false
    const onRequest = (r: { method: string; path: string }): void => {
      if (!r.path.endsWith('/nsmaddressclaims/pool.10.0.0.9')) return
      if (r.method === 'DELETE') deleted = true
      else if (deleted && r.method === 'GET') {
        f.events.off('request', onRequest)
        resolve()
      }
    }
    f.events.on('request', onRequest)
  })
  ahead = 1.5 * hour
  await skewed.get('claims', 'pool.10.0.0.8') // an earlier expiry wakes its collector: revision 1 is due by its clock
  await reread
  t.equal(raw(f, 'nsmaddressclaims', 'pool.10.0.0.9').metadata['resourceVersion'], r2.revision, 'the refreshed object survives the stale delete')
  t.not(r1.revision, r2.revision)
  t.strictSame((await skewed.get('claims', 'pool.10.0.0.9'))?.value, { n: 2 }, 'and the skewed agent now sees the refresh')
})

t.test('an entry past its expiry that no collector deleted yet is gone for every call', async (t) => {
  const f = await startK8sFixture(t)
  const hour = 3_600_000
  let ahead = 0
  const kv = store(t, f, { now: () => Date.now() + ahead })
  const r = await kv.create('claims', 'pool.10.0.0.5', { n: 1 }, { ttlMs: hour })
  ahead = 2 * hour // its collector's timer is an hour away: the object stays in the API meanwhile
  t.ok(f.get('nsmaddressclaims', NS, 'pool.10.0.0.5'), 'the object is still in the API')
  t.equal(await kv.get('claims', 'pool.10.0.0.5'), undefined, 'get: gone')
  t.notOk((await kv.list('claims')).entries.some((e) => e.name === 'pool.10.0.0.5'), 'list: gone')
  await t.rejects(kv.put('claims', 'pool.10.0.0.5', { n: 2 }, { revision: r.revision }), KvConflict, 'put with its revision: conflict, as for a deleted entry')
  await t.rejects(kv.delete('claims', 'pool.10.0.0.5', { revision: r.revision }), KvConflict, 'delete with its revision: conflict')
  const again = await kv.create('claims', 'pool.10.0.0.5', { n: 3 })
  t.strictSame(again.value, { n: 3 }, 'create succeeds (it replaces the expired object)')
  t.notOk('nsm-cni.io/expires-at' in annotations(raw(f, 'nsmaddressclaims', 'pool.10.0.0.5')), 'and the new object has no expiry')
})
