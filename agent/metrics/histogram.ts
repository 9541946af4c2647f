// agent/metrics/histogram.ts: a Prometheus histogram whose observation costs a Request next to nothing.
// prom-client's Histogram.observe(labels, v) checks and hashes the label object on every call. Here a
// series is resolved once (child(...values): a Map per label, no key string built) and child.observe(s) is
// a binary search over the bounds, an increment in a typed array and an addition: no allocation.
//
// It registers into prom-client Registries and exports, as text and JSON, exactly what a prom-client
// Histogram with the same options and observations would (test/unit/histogram.test.ts compares them),
// quirks included: a series exists from its first observation (an unlabelled one also from construction
// until the first reset); its labels print in the key order of the object that first observed it (child():
// labelNames order); a non-finite value throws prom-client's TypeError, a negative one is counted. Unlike
// prom-client, buckets must be finite and strictly increasing (it exports non-cumulative buckets otherwise)
// and a label name may not appear twice. reset() zeroes and unexports the series but keeps them cached: a
// child a caller holds stays valid and reappears at its next observation, as prom-client's labels() do.
import { performance } from 'node:perf_hooks'
import { format, inspect } from 'node:util'
import type { Metric, Registry as PromRegistry } from 'prom-client'

export interface HistogramChild {
  observe(seconds: number): void
}

export interface FastHistogramOptions<L extends string> {
  name: string
  help: string
  labelNames: readonly L[]
  buckets: readonly number[]
  registers: PromRegistry[]
}

type LabelSet = Readonly<Record<string, string>>
interface Level extends Map<string | undefined, Level | Series> {}

/** One exported sample, key for key what prom-client's Histogram yields (`exemplar` included). */
export interface HistogramSample {
  value: number
  metricName: string
  exemplar: null | undefined
  labels: Record<string, string | number>
  /** Only in getForPromString(): the series' labels, which the registry prints after `le`. */
  sharedLabels?: LabelSet
}

export interface HistogramSnapshot {
  name: string
  help: string
  type: 'histogram'
  values: HistogramSample[]
  aggregator: 'sum'
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

function notANumber(value: unknown): TypeError {
  return new TypeError(`Value is not a valid number: ${format(value)}`)
}

/** One label set's series. */
class Series implements HistogramChild {
  /** Observations per bucket (not cumulative); the last cell counts those above the last bound. */
  readonly counts: Float64Array
  sum = 0
  /** Whether the series is exported: observed since it was made or since the last reset. */
  listed = false
  /** The labels exported: those of the first observation since it was listed. */
  labels: LabelSet

  constructor(
    private readonly bounds: Float64Array,
    /** The histogram's exported series, in order of first observation. */
    private readonly exported: Series[],
    /** The labels in labelNames order, as child() resolves them. */
    private readonly ordered: LabelSet,
  ) {
    this.counts = new Float64Array(bounds.length + 1)
    this.labels = ordered
  }

  observe(seconds: number): void {
    if (!Number.isFinite(seconds)) throw notANumber(seconds)
    if (!this.listed) this.list(this.ordered)
    const bounds = this.bounds
    // The first bound >= seconds (prom-client's `le`), bounds.length if none.
    let lo = 0
    let hi = bounds.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (seconds <= (bounds[mid] as number)) hi = mid
      else lo = mid + 1
    }
    ;(this.counts[lo] as number)++
    this.sum += seconds
  }

  list(labels: LabelSet): void {
    this.labels = labels
    this.listed = true
    this.exported.push(this)
  }

  clear(): void {
    this.counts.fill(0)
    this.sum = 0
    this.listed = false
  }
}

export class FastHistogram<L extends string> {
  readonly name: string
  readonly help: string
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const
  readonly labelNames: readonly L[]
  readonly buckets: readonly number[]
  private readonly bounds: Float64Array
  /** The series by label values, one Map per label in labelNames order, keyed by the value or by
   *  undefined for a label left out; the last level holds the series. */
  private readonly byValues: Level = new Map()
  private readonly exported: Series[] = []

