// The store contract of agent/store/kv.ts, checked point by point against one backend:
//
//   kvConformance(t, 'memory', async () => ({ kv: store.connect(), compact, outage }))
//
// `open` is called once or more per subtest (two clients where the contract speaks of "any agent"): every
// call must give a new client of the SAME store. The suite closes each client it opens (t.teardown) and
// names its entries with a per-run prefix, so the store may be shared with other tests. `compact` (drop the
// store's history up to now) and `outage` (make the engine unreachable for every client, then reachable)
// are optional: their subtests are skipped without them. `timeoutMs` is the backend's call timeout: used
// only to tell a call that hangs from one that is slow, never as a speed target.
//
// What each subtest checks is in its name; together they are kv.ts's contract. Values are realistic JSON
// for each kind (kv-sample-values.ts) and must come back deep-equal. Watches are observed through
// kv-watch-recorder.ts, an unreachable engine through kv-unavailable.ts.
import { randomBytes } from 'node:crypto'
import type { Test } from 'tap'
import { KV_KINDS, KvConflict } from '../../agent/store/kv.js'
import type { Kv, KvEntry, KvEvent, KvKind } from '../../agent/store/kv.js'
import { sampleValue } from './kv-sample-values.js'
import { rejectsUnavailable, retryUnavailable } from './kv-unavailable.js'
import { WatchRecorder } from './kv-watch-recorder.js'

export interface KvUnderTest {
  readonly kv: Kv
  /** Drops the store's history up to its current revision (etcd compaction, Kubernetes 410 Gone). */
  readonly compact?: () => Promise<void>
  /** Makes the engine unreachable for every client (stop) and reachable again (start). */
  readonly outage?: { stop(): Promise<void>; start(): Promise<void> }
  /** The backend's call timeout (default 3000 ms): a call still pending 3× past it counts as hung. */
  readonly timeoutMs?: number
}

