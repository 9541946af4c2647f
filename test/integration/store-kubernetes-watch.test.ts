// The Kubernetes backend of the cluster store (agent/store/kubernetes.ts): its watch on the project's
// Kubernetes API fixture: 410 Gone on a compacted resourceVersion (as an ERROR event and as HTTP 410),
// bookmarks and the resume from the last one, and a black-holed API server (calls reject with
// KvUnavailable, the watch goes down and comes back).
import t from 'tap'
import { startK8sFixture } from '../lib/k8s-fixture'
import { store, until } from '../lib/kv-kubernetes'
import { rejectsUnavailable } from '../lib/kv-unavailable'
import { WatchRecorder } from '../lib/kv-watch-recorder'

for (const goneAs of ['event', 'status'] as const) {
  t.test(`410 Gone (${goneAs === 'event' ? 'an ERROR event' : 'HTTP 410'}) on a compacted resourceVersion: onReset with the list, then events`, async (t) => {
    const f = await startK8sFixture(t, { goneAs })
    const kv = store(t, f)
    await kv.create('endpoints', 'a', { endpoint: { name: 'a' } })
    const { revision } = await kv.list('endpoints')
    await kv.create('endpoints', 'b', { endpoint: { name: 'b' } })
    await kv.delete('endpoints', 'a')
    f.compact()
    const rec = new WatchRecorder()
    t.teardown(kv.watch('endpoints', revision, rec.handlers))
    await rec.until('a reset', () => rec.resets() === 1)
    t.strictSame([...rec.view.keys()], ['b'], 'the reset holds the store as it is now')
    const c = await kv.create('endpoints', 'c', { endpoint: { name: 'c' } })
    await rec.until('c', () => rec.view.has('c'))
    t.strictSame(rec.events(), [{ type: 'put', entry: c }], 'then the changes after it')
    t.strictSame(rec.states(), [], 'a 410 is not an outage')
  })
}

t.test('a watch asks for bookmarks and resumes from the last one when the server ends it', async (t) => {
  const f = await startK8sFixture(t, { bookmarkIntervalMs: 0 })
  const kv = store(t, f)
  const { revision } = await kv.list('claims')
  const watches: URLSearchParams[] = []
  f.events.on('watch', (r: { query: URLSearchParams }) => watches.push(r.query))
  const rec = new WatchRecorder()
  t.teardown(kv.watch('claims', revision, rec.handlers))
  await until('the watch open', () => watches.length === 1)
  t.equal(watches[0]?.get('allowWatchBookmarks'), 'true')
  t.equal(watches[0]?.get('resourceVersion'), revision, 'the first watch starts at the list revision')
  for (let i = 0; i < 3; i++) await kv.put('nodes', `n${i}`, { i }) // other kinds move the version on
  const bookmarked = f.resourceVersion()
  f.sendBookmarks()
  f.dropWatches()
  await until('the watch reopened', () => watches.length === 2)
  t.equal(watches[1]?.get('resourceVersion'), bookmarked, 'resumes from the bookmark, not from the list revision')
  t.strictSame(rec.log, [], 'bookmarks and a resumed watch are invisible to the caller')
})

t.test('a black-holed API server: calls reject with KvUnavailable, the watch goes down and comes back', async (t) => {
  const f = await startK8sFixture(t)
  const kv = store(t, f, { timeoutMs: 300 })
  const writer = store(t, f)
  const { revision } = await kv.list('nodes')
  const rec = new WatchRecorder()
  t.teardown(kv.watch('nodes', revision, rec.handlers))
  await new Promise((r) => f.events.once('watch', r))
  f.stall()
  f.dropWatches()
  t.teardown(() => f.unstall())
  await rejectsUnavailable(t, kv.get('nodes', 'x'), 'kubernetes', 300, 'get')
  await rejectsUnavailable(t, kv.put('nodes', 'x', {}), 'kubernetes', 300, 'put')
  await rejectsUnavailable(t, kv.health(), 'kubernetes', 300, 'health')
  await rec.until("'down'", () => rec.states().includes('down'))
  f.unstall()
  const x = await writer.put('nodes', 'x', { back: true })
  await rec.until('the change made after the server came back', () => rec.view.get('x')?.revision === x.revision)
  t.strictSame(rec.states(), ['down', 'up'])
  t.equal(rec.resets(), 0, 'resumed from its revision')
})
