// The agent's span recorder (ARCHITECTURE §13): spans behind @opentelemetry/api's Tracer and Span
// interfaces, recorded as plain fields and handed, as they end, to the sink: the queue that waits for the
// agent to be idle (./idle-queue.ts) before the OTLP exporter (./otlp.ts) encodes them into protobuf. Sampling is the SDK's (@opentelemetry/sdk-trace-base's samplers, from
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG), asked for every span without a local parent unless it
// samples all of those (always_on, parentbased_always_on: the answer is known). Ids are random hex from
// Math.random, as the SDK's RandomIdGenerator makes them, without its round trip through a Buffer.
//
// Why not the SDK's own spans: with them a traced Request and its Close cost the agent ~1 ms more CPU (15
// spans: attribute copies and limits, hrtime arithmetic, span processor and exporter objects, a worker thread
// to serialize them), about 16 % of what the Request costs without tracing; BENCHMARKS.md "Observability
// overhead" has the numbers before and after. What the SDK's spans offer beyond these — span limits, several
// span processors, resource detectors — the agent does not use.
//
// A span's children sample as it did (the parent-based rule the default sampler and every sampler the
// variables can name give a local parent); only a span without a local parent asks the sampler. A span the
// sampler drops is a non-recording span that still carries its trace context to the calls it makes.
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Attributes, type AttributeValue, type Context, type Exception, type Link, type Span, type SpanAttributes, type SpanContext, type SpanOptions, type SpanStatus, type TimeInput, type Tracer } from '@opentelemetry/api'
import { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, SamplingDecision, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-base'
import { performance } from 'node:perf_hooks'
import type { FinishedSpan } from './otlp.js'

/** Where finished spans go (the idle queue before the OTLP exporter). */
export interface SpanSink {
  add(span: RecordedSpan): void
}

/** Epoch milliseconds of performance.now()'s zero, read once (the getter is not free). */
export const ORIGIN_MS = performance.timeOrigin

/** Epoch milliseconds now, fractional (the monotonic clock anchored at the process's start). */
const nowMs = (): number => ORIGIN_MS + performance.now()

function timeMs(t: TimeInput | undefined): number {
  if (t === undefined) return nowMs()
  if (typeof t === 'number') return t < ORIGIN_MS / 2 ? ORIGIN_MS + t : t // a performance.now() reading, else epoch ms
  if (t instanceof Date) return t.getTime()
  return t[0] * 1000 + t[1] / 1e6
}

/** Samplers that sample every span without a parent (the recorder need not ask them): samplerFromEnv's. */
const SAMPLES_EVERY_ROOT = new WeakSet<Sampler>()

/** The sampler OTEL_TRACES_SAMPLER (and OTEL_TRACES_SAMPLER_ARG) name; a bad value is an error naming the variable. */
export function samplerFromEnv(env: NodeJS.ProcessEnv): Sampler {
  const name = env.OTEL_TRACES_SAMPLER?.trim() || 'parentbased_always_on'
  const ratio = (): number => {
    const raw = env.OTEL_TRACES_SAMPLER_ARG?.trim() ?? ''
    const r = raw === '' ? 1 : Number(raw)
    if (!Number.isFinite(r) || r < 0 || r > 1) throw new Error(`OTEL_TRACES_SAMPLER_ARG: ${JSON.stringify(raw)} is not a ratio between 0 and 1`)
    return r
  }
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler()
    case 'always_off':
      return new AlwaysOffSampler()
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio())
    case 'parentbased_always_on': {
      const sampler = new ParentBasedSampler({ root: new AlwaysOnSampler() })
      SAMPLES_EVERY_ROOT.add(sampler)
      return sampler
    }
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) })
    default:
      throw new Error(`OTEL_TRACES_SAMPLER: ${JSON.stringify(name)} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio`)
  }
}

type SpanEvent = { name: string; timeMs: number; attributes?: Attributes }
type SpanLink = { traceId: string; spanId: string; traceState?: string; flags: number; attributes?: Attributes }
/** What a span has until it records an event, a link or a status: shared, never written. */
const NO_EVENTS: readonly SpanEvent[] = Object.freeze([])
const NO_LINKS: readonly SpanLink[] = Object.freeze([])
const UNSET: { readonly code: number } = Object.freeze({ code: SpanStatusCode.UNSET })

/** Two lowercase hex digits per byte value. */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

/** 8 hex digits, 32 random bits. */
function hex32(): string {
  const r = (Math.random() * 0x100000000) >>> 0
  return (HEX[r >>> 24] as string) + (HEX[(r >>> 16) & 255] as string) + (HEX[(r >>> 8) & 255] as string) + (HEX[r & 255] as string)
}