/** What an event says, revision aside: for comparing sequences. */
function describe(e: KvEvent): { type: string; kind: KvKind; name: string; value?: unknown } {
  return e.type === 'put' ? { type: 'put', kind: e.entry.kind, name: e.entry.name, value: e.entry.value } : { type: 'delete', kind: e.kind, name: e.name }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export function kvConformance(t: Test, name: string, open: () => Promise<KvUnderTest>) {
  const run = randomBytes(3).toString('hex')
  /** A name unique to this run and subtest: `<run>-<tag>-<suffix>`. */
  const nameOf = (tag: string, suffix: string): string => `k${run}-${tag}-${suffix}`
  const ours = (tag: string) => (n: string) => n.startsWith(`k${run}-${tag}-`)

  async function client(t: Test): Promise<KvUnderTest> {
    const c = await open()
    t.teardown(() => c.kv.close())
    return c
  }

  return t.test(`store conformance: ${name}`, async (t) => {
    // What the backend offers decides which subtests run.
    const probe = await open()
    await probe.kv.close()
    const noCompact = probe.compact === undefined ? 'the backend under test cannot compact' : false
    const noOutage = probe.outage === undefined ? 'the backend under test has no outage switch' : false

    t.test('values round-trip through create, get, list, put and delete, for every kind', async (t) => {
      const { kv } = await client(t)
      await kv.health()
      for (const kind of KV_KINDS) {
        const n = nameOf('rt', kind === 'claims' ? '10.0.0.0-24.10.0.2' : kind)
        const created = await kv.create(kind, n, sampleValue(kind, n))
        t.strictSame({ kind: created.kind, name: created.name, value: created.value }, { kind, name: n, value: sampleValue(kind, n) }, `${kind}: create gives the entry`)
        t.ok(typeof created.revision === 'string' && created.revision !== '', `${kind}: with a revision`)
        t.strictSame(await kv.get(kind, n), created, `${kind}: get gives what create gave`)
        const listed = await kv.list(kind)
        t.ok(typeof listed.revision === 'string' && listed.revision !== '', `${kind}: list has a revision`)
        t.strictSame(listed.entries.find((e) => e.name === n), created, `${kind}: list has the entry`)
        for (const other of KV_KINDS.filter((k) => k !== kind)) {
          t.notOk((await kv.list(other)).entries.some((e) => e.name === n), `${kind}: not listed as ${other}`)
          t.equal(await kv.get(other, n), undefined, `${kind}: not found as ${other}`)
        }
        const put = await kv.put(kind, n, sampleValue(kind, n, 2))
        t.strictSame(put.value, sampleValue(kind, n, 2), `${kind}: put replaces the value`)
        t.strictSame(await kv.get(kind, n), put, `${kind}: get gives what put gave`)
        t.equal(await kv.delete(kind, n), true, `${kind}: delete says it deleted`)
        t.equal(await kv.get(kind, n), undefined, `${kind}: gone from get`)
        t.notOk((await kv.list(kind)).entries.some((e) => e.name === n), `${kind}: gone from list`)
        t.equal(await kv.delete(kind, n), false, `${kind}: a second delete finds nothing`)
      }
      const tricky = { s: 'ü 🚀 "q" \\ / \n', n: 1.5, zero: 0, neg: -3, big: 2 ** 53 - 1, nil: null, yes: true, no: false, nested: [[], {}, [1, [2]]], empty: '' }
      const n = nameOf('rt', 'json')
      await kv.put('nodes', n, tricky)
      t.strictSame((await kv.get('nodes', n))?.value, tricky, 'any JSON object round-trips exactly')
      await kv.delete('nodes', n)
      const put = await kv.put('nodes', nameOf('rt', 'upsert'), sampleValue('nodes', 'n1'))
      t.strictSame((await kv.get('nodes', put.name))?.revision, put.revision, 'put creates an entry that did not exist')
      await kv.delete('nodes', put.name)
      for (const bad of ['', 'Upper', 'a/b', '-a', 'a_b', 'x'.repeat(254)]) {
        await t.rejects(kv.get('nodes', bad), TypeError, `name ${JSON.stringify(bad.slice(0, 12))} is refused`)
        await t.rejects(kv.put('nodes', bad, {}), TypeError, `name ${JSON.stringify(bad.slice(0, 12))} is refused for a write`)
      }
    })

    t.test('create refuses an entry that exists, and works again once it is deleted', async (t) => {
      const { kv } = await client(t)
      const n = nameOf('create', 'a')
      const first = await kv.create('endpoints', n, sampleValue('endpoints', n))
      await t.rejects(kv.create('endpoints', n, sampleValue('endpoints', n, 2)), KvConflict, 'a second create conflicts')
      const err = await kv.create('endpoints', n, sampleValue('endpoints', n, 2)).then(() => undefined, (e: unknown) => e)
      t.ok(err instanceof KvConflict && err.kind === 'endpoints', 'the conflict names the kind')
      t.strictSame(await kv.get('endpoints', n), first, 'the first entry is untouched')
      await kv.delete('endpoints', n)
      const again = await kv.create('endpoints', n, sampleValue('endpoints', n, 3))
      t.strictSame(again.value, sampleValue('endpoints', n, 3), 'create after delete succeeds')
      await kv.delete('endpoints', n)
    })

    t.test('exactly one of 20 concurrent creates of one name wins, across two clients', async (t) => {
      const [a, b] = [await client(t), await client(t)]
      const n = nameOf('race', '10.0.0.2')
      const tries = Array.from({ length: 20 }, (_, i) => ((i % 2 === 0 ? a : b).kv.create('claims', n, sampleValue('claims', n, i))))
      const outcomes = await Promise.allSettled(tries)
      const won = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []))
      const lost = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as unknown] : []))
      t.equal(won.length, 1, 'one create succeeds')
      t.equal(lost.length, 19, 'the others fail')
      t.ok(lost.every((e) => e instanceof KvConflict), 'every loser gets KvConflict', { found: lost.filter((e) => !(e instanceof KvConflict)).map(String) })
      t.strictSame(await b.kv.get('claims', n), won[0], "the store holds the winner's value and revision")
      await a.kv.delete('claims', n)
    })

    t.test('every write of an entry changes its revision', async (t) => {
      const { kv } = await client(t)
      const n = nameOf('rev', 'a')
      const seen = new Set<string>()
      const r1 = await kv.create('nodes', n, sampleValue('nodes', n))
      seen.add(r1.revision)
      const r2 = await kv.put('nodes', n, sampleValue('nodes', n))
      t.notOk(seen.has(r2.revision), 'writing the same value again changes it')
      seen.add(r2.revision)
      const r3 = await kv.put('nodes', n, sampleValue('nodes', n, 2))
      t.notOk(seen.has(r3.revision), 'writing a new value changes it')
      seen.add(r3.revision)
      t.equal((await kv.get('nodes', n))?.revision, r3.revision, 'get has the last write')
      t.equal((await kv.list('nodes')).entries.find((e) => e.name === n)?.revision, r3.revision, 'list has the last write')
      await kv.delete('nodes', n)
      const r4 = await kv.create('nodes', n, sampleValue('nodes', n))
      t.notOk(seen.has(r4.revision), 'an entry created again has a new revision')
      await kv.delete('nodes', n)
    })

    t.test('put and delete with a stale revision conflict, also when the entry is gone', async (t) => {
      const { kv } = await client(t)
      const n = nameOf('cas', 'a')
      const r1 = await kv.create('services', n, sampleValue('services', n))
      const r2 = await kv.put('services', n, sampleValue('services', n, 2), { revision: r1.revision })
      t.strictSame(r2.value, sampleValue('services', n, 2), 'put with the current revision succeeds')
      await t.rejects(kv.put('services', n, sampleValue('services', n, 3), { revision: r1.revision }), KvConflict, 'put with a stale revision conflicts')
      await t.rejects(kv.delete('services', n, { revision: r1.revision }), KvConflict, 'delete with a stale revision conflicts')
      t.strictSame(await kv.get('services', n), r2, 'neither changed anything')
      t.equal(await kv.delete('services', n, { revision: r2.revision }), true, 'delete with the current revision succeeds')
      await t.rejects(kv.put('services', n, sampleValue('services', n), { revision: r2.revision }), KvConflict, 'put with a revision of an entry that is gone conflicts')
      t.equal(await kv.get('services', n), undefined, '... and does not create it')
      await t.rejects(kv.delete('services', n, { revision: r2.revision }), KvConflict, 'delete with a revision of an entry that is gone conflicts')
    })

    t.test('no lost updates: two clients incrementing one counter with revisions', async (t) => {
      const [a, b] = [await client(t), await client(t)]
      const n = nameOf('rmw', 'counter')
      await a.kv.create('nodes', n, { name: n, count: 0 })
      let conflicts = 0
      const increment = async (kv: Kv): Promise<void> => {
        for (;;) {
          const cur = await kv.get('nodes', n)
          if (cur === undefined) throw new Error('counter vanished')
          const count = (cur.value as { count: number }).count
          try {
            await kv.put('nodes', n, { name: n, count: count + 1 }, { revision: cur.revision })
            return
          } catch (err) {
            if (!(err instanceof KvConflict)) throw err
            conflicts++
          }
        }
      }
      await Promise.all([a, b].map(async ({ kv }) => {
        for (let i = 0; i < 10; i++) await increment(kv)
      }))
      t.strictSame((await a.kv.get('nodes', n))?.value, { name: n, count: 20 }, `20 increments, none lost (${conflicts} conflicts retried)`)
      await a.kv.delete('nodes', n)
    })

    t.test('watch from a list revision sees every later change once, in order, and only its kind', async (t) => {
      const [w, kv] = [(await client(t)).kv, (await client(t)).kv]
      const tag = 'watch'
      const n = (s: string): string => nameOf(tag, s)
      await kv.create('services', n('before'), sampleValue('services', n('before')))
      const { revision } = await w.list('services')
      const rec = new WatchRecorder()
      const stop = w.watch('services', revision, rec.handlers)
      t.teardown(stop)
      const a1 = await kv.create('services', n('a'), sampleValue('services', n('a')))
      const a2 = await kv.put('services', n('a'), sampleValue('services', n('a'), 2))
      const b1 = await kv.create('services', n('b'), sampleValue('services', n('b')))
      await kv.delete('services', n('a'))
      const b2 = await kv.put('services', n('b'), sampleValue('services', n('b'), 2), { revision: b1.revision })
      await kv.create('nodes', n('other-kind'), sampleValue('nodes', n('other-kind')))
      const marker = await kv.create('services', n('marker'), sampleValue('services', n('marker')))
      await rec.until('the marker', () => rec.view.has(marker.name))
      const expected: KvEvent[] = [
        { type: 'put', entry: a1 },
        { type: 'put', entry: a2 },
        { type: 'put', entry: b1 },
        { type: 'delete', kind: 'services', name: n('a'), revision: '' },
        { type: 'put', entry: b2 },
        { type: 'put', entry: marker },
      ]
      const got = rec.events(ours(tag))
      t.strictSame(got.map(describe), expected.map(describe), 'put, update, put, delete, update, put: each once, in order; nothing from before the list, nothing of another kind')
      t.strictSame(
        got.flatMap((e) => (e.type === 'put' ? [e.entry.revision] : [])),
        [a1, a2, b1, b2, marker].map((e) => e.revision),
        'each put carries the revision its write returned',
      )
      const del = got[3]
      t.ok(del?.type === 'delete' && typeof del.revision === 'string' && del.revision !== '' && del.revision !== a2.revision, 'the delete carries a new revision')
      t.equal(rec.resets(), 0, 'no reset')
      t.strictSame(rec.states(), [], 'no state change')

      const replay = new WatchRecorder()
      t.teardown(w.watch('services', revision, replay.handlers))
      await replay.until('the marker, replayed', () => replay.view.has(marker.name))
      t.strictSame(replay.events(ours(tag)).map(describe), expected.map(describe), 'a watch started later from the same revision replays the same changes')

      stop()
      replay.view.clear()
      const after = await kv.create('services', n('after'), sampleValue('services', n('after')))
      await replay.until('a change after stop', () => replay.view.has(after.name))
      t.notOk(rec.view.has(after.name), 'a stopped watch delivers nothing more')
      for (const s of ['before', 'b', 'marker', 'after']) await kv.delete('services', n(s))
      await kv.delete('nodes', n('other-kind'))
    })

    t.test('ttl: an entry expires on its own, and a watcher sees a delete', async (t) => {
      const [w, kv] = [(await client(t)).kv, (await client(t)).kv]
      const tag = 'ttl'
      const { revision } = await w.list('claims')
      const rec = new WatchRecorder()
      t.teardown(w.watch('claims', revision, rec.handlers))
      const created = await kv.create('claims', nameOf(tag, '10.0.0.2'), sampleValue('claims', 'x'), { ttlMs: 1000 })
      const put = await kv.put('claims', nameOf(tag, '10.0.0.3'), sampleValue('claims', 'x', 2), { ttlMs: 1500 })
      t.strictSame(await kv.get('claims', created.name), created, 'the entry is there right after the write')
      for (const e of [created, put]) {
        await rec.until(`${e.name} expiring`, () => rec.events().some((ev) => ev.type === 'delete' && ev.name === e.name))
        t.equal(await kv.get('claims', e.name), undefined, `${e.name}: gone from get`)
        t.notOk((await kv.list('claims')).entries.some((x) => x.name === e.name), `${e.name}: gone from list`)
        t.strictSame(rec.events((x) => x === e.name).map((x) => x.type), ['put', 'delete'], `${e.name}: the watcher saw it written, then deleted`)
      }
    })

    t.test('writing an entry again sets its expiry afresh (or removes it)', async (t) => {
      const [w, kv] = [(await client(t)).kv, (await client(t)).kv]
      const tag = 'rettl'
      const n = (s: string): string => nameOf(tag, s)
      const { revision } = await w.list('nodes')
      const rec = new WatchRecorder()
      t.teardown(w.watch('nodes', revision, rec.handlers))
      const deleted = (name: string) => (): boolean => rec.events().some((e) => e.type === 'delete' && e.name === name)
      await kv.put('nodes', n('longer'), sampleValue('nodes', n('longer')), { ttlMs: 1000 })
      await kv.put('nodes', n('forever'), sampleValue('nodes', n('forever')), { ttlMs: 1000 })
      const longer = await kv.put('nodes', n('longer'), sampleValue('nodes', n('longer'), 2), { ttlMs: 6000 })
      const forever = await kv.put('nodes', n('forever'), sampleValue('nodes', n('forever'), 2))
      await kv.put('nodes', n('control'), sampleValue('nodes', n('control')), { ttlMs: 1000 })
      await rec.until('the control entry expiring', deleted(n('control')))
      // The first writes' expiry was due before the control's: give a stale one time to land.
      await sleep(1000)
      t.strictSame(await kv.get('nodes', longer.name), longer, 'an entry written again with a longer ttl outlives its first ttl')
      t.strictSame(await kv.get('nodes', forever.name), forever, 'an entry written again without ttl outlives its first ttl')
      await rec.until('the longer entry expiring', deleted(longer.name))
      t.strictSame(await kv.get('nodes', forever.name), forever, 'the entry written without ttl stays')
      t.strictSame(rec.events((x) => x === forever.name).map((e) => e.type), ['put', 'put'], 'and was never deleted')
      await kv.delete('nodes', forever.name)
    })

    t.test('a watch from a compacted revision resets with the full list, then continues', { skip: noCompact }, async (t) => {
      const c = await client(t)
      if (c.compact === undefined) throw new Error('open() gave compact once, then not')
      const w = (await client(t)).kv
      const { kv } = c
      const tag = 'compact'
      const n = (s: string): string => nameOf(tag, s)
      await kv.create('endpoints', n('x'), sampleValue('endpoints', n('x')))
      await kv.create('endpoints', n('y'), sampleValue('endpoints', n('y')))
      const { revision } = await kv.list('endpoints')
      await kv.put('endpoints', n('x'), sampleValue('endpoints', n('x'), 2))
      await kv.delete('endpoints', n('y'))
      await kv.create('endpoints', n('z'), sampleValue('endpoints', n('z')))
      await c.compact()
      const rec = new WatchRecorder()
      t.teardown(w.watch('endpoints', revision, rec.handlers))
      await rec.until('a reset', () => rec.resets() > 0)
      const reset = rec.log.find((l) => l.type === 'reset')
      const now = await kv.list('endpoints')
      const mine = (es: readonly KvEntry[]): KvEntry[] => es.filter((e) => ours(tag)(e.name)).sort((p, q) => p.name.localeCompare(q.name))
      t.strictSame(reset?.type === 'reset' ? mine(reset.entries) : undefined, mine(now.entries), 'the reset holds every entry as it is now (x updated, y gone, z new)')
      t.ok(reset?.type === 'reset' && typeof reset.revision === 'string' && reset.revision !== '', 'with a revision')
      t.equal(rec.events(ours(tag)).length, 0, 'no events before the reset')
      const z2 = await kv.put('endpoints', n('z'), sampleValue('endpoints', n('z'), 2))
      await rec.until('the change after the reset', () => rec.view.get(z2.name)?.revision === z2.revision)
      t.strictSame(rec.events(ours(tag)).map(describe), [describe({ type: 'put', entry: z2 })], 'events continue after the reset, once each')
      t.equal(rec.resets(), 1, 'one reset')
      for (const s of ['x', 'z']) await kv.delete('endpoints', n(s))
    })

    t.test('outage: calls reject with KvUnavailable, watches go down and come back missing nothing', { skip: noOutage }, async (t) => {
      const writer = await client(t)
      if (writer.outage === undefined) throw new Error('open() gave outage once, then not')
      const { outage, compact } = writer
      const timeoutMs = writer.timeoutMs ?? 3000
      const w = (await client(t)).kv
      const kv = writer.kv
      const tag = 'outage'
      const n = (s: string): string => nameOf(tag, s)
      const x = await kv.create('endpoints', n('x'), sampleValue('endpoints', n('x')))
      const listed = await w.list('endpoints')
      const rec = new WatchRecorder().seed(listed.entries)
      t.teardown(w.watch('endpoints', listed.revision, rec.handlers))

      let restarted = false
      t.teardown(async () => {
        if (!restarted) await outage.start()
      })
      await outage.stop()
      const calls: Array<[string, (kv: Kv) => Promise<unknown>]> = [
        ['get', (c) => c.get('endpoints', x.name)],
        ['list', (c) => c.list('endpoints')],
        ['create', (c) => c.create('endpoints', n('y'), sampleValue('endpoints', n('y')))],
        ['put', (c) => c.put('endpoints', x.name, sampleValue('endpoints', x.name, 2))],
        ['put with revision', (c) => c.put('endpoints', x.name, sampleValue('endpoints', x.name, 2), { revision: x.revision })],
        ['delete', (c) => c.delete('endpoints', x.name)],
        ['health', (c) => c.health()],
      ]
      for (const [what, call] of calls) {
        for (const [who, c] of [['writer', kv], ['watcher', w]] as const) await rejectsUnavailable(t, call(c), kv.backend, timeoutMs, `${what} (${who})`)
      }
      await rec.until("the watch reporting 'down'", () => rec.states().includes('down'))
      await outage.start()
      restarted = true

      // Written by another client as soon as the engine answers: the watcher may not have resumed yet.
      const x2 = await retryUnavailable(() => kv.put('endpoints', x.name, sampleValue('endpoints', x.name, 2)))
      const y = await retryUnavailable(() => kv.create('endpoints', n('y'), sampleValue('endpoints', n('y'))))
      await retryUnavailable(() => kv.delete('endpoints', x.name))
      await rec.until("the watch reporting 'up'", () => rec.states().at(-1) === 'up')
      await rec.until('the changes made after the restart', () => !rec.view.has(x.name) && rec.view.get(y.name)?.revision === y.revision)
      const states = rec.states()
      t.ok(states.length >= 2 && states.every((s, i) => s === (i % 2 === 0 ? 'down' : 'up')), `the watch reported down, then up (${states.join(', ')})`)
      if (rec.resets() === 0) {
        t.strictSame(
          rec.events(ours(tag)).map(describe),
          [describe({ type: 'put', entry: x2 }), describe({ type: 'put', entry: y }), { type: 'delete', kind: 'endpoints', name: x.name }],
          'the watch resumed from its revision: each change once, in order',
        )
      } else {
        t.pass(`the watch could not resume and was reset (${rec.resets()})`)
      }
      await w.health()
      t.pass('health() answers again')

      // A second outage: history compacted before the watcher can resume (when the backend can compact).
      await outage.stop()
      restarted = false
      await rec.until("the watch reporting 'down' again", () => rec.states().filter((s) => s === 'down').length === 2)
      await outage.start()
      restarted = true
      const z = await retryUnavailable(() => kv.create('endpoints', n('z'), sampleValue('endpoints', n('z'))))
      await retryUnavailable(() => kv.delete('endpoints', y.name))
      if (compact !== undefined) await retryUnavailable(compact)
      await rec.until("the watch reporting 'up' again", () => rec.states().filter((s) => s === 'up').length === 2)
      await rec.until('the changes of the second outage', () => !rec.view.has(y.name) && rec.view.get(z.name)?.revision === z.revision)
      const mine = (es: Iterable<KvEntry>): KvEntry[] => [...es].filter((e) => ours(tag)(e.name)).sort((p, q) => p.name.localeCompare(q.name))
      t.strictSame(mine(rec.view.values()), mine((await kv.list('endpoints')).entries), "the watcher's view equals the store")
      t.comment(`second outage: the watch ${rec.resets() > 0 ? 'was reset' : 'resumed from its revision'}`)
      await kv.delete('endpoints', z.name)
    })
  })
}
