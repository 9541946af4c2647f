// agent/metrics/histogram.ts: a FastHistogram exports, as Prometheus text and as JSON, exactly what a
// prom-client Histogram with the same options and observations exports; its children are cached, its
// checks throw as prom-client's do, and what an observation costs against prom-client's is printed.
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Histogram, Registry } from 'prom-client'
import { FastHistogram } from '../../agent/metrics/histogram.js'

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const LABELS = ['service', 'element', 'outcome'] as const
type Label = (typeof LABELS)[number]
type Labels = Partial<Record<Label, string>>

/** The same histograms twice: prom-client's on one registry, ours on the other. */
function pair(labelNames: readonly Label[] = LABELS, name = 'nsm_test_seconds') {
  const prom = new Registry()
  const fast = new Registry()
  const options = { name, help: 'Test "durations"\\ with\nescapes', labelNames, buckets: BUCKETS }
  return {
    prom,
    fast,
    p: new Histogram({ ...options, registers: [prom] }),
    f: new FastHistogram({ ...options, registers: [fast] }),
  }
}

async function assertSameExport(t: Test, prom: Registry, fast: Registry, what: string): Promise<void> {
  t.equal(await fast.metrics(), await prom.metrics(), `${what}: same Prometheus text`)
  t.strictSame(await fast.getMetricsAsJSON(), await prom.getMetricsAsJSON(), `${what}: same JSON`)
}

