// agent/store/memory.ts: the conformance suite of the store contract (test/lib/kv-conformance.ts), plus
// what only the in-memory reference has: its bounded history, its down/up switch across a compaction,
// and that each client's close() stops only its own watches.
import t from 'tap'
import { MemoryKv } from '../../agent/store/memory.js'
import { KvUnavailable } from '../../agent/store/kv.js'
import { kvConformance } from '../lib/kv-conformance.js'
import { sampleValue } from '../lib/kv-sample-values.js'
import { WatchRecorder } from '../lib/kv-watch-recorder.js'

const store = new MemoryKv()
t.teardown(() => store.close())
kvConformance(t, 'memory', async () => ({
  kv: store.connect(),
  compact: async () => store.compact(),
  outage: { stop: async () => store.down(), start: async () => store.up() },
  timeoutMs: 100,
}))

t.test('a watch further back than the bounded history resets', async (t) => {
  const kv = new MemoryKv({ historyLimit: 3 })
  t.teardown(() => kv.close())
  const { revision } = await kv.list('nodes')
  for (let i = 0; i < 3; i++) await kv.put('nodes', `n${i}`, sampleValue('nodes', `n${i}`))
  const within = new WatchRecorder()
  t.teardown(kv.watch('nodes', revision, within.handlers))
  await within.until('three puts', () => within.view.size === 3)
  t.equal(within.resets(), 0, 'three changes back: replayed from the history')
  await kv.delete('nodes', 'n0')
  const beyond = new WatchRecorder()
  t.teardown(kv.watch('nodes', revision, beyond.handlers))
  await beyond.until('a reset', () => beyond.resets() === 1)
  t.strictSame([...beyond.view.keys()].sort(), ['n1', 'n2'], 'four changes back: reset with the full list')
  t.equal(beyond.events().length, 0, 'and no events')
})

t.test('down: a compaction while a watch is down resets it when the store is up again', async (t) => {
  const kv = new MemoryKv()
  t.teardown(() => kv.close())
  const { revision } = await kv.list('services')
  await kv.put('services', 'a', sampleValue('services', 'a'))
  const rec = new WatchRecorder()
  t.teardown(kv.watch('services', revision, rec.handlers))
  await rec.until('a', () => rec.view.has('a'))
  kv.down()
  await t.rejects(kv.put('services', 'b', {}), KvUnavailable, 'a write while down is refused')
  kv.compact()
  kv.up()
  await kv.put('services', 'b', sampleValue('services', 'b'))
  await rec.until('b', () => rec.view.has('b'))
  t.strictSame(rec.states(), ['down', 'up'], 'down, then up')
  t.equal(rec.resets(), 0, 'a watch that had seen everything is not reset by a compaction')
  const late = new WatchRecorder()
  kv.down()
  t.teardown(kv.watch('services', revision, late.handlers))
  kv.compact()
  kv.up()
  await late.until('a reset', () => late.resets() === 1)
  t.strictSame(late.states(), ['down', 'up'], 'a watch started while down reports down, then up')
  t.strictSame([...late.view.keys()].sort(), ['a', 'b'], 'and, its revision compacted meanwhile, is reset with the full list')
})

t.test('expiry runs while the store is down; the watch sees the delete once it is up', async (t) => {
  const kv = new MemoryKv()
  t.teardown(() => kv.close())
  const { revision } = await kv.list('claims')
  const rec = new WatchRecorder()
  t.teardown(kv.watch('claims', revision, rec.handlers))
  await kv.put('claims', 'p.10.0.0.2', sampleValue('claims', 'x'), { ttlMs: 50 })
  await rec.until('the put', () => rec.view.size === 1)
  kv.down()
  await new Promise((r) => setTimeout(r, 200))
  t.equal(rec.events().length, 1, 'nothing delivered while down')
  kv.up()
  await rec.until('the delete', () => rec.view.size === 0)
  t.strictSame(rec.events().map((e) => e.type), ['put', 'delete'], 'the expiry is delivered after up')
})

t.test("close() stops one client's watches and calls, not the store", async (t) => {
  const a = new MemoryKv()
  const b = a.connect()
  t.teardown(() => b.close())
  const { revision } = await a.list('nodes')
  const ra = new WatchRecorder()
  const rb = new WatchRecorder()
  a.watch('nodes', revision, ra.handlers)
  t.teardown(b.watch('nodes', revision, rb.handlers))
  await a.close()
  await t.rejects(a.get('nodes', 'x'), KvUnavailable, 'a closed client refuses calls')
  t.throws(() => a.watch('nodes', revision, ra.handlers), KvUnavailable, 'and watches')
  await b.put('nodes', 'x', sampleValue('nodes', 'x'))
  await rb.until('x', () => rb.view.has('x'))
  t.equal(ra.events().length, 0, "the closed client's watch got nothing")
  t.throws(() => new MemoryKv({ historyLimit: -1 }), TypeError, 'a negative history limit is refused')
  await t.rejects(b.put('nodes', 'y', {}, { ttlMs: 0 }), TypeError, 'a ttl of 0 is refused')
  await t.rejects(b.put('nodes', 'y', undefined), TypeError, 'a value that is not JSON is refused')
  t.throws(() => b.watch('nodes', 'abc', rb.handlers), TypeError, 'a revision that is not one is refused')
})