/** Random W3C ids (never all zero, which is invalid: the last byte becomes 01). */
export const randomIds = {
  generateTraceId(): string {
    const id = hex32() + hex32() + hex32() + hex32()
    return id === '00000000000000000000000000000000' ? `${id.slice(0, 30)}01` : id
  },
  generateSpanId(): string {
    const id = hex32() + hex32()
    return id === '0000000000000000' ? '0000000000000001' : id
  },
}

/**
 * Where a span's ids come from: made when first read (most are first read by the exporter, after the call; a
 * root's trace id too, which its children read from it).
 */
export interface SpanIds {
  generateTraceId(): string
  generateSpanId(): string
}

/**
 * A recording span: what the exporter reads (FinishedSpan) plus the api's Span methods. Starting one is kept to
 * a few field writes, since spans start inside the calls they time: its span id, and a root's trace id, are
 * made when first read (by a child's export, the exporter, or `spanContext()` for a call to another process), a
 * child's trace id is read from its parent, its events, links and status are shared empty values until set.
 */
export class RecordedSpan implements Span, FinishedSpan {
  endMs = 0
  status: { code: number; message?: string } = UNSET
  events: readonly SpanEvent[] = NO_EVENTS
  links: readonly SpanLink[] = NO_LINKS
  private ended = false
  private id: string | undefined
  private context: SpanContext | undefined

  constructor(
    private readonly sink: SpanSink,
    private readonly ids: SpanIds,
    /** Undefined: its local parent's, or for a root one made when first read. */
    private tid: string | undefined,
    readonly flags: number,
    /** The W3C tracestate this span carries (its parent's, or the sampler's). */
    private readonly state: SpanContext['traceState'],
    /** A span of this agent, or a remote parent's span id; undefined for a root. */
    private readonly parent: RecordedSpan | string | undefined,
    readonly parentIsRemote: boolean,
    public name: string,
    readonly kind: SpanKind,
    readonly startMs: number,
    public attributes: Attributes,
    /** False while `attributes` is the caller's object (element spans share theirs): copied on first change. */
    private ownAttributes = false,
  ) {}

  get spanId(): string {
    return (this.id ??= this.ids.generateSpanId())
  }

  get traceId(): string {
    if (this.tid !== undefined) return this.tid
    const p = this.parent
    return (this.tid = p instanceof RecordedSpan ? p.traceId : this.ids.generateTraceId())
  }

  get parentSpanId(): string | undefined {
    const p = this.parent
    return p === undefined || typeof p === 'string' ? p : p.spanId
  }

  get traceState(): string | undefined {
    return this.state?.serialize() || undefined
  }

  /** The trace context its children carry: ids, flags and tracestate. */
  get traceStateObject(): SpanContext['traceState'] {
    return this.state
  }

  spanContext(): SpanContext {
    return (this.context ??= { traceId: this.traceId, spanId: this.spanId, traceFlags: this.flags, ...(this.state === undefined ? {} : { traceState: this.state }) })
  }

  setAttribute(key: string, value: AttributeValue): this {
    if (this.ended) return this
    if (!this.ownAttributes) {
      this.attributes = { ...this.attributes }
      this.ownAttributes = true
    }
    this.attributes[key] = value
    return this
  }

  setAttributes(attributes: SpanAttributes): this {
    for (const [k, v] of Object.entries(attributes)) if (v !== undefined) this.setAttribute(k, v)
    return this
  }

  addEvent(name: string, attributesOrTime?: SpanAttributes | TimeInput, time?: TimeInput): this {
    if (this.ended) return this
    const isTime = typeof attributesOrTime === 'number' || attributesOrTime instanceof Date || Array.isArray(attributesOrTime)
    const attributes = isTime || attributesOrTime === undefined ? undefined : (attributesOrTime as Attributes)
    const event = { name, timeMs: timeMs(isTime ? (attributesOrTime as TimeInput) : time), ...(attributes === undefined ? {} : { attributes }) }
    if (this.events === NO_EVENTS) this.events = [event]
    else (this.events as SpanEvent[]).push(event)
    return this
  }

  addLink(link: Link): this {
    if (this.ended) return this
    const c = link.context
    const traceState = c.traceState?.serialize()
    const l = { traceId: c.traceId, spanId: c.spanId, flags: c.traceFlags, ...(traceState ? { traceState } : {}), ...(link.attributes === undefined ? {} : { attributes: link.attributes }) }
    if (this.links === NO_LINKS) this.links = [l]
    else (this.links as SpanLink[]).push(l)
    return this
  }

  addLinks(links: Link[]): this {
    for (const l of links) this.addLink(l)
    return this
  }

  /** As the SDK: OK is final; a message only goes with ERROR. */
  setStatus(status: SpanStatus): this {
    if (this.ended || this.status.code === SpanStatusCode.OK) return this
    this.status = status.code === SpanStatusCode.ERROR && status.message !== undefined ? { code: status.code, message: status.message } : { code: status.code }
    return this
  }