/** mulberry32: a seeded generator, so a failing case can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), a | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

// No ':' in a value: prom-client's series key is `name:value,` per label, which such values can make collide.
const LABEL_VALUES = ['a', 'b', '', 'say "hi"', 'back\\slash', 'new\nline', 'both\\"\n', 'x,y', 'ünï', 'nul\0byte', 'le']
const SPECIAL_VALUES = [...BUCKETS, 0, -0, -0.5, 11, 1e9, 0.1 + 0.2, Number.MIN_VALUE]

for (const seed of [1, 2, 3, 42, 2024]) {
  t.test(`random observations (seed ${seed}): the same export as prom-client`, async (t) => {
    const rnd = random(seed)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T
    const { prom, fast, p, f } = pair()
    // A second, unlabelled histogram on each registry: the order of metrics and the unlabelled series too.
    const p0 = new Histogram({ name: 'nsm_test_total_seconds', help: 'all', buckets: BUCKETS, registers: [prom] })
    const f0 = new FastHistogram({ name: 'nsm_test_total_seconds', help: 'all', labelNames: [], buckets: BUCKETS, registers: [fast] })
    await assertSameExport(t, prom, fast, 'nothing observed')
    const sets = Array.from({ length: 6 }, () => LABELS.map(() => pick(LABEL_VALUES)))
    for (let i = 0; i < 400; i++) {
      const values = pick(sets)
      const v = rnd() < 0.4 ? pick(SPECIAL_VALUES) : rnd() * 12
      const full = Object.fromEntries(LABELS.map((n, j) => [n, values[j]])) as Labels
      const how = rnd()
      if (how < 0.5) {
        f.child(...values).observe(v)
        p.labels(...values).observe(v)
      } else if (how < 0.7) {
        // The same label set in another key order: a series first observed this way prints its labels so.
        const shuffled = Object.fromEntries(Object.entries(full).sort(() => rnd() - 0.5)) as Labels
        f.observe(shuffled, v)
        p.observe(shuffled, v)
      } else if (how < 0.9) {
        const partial = Object.fromEntries(Object.entries(full).filter(() => rnd() < 0.5)) as Labels
        f.observe(partial, v)
        p.observe(partial, v)
      } else {
        f0.observe({}, v)
        p0.observe({}, v)
      }
      if (i === 200) {
        await assertSameExport(t, prom, fast, 'halfway')
        f.reset()
        p.reset()
        await assertSameExport(t, prom, fast, 'after a reset')
      }
    }
    await assertSameExport(t, prom, fast, 'at the end')
  })
}

t.test('startTimer observes the seconds since it started, under its labels and the end call\'s', async (t) => {
  const { fast, f } = pair()
  const end = f.startTimer({ service: 'web' })
  await sleep(20)
  const seconds = end({ outcome: 'ok', element: 'ipam' })
  t.ok(seconds >= 0.015 && seconds < 5, `a plausible duration: ${seconds}`)
  const [metric] = await fast.getMetricsAsJSON()
  const labels = { service: 'web', outcome: 'ok', element: 'ipam' }
  t.strictSame(metric?.values.slice(-2), [
    { value: seconds, metricName: 'nsm_test_seconds_sum', exemplar: undefined, labels },
    { value: 1, metricName: 'nsm_test_seconds_count', exemplar: undefined, labels },
  ], 'one observation: its seconds as the sum')
  // The bucket is the first bound at or above the measured seconds (a 20 ms sleep can take 25.0075 ms on a
  // loaded machine), and the one below it still counts none.
  const at = BUCKETS.findIndex((b) => seconds <= b)
  const text = await fast.metrics()
  const bucket = (le: number) => `\nnsm_test_seconds_bucket{le="${le}",service="web",outcome="ok",element="ipam"}`
  t.ok(text.includes(`${bucket(BUCKETS[at]!)} 1\n`), `exported with labels in the order given, in le="${BUCKETS[at]}"`)
  if (at > 0) t.ok(text.includes(`${bucket(BUCKETS[at - 1]!)} 0\n`), `none in le="${BUCKETS[at - 1]}"`)
  t.throws(() => f.startTimer()({ nope: 'x' } as Labels), /Added label "nope" is not included in initial labelset/, 'a bad label at the end throws')
})

t.test('reset clears every series; a child held across it counts again from zero', async (t) => {
  const { prom, fast, p, f } = pair()
  const held = f.child('web', 'ipam', 'ok')
  held.observe(0.003)
  p.labels('web', 'ipam', 'ok').observe(0.003)
  f.observe({ service: 'db' }, 2)
  p.observe({ service: 'db' }, 2)
  f.reset()
  p.reset()
  t.equal(await fast.metrics(), '# HELP nsm_test_seconds Test "durations"\\\\ with\\nescapes\n# TYPE nsm_test_seconds histogram\n', 'no series left')
  await assertSameExport(t, prom, fast, 'after the reset')
  held.observe(0.2)
  p.labels('web', 'ipam', 'ok').observe(0.2)
  await assertSameExport(t, prom, fast, 'the held child observed again')
  fast.resetMetrics()
  prom.resetMetrics()
  await assertSameExport(t, prom, fast, "the registry's resetMetrics()")
})

t.test('an unlabelled histogram: one series from the start, none after a reset, as prom-client', async (t) => {
  const { prom, fast, p, f } = pair([])
  await assertSameExport(t, prom, fast, 'new')
  t.match(await fast.metrics(), /\nnsm_test_seconds_count 0\n/)
  f.child().observe(1)
  p.observe(1)
  await assertSameExport(t, prom, fast, 'observed')
  f.reset()
  p.reset()
  await assertSameExport(t, prom, fast, 'reset')
  f.observe({}, 3)
  p.observe({}, 3)
  await assertSameExport(t, prom, fast, 'observed after the reset')
})

t.test('a child is made once and then cached', async (t) => {
  const { f } = pair()
  const c = f.child('web', 'ipam', 'ok')
  t.equal(f.child('web', 'ipam', 'ok'), c, 'the same object for the same values')
  t.not(f.child('web', 'ipam', 'error'), c, 'another for other values')
  t.not(f.child('web\0ipam', 'ok', ''), f.child('web', 'ipam\0ok', ''), 'values holding a NUL do not collide')
  t.not(f.child('web\0ipam', 'ok', ''), f.child('web', 'ipam', 'ok\0'), 'nor with a set of clean values')
})

t.test('checks throw as prom-client does; wrong arity and bad buckets throw a clear error', async (t) => {
  const { p, f } = pair()
  const promError = (fn: () => void): string => {
    try {
      fn()
    } catch (err) {
      return err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)
    }
    return 'no error'
  }
  const bad = { service: 'web', nope: 'x' } as Labels
  t.equal(promError(() => f.observe(bad, 1)), promError(() => p.observe(bad, 1)), 'a label name not in labelNames')
  t.match(promError(() => f.observe(bad, 1)), /^Error: Added label "nope"/)
  for (const v of [NaN, Infinity, -Infinity]) {
    t.equal(promError(() => f.child('a', 'b', 'c').observe(v)), promError(() => p.labels('a', 'b', 'c').observe(v)), `child.observe(${v})`)
    t.equal(promError(() => f.observe({ service: 'a' }, v)), promError(() => p.observe({ service: 'a' }, v)), `observe(labels, ${v})`)
  }
  t.match(promError(() => f.child('a', 'b', 'c').observe(NaN)), /^TypeError: Value is not a valid number: NaN$/)
  t.throws(() => f.child('web', 'ipam'), { message: 'nsm_test_seconds: child() takes 3 label values (service, element, outcome), got 2' })
  t.throws(() => f.child('web', 'ipam', 'ok', 'extra'), /takes 3 label values/)
  const registers: Registry[] = []
  for (const [options, message] of [
    [{ name: 'bad-name', labelNames: [] }, 'Invalid metric name'],
    [{ name: 'h', labelNames: ['le'] }, 'le is a reserved label keyword'],
    [{ name: 'h', labelNames: ['a-b'] }, 'Invalid label name'],
  ] as const) {
    t.equal(promError(() => new FastHistogram({ ...options, help: 'h', buckets: BUCKETS, registers })), `Error: ${message}`)
    t.equal(promError(() => new Histogram({ ...options, help: 'h', buckets: BUCKETS, registers })), `Error: ${message}`)
  }
  t.throws(() => new FastHistogram({ name: 'h', help: 'h', labelNames: [], buckets: [1, 0.5], registers }), /strictly increasing/)
  t.throws(() => new FastHistogram({ name: 'h', help: 'h', labelNames: [], buckets: [1, Infinity], registers }), /finite/)
  t.throws(() => new FastHistogram({ name: 'h', help: 'h', labelNames: ['a', 'a'], buckets: [1], registers }), /appears twice/)
  t.throws(() => new FastHistogram({ name: 'nsm_test_seconds', help: 'h', labelNames: [], buckets: [1], registers: [pair().fast] }), /already been registered/)
})

t.test('cost of one observation, warm (printed, not asserted)', async (t) => {
  const { p, f } = pair()
  const values = Array.from({ length: 1024 }, (_, i) => (i % 17) * 0.0007 + (i % 5) * 0.3)
  const labels = { service: 'web', element: 'ipam', outcome: 'ok' }
  const child = f.child('web', 'ipam', 'ok')
  const n = 2_000_000
  const nsPer = (run: (v: number) => void): number => {
    for (let i = 0; i < n; i++) run(values[i & 1023] as number)
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) run(values[i & 1023] as number)
    return Number(process.hrtime.bigint() - t0) / n
  }
  const fastChild = nsPer((v) => child.observe(v))
  const fastLookup = nsPer((v) => f.child('web', 'ipam', 'ok').observe(v))
  const fastLabels = nsPer((v) => f.observe(labels, v))
  const promLabels = nsPer((v) => p.observe(labels, v))
  t.comment(`ns per observation: FastHistogram child.observe ${fastChild.toFixed(1)}, child(...values).observe ${fastLookup.toFixed(1)}, observe(labels) ${fastLabels.toFixed(1)}; prom-client observe(labels) ${promLabels.toFixed(1)}`)
  t.pass('measured')
})