  constructor(o: FastHistogramOptions<L>) {
    // prom-client's checks, in its order and with its messages.
    if (!o.help) throw new Error('Missing mandatory help parameter')
    if (!o.name) throw new Error('Missing mandatory name parameter')
    if (!METRIC_NAME.test(o.name)) throw new Error('Invalid metric name')
    if (!o.labelNames.every((n) => LABEL_NAME.test(n))) throw new Error('Invalid label name')
    if (o.labelNames.includes('le' as L)) throw new Error('le is a reserved label keyword')
    if (new Set(o.labelNames).size !== o.labelNames.length) throw new Error(`${o.name}: a label name appears twice in ${inspect(o.labelNames)}`)
    o.buckets.forEach((b, i) => {
      if (!Number.isFinite(b) || (i > 0 && b <= (o.buckets[i - 1] as number))) throw new Error(`${o.name}: buckets must be finite and strictly increasing, got ${inspect(o.buckets)}`)
    })
    this.name = o.name
    this.help = o.help
    this.labelNames = [...o.labelNames]
    this.buckets = [...o.buckets]
    this.bounds = Float64Array.from(o.buckets)
    // prom-client exports an unlabelled histogram's one series, zero, from the start.
    if (this.labelNames.length === 0) this.lookup([]).list({})
    // prom-client's types name only its own four classes; a Registry calls name, help, type, aggregator,
    // get(), getForPromString() and reset(), which this class has with the same results.
    for (const r of o.registers) r.registerMetric(this as unknown as Metric<L>)
  }

  /** The child for these label values, in labelNames order; made once, then cached. */
  child(...values: string[]): HistogramChild {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.name}: child() takes ${this.labelNames.length} label values (${this.labelNames.join(', ')}), got ${values.length}`)
    }
    return this.lookup(values)
  }

  /** prom-client's observe(labels, value): the slow path, for rare series. */
  observe(labels: Partial<Record<L, string>>, value: number): void {
    const s = this.resolve(labels)
    if (!Number.isFinite(value)) throw notANumber(value)
    if (!s.listed) s.list({ ...labels } as LabelSet)
    s.observe(value)
  }

  /** Returns a function that observes the seconds since this call under `labels` and its own, and returns them. */
  startTimer(labels?: Partial<Record<L, string>>): (end?: Partial<Record<L, string>>) => number {
    const t0 = performance.now()
    return (end) => {
      const seconds = (performance.now() - t0) / 1000
      this.observe({ ...labels, ...end }, seconds)
      return seconds
    }
  }

  reset(): void {
    for (const s of this.exported) s.clear()
    this.exported.length = 0
  }

  /** What prom-client's Histogram.get() returns: each sample's labels are `le` and the series' labels. */
  async get(): Promise<HistogramSnapshot> {
    return this.snapshot(true)
  }

  /** What the registry prints from: the series' labels apart, the same object each scrape (it caches their text). */
  async getForPromString(): Promise<HistogramSnapshot> {
    return this.snapshot(false)
  }

  private snapshot(splay: boolean): HistogramSnapshot {
    const values: HistogramSample[] = []
    const bucket = `${this.name}_bucket`
    const sample = (le: Record<string, string | number>, value: number, metricName: string, exemplar: null | undefined, shared: LabelSet): HistogramSample =>
      splay ? { value, metricName, exemplar, labels: Object.assign(le, shared) } : { labels: le, sharedLabels: shared, value, metricName, exemplar }
    for (const s of this.exported) {
      let acc = 0
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i] as number
        values.push(sample({ le: this.bounds[i] as number }, acc, bucket, null, s.labels))
      }
      const count = acc + (s.counts[this.bounds.length] as number)
      values.push(
        sample({ le: '+Inf' }, count, bucket, null, s.labels),
        sample({}, s.sum, `${this.name}_sum`, undefined, s.labels),
        sample({}, count, `${this.name}_count`, undefined, s.labels),
      )
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  /** The series of a label object: prom-client's check of the names, then missing labels left out. */
  private resolve(labels: Partial<Record<L, string>>): Series {
    for (const name in labels) {
      if (!this.labelNames.includes(name)) {
        throw new Error(`Added label "${name}" is not included in initial labelset: ${inspect(this.labelNames)}`)
      }
    }
    return this.lookup(this.labelNames.map((n) => labels[n]))
  }

  /** The series of these values (undefined: the label left out), made at the first lookup. A Map per
   *  label rather than one keyed by the values joined: no string is built, and no value can collide. */
  private lookup(values: readonly (string | undefined)[]): Series {
    let level = this.byValues
    const last = values.length - 1
    for (let i = 0; i < last; i++) {
      const v = values[i]
      let next = level.get(v) as Level | undefined
      if (next === undefined) level.set(v, (next = new Map()))
      level = next
    }
    // With no labels (last = -1) the one series sits under undefined in the first level.
    const v = values[last]
    let s = level.get(v) as Series | undefined
    if (s === undefined) {
      const ordered: Record<string, string> = {}
      values.forEach((value, i) => {
        if (value !== undefined) ordered[this.labelNames[i] as string] = value
      })
      s = new Series(this.bounds, this.exported, ordered)
      level.set(v, s)
    }
    return s
  }
}