  updateName(name: string): this {
    if (!this.ended) this.name = name
    return this
  }

  end(endTime?: TimeInput): void {
    if (this.ended) return
    this.ended = true
    this.endMs = Math.max(this.startMs, timeMs(endTime))
    this.sink.add(this)
  }

  isRecording(): boolean {
    return !this.ended
  }

  /** The semantic conventions' `exception` event. */
  recordException(exception: Exception, time?: TimeInput): void {
    const attributes: Attributes = {}
    if (typeof exception === 'string') attributes['exception.message'] = exception
    else {
      if (exception.name !== undefined) attributes['exception.type'] = exception.name
      else if (exception.code !== undefined) attributes['exception.type'] = String(exception.code)
      if (exception.message !== undefined) attributes['exception.message'] = exception.message
      if (exception.stack !== undefined) attributes['exception.stacktrace'] = exception.stack
    }
    this.addEvent('exception', attributes, time)
  }
}

/** The parent of a span being started: a span of this agent, or a context from another process. */
export type Parent = { local: Span } | { remote: SpanContext } | undefined

export class SpanRecorder implements Tracer {
  private readonly ids = randomIds
  private readonly everyRoot: boolean

  constructor(
    private readonly sink: SpanSink,
    private readonly sampler: Sampler,
  ) {
    this.everyRoot = sampler instanceof AlwaysOnSampler || SAMPLES_EVERY_ROOT.has(sampler)
  }

  /**
   * Starts a span at `startMs` (epoch milliseconds, default now). `attributes` is kept as it is, and copied
   * before the span changes it (callers pass the same object for many spans) unless `owned`: made for this span.
   */
  start(name: string, kind: SpanKind, attributes: Attributes, parent: Parent, startMs = nowMs(), owned = false): Span {
    if (parent !== undefined && 'local' in parent) {
      // A local parent's decision holds for its children; a non-recording parent's children are the parent.
      const p = parent.local
      if (!(p instanceof RecordedSpan)) return p
      return new RecordedSpan(this.sink, this.ids, undefined, p.flags, p.traceStateObject, p, false, name, kind, startMs, attributes, owned)
    }
    // A root the sampler need not see: its trace id is made when first read (by the exporter, once the agent is idle).
    if (parent === undefined && this.everyRoot) return new RecordedSpan(this.sink, this.ids, undefined, TraceFlags.SAMPLED, undefined, undefined, false, name, kind, startMs, attributes, owned)
    const remote = parent?.remote
    const valid = remote !== undefined && trace.isSpanContextValid(remote)
    const traceId = valid ? remote.traceId : this.ids.generateTraceId()
    const sampled = this.sampler.shouldSample(valid ? trace.setSpanContext(ROOT_CONTEXT, remote) : ROOT_CONTEXT, traceId, name, kind, attributes, [])
    const traceState = sampled.traceState ?? (valid ? remote.traceState : undefined)
    // RECORD without SAMPLED: recorded for no one (nothing but the exporter reads spans here), so not at all.
    if (sampled.decision !== SamplingDecision.RECORD_AND_SAMPLED) {
      return trace.wrapSpanContext({ traceId, spanId: this.ids.generateSpanId(), traceFlags: TraceFlags.NONE, ...(traceState === undefined ? {} : { traceState }) })
    }
    const attrs = sampled.attributes === undefined ? attributes : { ...attributes, ...sampled.attributes }
    return new RecordedSpan(this.sink, this.ids, traceId, TraceFlags.SAMPLED, traceState, valid ? remote.spanId : undefined, valid ? remote.isRemote === true : false, name, kind, startMs, attrs, owned || attrs !== attributes)
  }

  // The api's Tracer (for code that goes through @opentelemetry/api's global tracer provider).
  startSpan(name: string, options: SpanOptions = {}, context: Context = ROOT_CONTEXT): Span {
    const parentSpan = options.root === true ? undefined : trace.getSpan(context)
    const pc = parentSpan?.spanContext()
    const parent: Parent = parentSpan === undefined || pc === undefined ? undefined : pc.isRemote === true ? { remote: pc } : { local: parentSpan }
    const span = this.start(name, options.kind ?? SpanKind.INTERNAL, { ...options.attributes }, parent)
    if (options.links !== undefined && span instanceof RecordedSpan) span.addLinks(options.links)
    return span
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...args: unknown[]): ReturnType<F> {
    const fn = args[args.length - 1] as F
    const options = (args.length > 1 ? args[0] : {}) as SpanOptions
    const context = (args.length > 2 ? args[1] : ROOT_CONTEXT) as Context
    // No context manager is registered (./index.ts): the span is handed to `fn`, not made active.
    return fn(this.startSpan(name, options, context)) as ReturnType<F>
  }
}
