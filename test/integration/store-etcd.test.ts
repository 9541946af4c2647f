// agent/store/etcd.ts against a real etcd (test/lib/etcd.ts, one member on loopback per test): the store
// conformance suite with compaction and an outage made by SIGKILLing etcd; then what only a real engine
// shows: leases outliving their writer and never left behind, etcd killed and restarted under load from
// two clients, a watcher cut off while another client writes (and compacts), an endpoint that never
// answers, etcd frozen, TLS with client certificates, paged lists and prefixes.
import { connect, createServer, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { EtcdKv, type EtcdKvOptions } from '../../agent/store/etcd.js'
import { KvUnavailable, type KvEntry } from '../../agent/store/kv.js'
import { kvConformance } from '../lib/kv-conformance.js'
import { sampleValue } from '../lib/kv-sample-values.js'
import { rejectsUnavailable, retryUnavailable } from '../lib/kv-unavailable.js'
import { WatchRecorder } from '../lib/kv-watch-recorder.js'
import { makeEtcdCerts, startEtcd } from '../lib/etcd.js'

// The store's default: a loaded test machine can keep etcd from answering within less.
const TIMEOUT_MS = 3000
const PREFIX = `/nsm-test-${process.pid}`

async function open(t: Test, opts: EtcdKvOptions): Promise<EtcdKv> {
  const kv = await EtcdKv.open({ prefix: PREFIX, timeoutMs: TIMEOUT_MS, ...opts })
  t.teardown(() => kv.close())
  return kv
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `cond` until it holds; fails after 30 s (a hang, not a speed target). */
async function waitUntil(what: string, cond: () => boolean): Promise<void> {
  for (let waited = 0; !cond(); waited += 20) {
    if (waited > 30_000) throw new Error(`${what}: not within 30 s`)
    await sleep(20)
  }
}

t.test('conformance', async (t) => {
  const etcd = await startEtcd(t)
  await kvConformance(t, 'etcd', async () => ({
    kv: await EtcdKv.open({ endpoints: etcd.endpoints, prefix: PREFIX, timeoutMs: TIMEOUT_MS }),
    compact: async () => {
      await etcd.compact()
    },
    outage: { stop: () => etcd.kill(), start: () => etcd.start() },
    timeoutMs: TIMEOUT_MS,
  }))
})

t.test('leases: an entry outlives nothing, and no lease is left behind', async (t) => {
  const etcd = await startEtcd(t)
  const observer = await open(t, { endpoints: etcd.endpoints })
  const { revision } = await observer.list('endpoints')
  const rec = new WatchRecorder()
  t.teardown(observer.watch('endpoints', revision, rec.handlers))

  const writer = await EtcdKv.open({ endpoints: etcd.endpoints, prefix: PREFIX, timeoutMs: TIMEOUT_MS })
  const written = await writer.create('endpoints', 'nse-gone', sampleValue('endpoints', 'nse-gone'), { ttlMs: 1000 })
  await writer.close()
  await rec.until('the entry of a closed writer expiring', () => rec.events().some((e) => e.type === 'delete' && e.name === written.name))
  t.equal(await observer.get('endpoints', written.name), undefined, "the writer gone, its entry expired for another client's watcher")

  const kv = await open(t, { endpoints: etcd.endpoints })
  t.strictSame(await etcd.leases(), [], 'the expired lease is gone')
  await kv.put('nodes', 'n1', sampleValue('nodes', 'n1'), { ttlMs: 30_000 })
  const first = await etcd.leases()
  t.equal(first.length, 1, 'a write with ttl holds one lease')
  const again = await kv.put('nodes', 'n1', sampleValue('nodes', 'n1', 2), { ttlMs: 30_000 })
  const second = await etcd.leases()
  t.equal(second.length, 1, 'writing it again with ttl: still one lease ...')
  t.not(second[0], first[0], '... a new one: the old one was revoked')
  t.strictSame(await kv.get('nodes', 'n1'), again, 'revoking the old lease did not take the entry with it')
  await kv.put('nodes', 'n1', sampleValue('nodes', 'n1', 3))
  t.strictSame(await etcd.leases(), [], 'writing it again without ttl: no lease left')
  await kv.put('nodes', 'n1', sampleValue('nodes', 'n1'), { ttlMs: 30_000 })
  await t.rejects(kv.create('nodes', 'n1', sampleValue('nodes', 'n1'), { ttlMs: 30_000 }), { name: 'KvConflict' }, 'a create that conflicts ...')
  t.equal((await etcd.leases()).length, 1, "... leaves no lease of its own (the entry's is the only one)")
  const stale = (await kv.get('nodes', 'n1'))?.revision ?? ''
  await kv.put('nodes', 'n1', sampleValue('nodes', 'n1', 2))
  await t.rejects(kv.put('nodes', 'n1', {}, { ttlMs: 30_000, revision: stale }), { name: 'KvConflict' }, 'a put that conflicts ...')
  t.strictSame(await etcd.leases(), [], '... leaves no lease either')
  await kv.put('nodes', 'n1', sampleValue('nodes', 'n1'), { ttlMs: 30_000 })
  t.equal(await kv.delete('nodes', 'n1'), true, 'deleting an entry with ttl ...')
  t.strictSame(await etcd.leases(), [], '... revokes its lease')
  t.strictSame(
    rec.events((n) => n === written.name).map((e) => e.type),
    ['put', 'delete'],
    'the watcher saw the expired entry written, then deleted',
  )
})

t.test('etcd killed (SIGKILL) and restarted under load from two clients: no acknowledged put lost', async (t) => {
  const etcd = await startEtcd(t)
  const [a, b, w] = [await open(t, { endpoints: etcd.endpoints }), await open(t, { endpoints: etcd.endpoints }), await open(t, { endpoints: etcd.endpoints })]
  const { revision } = await w.list('claims')
  const rec = new WatchRecorder()
  t.teardown(w.watch('claims', revision, rec.handlers))

  const acked = new Map<string, KvEntry>()
  const refused: unknown[] = []
  const counts = { a: { ok: 0, failed: 0 }, b: { ok: 0, failed: 0 } }
  let running = true
  const load = async (kv: EtcdKv, who: 'a' | 'b'): Promise<void> => {
    for (let i = 0; running; i++) {
      const name = `load-${who}-${i}`
      try {
        acked.set(name, await kv.put('claims', name, { ...sampleValue('claims', name, i), node: who }))
        counts[who].ok++
      } catch (err) {
        refused.push(err)
        counts[who].failed++
        await sleep(20)
      }
    }
  }
  const loops = [load(a, 'a'), load(b, 'b')]
  t.teardown(async () => {
    running = false
    await Promise.all(loops)
  })
  await waitUntil('50 puts by each client', () => counts.a.ok >= 50 && counts.b.ok >= 50)
  await etcd.kill()
  await waitUntil('puts refused while etcd is down', () => counts.a.failed >= 3 && counts.b.failed >= 3)
  await rec.until("the watch reporting 'down'", () => rec.states().includes('down'))
  const before = { a: counts.a.ok, b: counts.b.ok }
  await etcd.start()
  await waitUntil('50 more puts by each after the restart', () => counts.a.ok >= before.a + 50 && counts.b.ok >= before.b + 50)
  running = false
  await Promise.all(loops)

  t.ok(refused.length >= 6, `puts were refused during the outage (${refused.length})`)
  t.ok(refused.every((e) => e instanceof KvUnavailable), 'every refusal is KvUnavailable', { found: refused.filter((e) => !(e instanceof KvUnavailable)).map(String) })
  const stored = new Map((await w.list('claims')).entries.map((e) => [e.name, e]))
  const lost = [...acked.values()].filter((e) => JSON.stringify(stored.get(e.name)) !== JSON.stringify(e))
  t.strictSame(lost, [], `every acknowledged put (${acked.size}) is in the store as acknowledged`)
  await rec.until('every acknowledged put', () => [...acked.values()].every((e) => rec.view.get(e.name)?.revision === e.revision))
  const perName = new Map<string, number>()
  for (const e of rec.events()) perName.set(e.type === 'put' ? e.entry.name : e.name, (perName.get(e.type === 'put' ? e.entry.name : e.name) ?? 0) + 1)
  t.ok([...perName.values()].every((n) => n === 1), 'the watcher saw each put once')
  t.equal(rec.resets(), 0, 'it resumed from its revision (nothing was compacted)')
  t.strictSame(rec.states(), ['down', 'up'], 'and reported down, then up')
  t.comment(`${acked.size} puts acknowledged, ${refused.length} refused, ${stored.size} stored`)
})

/** A TCP proxy to etcd that a test can cut (every connection dropped, new ones refused) and restore. */
async function cuttableProxy(t: Test, endpoint: string): Promise<{ endpoint: string; cut(): void; restore(): void }> {
  const target = new URL(endpoint)
  const sockets = new Set<Socket>()
  let open = true
  const track = (s: Socket): void => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.on('close', () => sockets.delete(s))
  }
  const server = createServer((client) => {
    track(client)
    if (!open) {
      client.destroy()
      return
    }
    const upstream = connect(Number(target.port), target.hostname)
    track(upstream)
    client.pipe(upstream).pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const cut = (): void => {
    open = false
    for (const s of sockets) s.destroy()
  }
  t.teardown(() => new Promise<void>((resolve) => {
    cut()
    server.close(() => resolve())
  }))
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { endpoint: `http://127.0.0.1:${port}`, cut, restore: () => (open = true) }
}

t.test('a watcher cut off from etcd while another client writes: resumes with each change once, or resets after a compaction', async (t) => {
  const etcd = await startEtcd(t)
  const proxy = await cuttableProxy(t, etcd.endpoints[0] ?? '')
  const kv = await open(t, { endpoints: etcd.endpoints })
  const w = await open(t, { endpoints: [proxy.endpoint] })
  const x = await kv.create('endpoints', 'nse-x', sampleValue('endpoints', 'nse-x'))
  const listed = await w.list('endpoints')
  const rec = new WatchRecorder().seed(listed.entries)
  t.teardown(w.watch('endpoints', listed.revision, rec.handlers))
  const y0 = await kv.create('endpoints', 'nse-y', sampleValue('endpoints', 'nse-y'))
  await rec.until('nse-y', () => rec.view.has('nse-y'))

  proxy.cut()
  await rec.until("the watch reporting 'down'", () => rec.states().includes('down'))
  await rejectsUnavailable(t, w.get('endpoints', 'nse-x'), 'etcd', TIMEOUT_MS, 'a call of the cut-off client')
  const x2 = await kv.put('endpoints', 'nse-x', sampleValue('endpoints', 'nse-x', 2), { revision: x.revision })
  const z = await kv.create('endpoints', 'nse-z', sampleValue('endpoints', 'nse-z'))
  await kv.delete('endpoints', 'nse-y')
  proxy.restore()
  await rec.until('the changes made while cut off', () => rec.view.get('nse-z')?.revision === z.revision && !rec.view.has('nse-y'))
  t.strictSame(rec.states(), ['down', 'up'], 'down, then up')
  t.strictSame(
    rec.events().map((e) => (e.type === 'put' ? `put ${e.entry.name} ${e.entry.revision}` : `delete ${e.name}`)),
    [`put nse-y ${y0.revision}`, `put nse-x ${x2.revision}`, `put nse-z ${z.revision}`, 'delete nse-y'],
    'the changes made by another client while cut off: each once, in order',
  )
  t.equal(rec.resets(), 0, 'no reset')

  proxy.cut()
  await rec.until("the watch reporting 'down' again", () => rec.states().length === 3)
  await kv.delete('endpoints', 'nse-x')
  const v = await kv.create('endpoints', 'nse-v', sampleValue('endpoints', 'nse-v'))
  await etcd.compact()
  proxy.restore()
  await rec.until('a reset', () => rec.resets() === 1)
  const reset = rec.log.find((l) => l.type === 'reset')
  const now = await kv.list('endpoints')
  t.strictSame(reset?.type === 'reset' ? [...reset.entries].sort((p, q) => p.name.localeCompare(q.name)) : undefined, [...now.entries].sort((p, q) => p.name.localeCompare(q.name)), 'its revision compacted meanwhile: reset with the full list (v, z)')
  t.strictSame(now.entries.map((e) => e.name).sort(), ['nse-v', 'nse-z'], 'which is the store now')
  t.equal(rec.events().length, 4, 'no events for the changes the reset covers')
  const v2 = await kv.put('endpoints', 'nse-v', sampleValue('endpoints', 'nse-v', 2), { revision: v.revision })
  await rec.until('a change after the reset', () => rec.view.get('nse-v')?.revision === v2.revision)
  t.equal(rec.events().length, 5, 'events continue after the reset')
  t.strictSame(rec.states(), ['down', 'up', 'down', 'up'], 'down, then up, again')
})

t.test('an endpoint that accepts connections and never answers: calls and watches do not hang', async (t) => {
  const sockets = new Set<Socket>()
  const server = createServer((s) => {
    sockets.add(s)
    s.on('error', () => undefined)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  const address = server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const timeoutMs = 1000
  const kv = await open(t, { endpoints: [`http://127.0.0.1:${port}`], timeoutMs })
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['get', () => kv.get('nodes', 'n1')],
    ['list', () => kv.list('nodes')],
    ['create with ttl', () => kv.create('nodes', 'n1', sampleValue('nodes', 'n1'), { ttlMs: 5000 })],
    ['put with revision', () => kv.put('nodes', 'n1', sampleValue('nodes', 'n1'), { revision: '7' })],
    ['delete', () => kv.delete('nodes', 'n1')],
    ['health', () => kv.health()],
  ]
  const started = Date.now()
  await Promise.all(calls.map(([what, call]) => rejectsUnavailable(t, call(), 'etcd', timeoutMs, what)))
  t.comment(`all rejected after ${Date.now() - started} ms (timeout ${timeoutMs} ms)`)
  const rec = new WatchRecorder()
  t.teardown(kv.watch('nodes', '1', rec.handlers))
  await rec.until("the watch reporting 'down'", () => rec.states().includes('down'))
  t.match(rec.log[0], { type: 'state', state: 'down', reason: /no answer within/ }, 'a watch nobody answers reports down')
})

t.test('etcd frozen (SIGSTOP): calls reject within the timeout, the watch finds the silent stream and resumes', async (t) => {
  const etcd = await startEtcd(t)
  t.teardown(() => etcd.thaw())
  const timeoutMs = 1000
  const [kv, w] = [await open(t, { endpoints: etcd.endpoints, timeoutMs }), await open(t, { endpoints: etcd.endpoints, timeoutMs })]
  const { revision } = await w.list('nodes')
  const rec = new WatchRecorder()
  t.teardown(w.watch('nodes', revision, rec.handlers))
  const n1 = await kv.put('nodes', 'n1', sampleValue('nodes', 'n1'))
  await rec.until('n1', () => rec.view.has('n1'))
  await etcd.freeze()
  await Promise.all([
    rejectsUnavailable(t, kv.get('nodes', 'n1'), 'etcd', timeoutMs, 'get'),
    rejectsUnavailable(t, kv.put('nodes', 'n2', sampleValue('nodes', 'n2'), { ttlMs: 5000 }), 'etcd', timeoutMs, 'put with ttl'),
    rejectsUnavailable(t, kv.delete('nodes', 'n1', { revision: n1.revision }), 'etcd', timeoutMs, 'delete with revision'),
  ])
  // gRPC pings every 10 s find the stream dead when etcd does not answer one within the timeout.
  await rec.until("the watch reporting 'down'", () => rec.states().includes('down'))
  etcd.thaw()
  const n3 = await retryUnavailable(() => kv.put('nodes', 'n3', sampleValue('nodes', 'n3')))
  await rec.until('a write after the thaw', () => rec.view.get('n3')?.revision === n3.revision)
  t.equal(rec.states().at(-1), 'up', 'the watch reported down, then up')
  t.strictSame([...rec.view.keys()].sort(), (await kv.list('nodes')).entries.map((e) => e.name).sort(), "the watcher's view equals the store (a write in flight at the freeze may or may not be in)")
})

t.test('TLS with client certificates', async (t) => {
  const certs = makeEtcdCerts(t)
  const etcd = await startEtcd(t, { tls: certs })
  t.match(etcd.endpoints[0], /^https:\/\/127\.0\.0\.1:\d+$/, 'etcd serves https')
  const kv = await open(t, { endpoints: etcd.endpoints, tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } })
  await kv.health()
  const { revision } = await kv.list('services')
  const rec = new WatchRecorder()
  t.teardown(kv.watch('services', revision, rec.handlers))
  const svc = await kv.create('services', 'svc-a', sampleValue('services', 'svc-a'))
  t.strictSame(await kv.get('services', 'svc-a'), svc, 'a client with a certificate of the CA writes and reads')
  await rec.until('the write', () => rec.view.has('svc-a'))
  t.pass('and watches')

  const anonymous = await open(t, { endpoints: etcd.endpoints, tls: { ca: certs.ca } })
  await rejectsUnavailable(t, anonymous.get('services', 'svc-a'), 'etcd', TIMEOUT_MS, 'a client without a certificate')
  const stranger = await open(t, { endpoints: etcd.endpoints, tls: { ca: certs.ca, cert: certs.strangerCert, key: certs.strangerKey } })
  await rejectsUnavailable(t, stranger.get('services', 'svc-a'), 'etcd', TIMEOUT_MS, "a client with another CA's certificate")
  const trustsNobody = await open(t, { endpoints: etcd.endpoints, tls: { ca: certs.strangerCert, cert: certs.clientCert, key: certs.clientKey } })
  await rejectsUnavailable(t, trustsNobody.get('services', 'svc-a'), 'etcd', TIMEOUT_MS, "a client that does not trust etcd's CA")
  const plain = await open(t, { endpoints: [etcd.endpoints[0]?.replace('https:', 'http:') ?? ''] })
  await rejectsUnavailable(t, plain.get('services', 'svc-a'), 'etcd', TIMEOUT_MS, 'a client without TLS')
  await t.rejects(EtcdKv.open({ endpoints: [etcd.endpoints[0]?.replace('https:', 'http:') ?? ''], tls: { ca: certs.ca } }), TypeError, 'http:// endpoints with TLS files are refused at open')
  await t.rejects(EtcdKv.open({ endpoints: etcd.endpoints, tls: { ca: certs.ca, cert: certs.clientCert } }), TypeError, 'a certificate without its key is refused at open')
  await t.rejects(EtcdKv.open({ endpoints: etcd.endpoints, tls: { ca: `${certs.dir}/missing.crt` } }), { code: 'ENOENT' }, 'a missing file fails open')
  await kv.delete('services', 'svc-a')
})

t.test('lists come in pages of one snapshot; prefixes keep stores apart; options are checked', async (t) => {
  const etcd = await startEtcd(t)
  const paged = await open(t, { endpoints: etcd.endpoints, pageSize: 3 })
  const other = await open(t, { endpoints: etcd.endpoints, prefix: `${PREFIX}-other` })
  const names = Array.from({ length: 10 }, (_, i) => `nse-${i}`)
  const written = []
  for (const n of names) written.push(await paged.put('endpoints', n, sampleValue('endpoints', n)))
  await other.put('endpoints', 'nse-0', sampleValue('endpoints', 'nse-0', 9))
  const revision = await etcd.revision()
  const listed = await paged.list('endpoints')
  t.strictSame([...listed.entries].sort((p, q) => p.name.localeCompare(q.name)), [...written].sort((p, q) => p.name.localeCompare(q.name)), 'ten entries over four pages')
  t.equal(listed.revision, revision, "the list's revision is the store's")
  t.strictSame((await other.list('endpoints')).entries.map((e) => e.name), ['nse-0'], 'another prefix sees only its own')
  t.strictSame((await paged.get('endpoints', 'nse-0'))?.value, sampleValue('endpoints', 'nse-0'), 'and does not touch ours')
  await t.rejects(paged.put('endpoints', 'nse-0', {}, { revision: 'k8s-123' }), { name: 'KvConflict' }, 'a revision that is no etcd revision conflicts')
  for (const [opts, why] of [
    [{ endpoints: [] }, 'no endpoints'],
    [{ endpoints: ['127.0.0.1'] }, 'an endpoint without port'],
    [{ endpoints: etcd.endpoints, prefix: 'nsm' }, 'a relative prefix'],
    [{ endpoints: etcd.endpoints, prefix: '/nsm/' }, 'a prefix ending in /'],
    [{ endpoints: etcd.endpoints, timeoutMs: 0 }, 'a timeout of 0'],
  ] as Array<[EtcdKvOptions, string]>) {
    await t.rejects(EtcdKv.open(opts), TypeError, `${why} is refused`)
  }
  t.throws(() => paged.watch('endpoints', 'abc', new WatchRecorder().handlers), TypeError, 'a watch from no revision is refused')
  await paged.close()
  await t.rejects(paged.get('endpoints', 'nse-0'), KvUnavailable, 'a closed client refuses calls')
})
