// agent/tracing/span.ts, the agent's span recorder, in-process with a sink that collects what ends (no
// exporter, no network): the samplers OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG name and their bad
// values, the ids and parents a span gets (root, local child, remote parent, invalid remote context), what a
// sampler that drops gives (a non-recording span that is its own children, nothing sent), what a recorded span
// keeps (attributes copied on first change, events and their times, the `exception` event, status rules,
// links) and that it is sent once and frozen at end(), and the @opentelemetry/api Tracer facade.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { createTraceState, ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Attributes, type Context, type Span, type SpanContext, type Tracer } from '@opentelemetry/api'
import { SamplingDecision, type Sampler } from '@opentelemetry/sdk-trace-base'
import { randomIds, RecordedSpan, samplerFromEnv, SpanRecorder, type SpanSink } from '../../agent/tracing/span.js'
import type { FinishedSpan } from '../../agent/tracing/otlp.js'

const HEX32 = /^[0-9a-f]{32}$/
const HEX16 = /^[0-9a-f]{16}$/

class CollectingSink implements SpanSink {
  readonly spans: FinishedSpan[] = []
  add(span: FinishedSpan): void {
    this.spans.push(span)
  }
}

function recorderWith(env: NodeJS.ProcessEnv = {}): { recorder: SpanRecorder; sink: CollectingSink } {
  const sink = new CollectingSink()
  return { recorder: new SpanRecorder(sink, samplerFromEnv(env)), sink }
}

const hex = (bytes: number): string => randomBytes(bytes).toString('hex')

/** A valid context from another process (what a `traceparent` header gives). */
function remoteContext(sampled: boolean, traceState?: string): SpanContext {
  return {
    traceId: hex(16),
    spanId: hex(8),
    traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
    ...(traceState === undefined ? {} : { traceState: createTraceState(traceState) }),
  }
}

const withRemote = (sc: SpanContext): Context => trace.setSpanContext(ROOT_CONTEXT, sc)

function decide(sampler: Sampler, context: Context, traceId = hex(16)): SamplingDecision {
  return sampler.shouldSample(context, traceId, 'probe', SpanKind.INTERNAL, {}, []).decision
}

/** A recorded span (fails the test when the recorder did not record). */
function recorded(t: Test, span: Span): RecordedSpan {
  t.type(span, RecordedSpan, 'the span is recorded')
  if (!(span instanceof RecordedSpan)) throw new Error('expected a RecordedSpan')
  return span
}

t.test('samplerFromEnv: each name gives the sampler it names', async (t) => {
  const { RECORD_AND_SAMPLED: SAMPLED, NOT_RECORD: DROPPED } = SamplingDecision
  // What each sampler decides for a root, under a remote sampled parent and under a remote not-sampled parent.
  const cases: Array<{ env: NodeJS.ProcessEnv; name: string; root: SamplingDecision; sampledParent: SamplingDecision; droppedParent: SamplingDecision }> = [
    { name: 'always_on', env: { OTEL_TRACES_SAMPLER: 'always_on' }, root: SAMPLED, sampledParent: SAMPLED, droppedParent: SAMPLED },
    { name: 'always_off', env: { OTEL_TRACES_SAMPLER: 'always_off' }, root: DROPPED, sampledParent: DROPPED, droppedParent: DROPPED },
    { name: 'traceidratio 1', env: { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }, root: SAMPLED, sampledParent: SAMPLED, droppedParent: SAMPLED },
    { name: 'traceidratio 0', env: { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, root: DROPPED, sampledParent: DROPPED, droppedParent: DROPPED },
    { name: 'parentbased_always_on', env: { OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, root: SAMPLED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'parentbased_always_off', env: { OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, root: DROPPED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'parentbased_traceidratio 1', env: { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }, root: SAMPLED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'parentbased_traceidratio 0', env: { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, root: DROPPED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'default (unset)', env: {}, root: SAMPLED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'default (empty)', env: { OTEL_TRACES_SAMPLER: '' }, root: SAMPLED, sampledParent: SAMPLED, droppedParent: DROPPED },
    { name: 'name with blanks around it', env: { OTEL_TRACES_SAMPLER: ' always_off ' }, root: DROPPED, sampledParent: DROPPED, droppedParent: DROPPED },
  ]
  // Eight trace ids each: a ratio sampler decides by the trace id.
  const eight = <T>(f: () => T): T[] => Array.from({ length: 8 }, f)
  for (const c of cases) {
    const sampler = samplerFromEnv(c.env)
    const under = (sampled: boolean) => (): SamplingDecision => {
      const remote = remoteContext(sampled)
      return decide(sampler, withRemote(remote), remote.traceId)
    }
    t.strictSame(eight(() => decide(sampler, ROOT_CONTEXT)), eight(() => c.root), `${c.name}: root`)
    t.strictSame(eight(under(true)), eight(() => c.sampledParent), `${c.name}: remote sampled parent`)
    t.strictSame(eight(under(false)), eight(() => c.droppedParent), `${c.name}: remote not-sampled parent`)
  }
})

t.test('samplerFromEnv: traceidratio samples by the ratio ARG gives, all of them without an ARG', async (t) => {
  const none = samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' })
  const all = samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' })
  const noArg = samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio' })
  const emptyArg = samplerFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '' })
  const ids = Array.from({ length: 500 }, () => hex(16))
  const sampledBy = (s: Sampler): number => ids.filter((id) => decide(s, ROOT_CONTEXT, id) === SamplingDecision.RECORD_AND_SAMPLED).length
  t.equal(sampledBy(none), 0, 'ARG 0: no trace of 500 sampled')
  t.equal(sampledBy(all), ids.length, 'ARG 1: every trace sampled')
  t.equal(sampledBy(noArg), ids.length, 'no ARG: ratio 1')
  t.equal(sampledBy(emptyArg), ids.length, 'empty ARG: ratio 1')
  // A ratio in between is used as given: the SDK's sampler keeps a trace id whose 32-bit words XOR to less
  // than ratio × 2^32, so these two ids fall on either side of one half.
  const half = samplerFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: ' 0.5 ' })
  t.equal(decide(half, ROOT_CONTEXT, `00000001${'0'.repeat(24)}`), SamplingDecision.RECORD_AND_SAMPLED, 'ARG 0.5: a low trace id is sampled')
  t.equal(decide(half, ROOT_CONTEXT, `ffffffff${'0'.repeat(23)}1`), SamplingDecision.NOT_RECORD, 'ARG 0.5: a high trace id is not')
  // Only the ratio samplers read the ARG.
  t.doesNotThrow(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: 'always_on', OTEL_TRACES_SAMPLER_ARG: 'abc' }), 'always_on ignores the ARG')
})

t.test('samplerFromEnv: a bad name or ARG is an Error naming the variable', async (t) => {
  for (const name of ['sometimes', 'AlwaysOn', 'parentbased', 'jaeger_remote']) {
    t.throws(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: name }), { name: 'Error', message: new RegExp(`^OTEL_TRACES_SAMPLER: "${name}" is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio$`) }, `name ${name}`)
  }
  for (const sampler of ['traceidratio', 'parentbased_traceidratio']) {
    for (const arg of ['abc', '-0.1', '1.5', 'NaN', 'Infinity']) {
      const expected = new RegExp(`^OTEL_TRACES_SAMPLER_ARG: "${arg.replace('.', '\\.')}" is not a ratio between 0 and 1$`)
      t.throws(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: sampler, OTEL_TRACES_SAMPLER_ARG: arg }), { name: 'Error', message: expected }, `${sampler} with ARG ${arg}`)
    }
  }
})

t.test('SpanRecorder.start: a root gets a fresh trace id and span id, and no parent', async (t) => {
  const { recorder } = recorderWith({ OTEL_TRACES_SAMPLER: 'always_on' })
  const a = recorded(t, recorder.start('CNI ADD', SpanKind.SERVER, {}, undefined))
  const b = recorded(t, recorder.start('CNI ADD', SpanKind.SERVER, {}, undefined))
  t.match(a.traceId, HEX32, '32 hex trace id')
  t.match(a.spanId, HEX16, '16 hex span id')
  t.ok(trace.isSpanContextValid(a.spanContext()), 'a valid span context (no all-zero ids)')
  t.equal(a.spanContext().traceId, a.traceId, 'spanContext() carries the same ids')
  t.equal(a.spanContext().spanId, a.spanId)
  t.not(a.traceId, b.traceId, 'each root starts its own trace')
  t.not(a.spanId, b.spanId)
  t.equal(a.parentSpanId, undefined, 'no parent')
  t.equal(a.parentIsRemote, false, 'parentIsRemote false')
  t.equal(a.flags, TraceFlags.SAMPLED, 'sampled')
  t.equal(a.traceState, undefined, 'no trace state')
  t.equal(a.name, 'CNI ADD')
  t.equal(a.kind, SpanKind.SERVER, 'the kind given')
  t.ok(a.isRecording(), 'recording')
  t.ok(Math.abs(a.startMs - Date.now()) < 60_000, 'startMs is epoch milliseconds')
})

t.test('SpanRecorder.start: a root is the same whether the sampler is asked or known to sample every root', async (t) => {
  // parentbased_always_on and always_on are not asked for a root (the answer is known); traceidratio 1 is.
  for (const env of [{}, { OTEL_TRACES_SAMPLER: 'always_on' }, { OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }]) {
    const { recorder } = recorderWith(env)
    const attributes = { 'nsm.service': 'web' }
    const a = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, attributes, undefined, 1234.5))
    const what = JSON.stringify(env)
    t.match(a.traceId, HEX32, `${what}: a trace id`)
    t.equal(a.flags, TraceFlags.SAMPLED, `${what}: sampled`)
    t.equal(a.parentSpanId, undefined, `${what}: no parent`)
    t.equal(a.traceState, undefined, `${what}: no trace state`)
    t.equal(a.startMs, 1234.5, `${what}: the start given`)
    t.equal(a.attributes, attributes, `${what}: the attributes given`)
  }
  const { recorder } = recorderWith({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' })
  t.notOk(recorder.start('root', SpanKind.SERVER, {}, undefined).isRecording(), 'parentbased_always_off is asked: the root is dropped')
})

t.test('randomIds: lowercase hex of the W3C lengths, all different', async (t) => {
  const traces = new Set<string>()
  const spans = new Set<string>()
  for (let i = 0; i < 10_000; i++) {
    const tr = randomIds.generateTraceId()
    const sp = randomIds.generateSpanId()
    if (!HEX32.test(tr) || !HEX16.test(sp)) t.fail(`not hex of the length: ${tr} ${sp}`)
    traces.add(tr)
    spans.add(sp)
  }
  t.equal(traces.size, 10_000, 'no trace id twice')
  t.equal(spans.size, 10_000, 'no span id twice')
  // Each hex digit position takes many values (no constant or stuck digit from the byte table).
  for (let pos = 0; pos < 32; pos++) {
    const seen = new Set([...traces].map((id) => id[pos]))
    if (seen.size < 16) t.fail(`trace id digit ${pos} took only ${seen.size} values`)
  }
})

t.test('SpanRecorder.start: a local child shares the trace, its parent is the local span', async (t) => {
  const { recorder } = recorderWith({ OTEL_TRACES_SAMPLER: 'always_on' })
  const parent = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, {}, undefined))
  const child = recorded(t, recorder.start('ipam request', SpanKind.INTERNAL, {}, { local: parent }))
  const grandchild = recorded(t, recorder.start('kernel request', SpanKind.INTERNAL, {}, { local: child }))
  t.equal(child.traceId, parent.traceId, 'same trace')
  t.equal(child.parentSpanId, parent.spanId, 'parent span id')
  t.equal(child.parentIsRemote, false, 'parent is local')
  t.match(child.spanId, HEX16)
  t.not(child.spanId, parent.spanId, 'its own span id')
  t.equal(child.flags, parent.flags, "the parent's flags")
  t.equal(grandchild.traceId, parent.traceId, 'a grandchild: same trace')
  t.equal(grandchild.parentSpanId, child.spanId, 'nested one more level')
})

t.test('SpanRecorder.start: a remote parent gives its trace id, span id and trace state', async (t) => {
  const { recorder } = recorderWith()
  const remote = remoteContext(true, 'vendor=abc,other=1')
  const span = recorded(t, recorder.start('CNI ADD', SpanKind.SERVER, {}, { remote }))
  t.equal(span.traceId, remote.traceId, "the remote parent's trace")
  t.equal(span.parentSpanId, remote.spanId, 'parent span id from the remote context')
  t.equal(span.parentIsRemote, true, 'parent is remote')
  t.not(span.spanId, remote.spanId, 'its own span id')
  t.equal(span.flags, TraceFlags.SAMPLED)
  t.equal(span.traceState, 'vendor=abc,other=1', 'trace state kept (serialized for the exporter)')
  t.equal(span.spanContext().traceState?.get('vendor'), 'abc', 'and in its span context, for the calls it makes')
  // A local child of it inherits the trace state too.
  const child = recorded(t, recorder.start('select', SpanKind.INTERNAL, {}, { local: span }))
  t.equal(child.traceState, 'vendor=abc,other=1', "a local child keeps the trace's state")
  t.equal(child.parentIsRemote, false)

  // A valid context without isRemote (not from another process) is a parent, not a remote one.
  const notMarked: SpanContext = { traceId: hex(16), spanId: hex(8), traceFlags: TraceFlags.SAMPLED }
  const s2 = recorded(t, recorder.start('x', SpanKind.INTERNAL, {}, { remote: notMarked }))
  t.equal(s2.parentSpanId, notMarked.spanId, 'a valid context without isRemote: its span is the parent')
  t.equal(s2.parentIsRemote, false, 'isRemote unset: parentIsRemote false')
})

t.test('SpanRecorder.start: an invalid remote context starts a new trace', async (t) => {
  const { recorder } = recorderWith()
  const invalid: SpanContext[] = [
    { traceId: '0'.repeat(32), spanId: hex(8), traceFlags: TraceFlags.SAMPLED, isRemote: true },
    { traceId: hex(16), spanId: '0'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: true },
    { traceId: 'not a trace id', spanId: hex(8), traceFlags: TraceFlags.SAMPLED, isRemote: true },
  ]
  for (const remote of invalid) {
    const span = recorded(t, recorder.start('CNI ADD', SpanKind.SERVER, {}, { remote }))
    t.match(span.traceId, HEX32, 'a fresh trace id')
    t.not(span.traceId, remote.traceId)
    t.not(span.traceId, '0'.repeat(32))
    t.equal(span.parentSpanId, undefined, 'no parent')
    t.equal(span.parentIsRemote, false, 'parentIsRemote false')
  }
})

t.test('SpanRecorder.start: a dropped span is non-recording, sends nothing, and is its own children', async (t) => {
  const { recorder, sink } = recorderWith({ OTEL_TRACES_SAMPLER: 'always_off' })
  const root = recorder.start('CNI ADD', SpanKind.SERVER, { a: 1 }, undefined)
  t.equal(root.isRecording(), false, 'not recording')
  t.notOk(root instanceof RecordedSpan, 'not a RecordedSpan')
  t.ok(trace.isSpanContextValid(root.spanContext()), 'still carries a valid trace context for the calls it makes')
  t.equal(root.spanContext().traceFlags & TraceFlags.SAMPLED, 0, 'not sampled')
  const child = recorder.start('ipam request', SpanKind.INTERNAL, {}, { local: root })
  t.equal(child, root, 'a child of a non-recording span is that span')
  root.setAttribute('b', 2).addEvent('e').setStatus({ code: SpanStatusCode.ERROR, message: 'x' })
  child.end()
  root.end()
  t.equal(sink.spans.length, 0, 'end() sends nothing')

  // The default sampler follows a remote parent that was not sampled.
  const followed = recorderWith()
  const remote = remoteContext(false)
  const span = followed.recorder.start('CNI ADD', SpanKind.SERVER, {}, { remote })
  t.equal(span.isRecording(), false, 'parentbased_always_on under a not-sampled remote parent: not recording')
  t.notOk(span instanceof RecordedSpan)
  t.equal(span.spanContext().traceId, remote.traceId, "the remote parent's trace goes on")
  t.equal(followed.recorder.start('select', SpanKind.INTERNAL, {}, { local: span }), span, 'its child is itself')
  span.end()
  t.equal(followed.sink.spans.length, 0, 'nothing recorded')
})

t.test('RecordedSpan: attributes are the caller\'s object until a span changes them', async (t) => {
  const { recorder } = recorderWith()
  const shared: Attributes = { 'nsm.service': 'web', 'nsm.connection': 'c1' }
  const a = recorded(t, recorder.start('ipam request', SpanKind.INTERNAL, shared, undefined))
  const b = recorded(t, recorder.start('ipam request', SpanKind.INTERNAL, shared, undefined))
  t.equal(a.attributes, shared, 'not copied at start')
  a.setAttribute('nsm.endpoint', 'nse-1')
  a.setAttribute('nsm.service', 'db')
  t.strictSame(a.attributes, { 'nsm.service': 'db', 'nsm.connection': 'c1', 'nsm.endpoint': 'nse-1' }, 'the span that changed has its change')
  t.strictSame(shared, { 'nsm.service': 'web', 'nsm.connection': 'c1' }, "the caller's object is unchanged")
  t.strictSame(b.attributes, { 'nsm.service': 'web', 'nsm.connection': 'c1' }, 'the other span is unchanged')
  t.equal(b.attributes, shared, 'the other span still shares it')

  b.setAttributes({ 'nsm.mechanism': 'KERNEL', skipped: undefined, n: 3, list: ['a', 'b'] })
  t.strictSame(b.attributes, { 'nsm.service': 'web', 'nsm.connection': 'c1', 'nsm.mechanism': 'KERNEL', n: 3, list: ['a', 'b'] }, 'setAttributes adds all but undefined values')
  t.notOk('skipped' in b.attributes, 'an undefined value is skipped, not stored')
  t.strictSame(shared, { 'nsm.service': 'web', 'nsm.connection': 'c1' }, "the caller's object is still unchanged")
})

t.test('RecordedSpan: attributes started as owned are changed in place', async (t) => {
  const { recorder } = recorderWith()
  const mine: Attributes = { 'nsm.service': 'web' }
  const a = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, mine, undefined, undefined, true))
  a.setAttribute('nsm.endpoint', 'nse-1')
  t.equal(a.attributes, mine, 'not copied')
  t.strictSame(mine, { 'nsm.service': 'web', 'nsm.endpoint': 'nse-1' }, 'the change is in the object given')
})

t.test('RecordedSpan: events with attributes and times', async (t) => {
  const { recorder } = recorderWith()
  const span = recorded(t, recorder.start('heal', SpanKind.INTERNAL, {}, undefined))
  const date = new Date(1_700_000_000_123)
  const epochMs = 1_700_000_001_000.5
  const hr: [number, number] = [1_700_000_002, 250_000_000]
  const perfReading = performance.now()
  span.addEvent('plain')
  span.addEvent('with attributes', { 'nsm.endpoint': 'nse-1', tries: 2 })
  span.addEvent('at a Date', date)
  span.addEvent('at epoch ms', epochMs)
  span.addEvent('at an HrTime', hr)
  span.addEvent('at a performance.now() reading', perfReading)
  span.addEvent('with both', { why: 'timeout' }, date)
  t.equal(span.events.length, 7)
  const [plain, withAttrs, atDate, atEpoch, atHr, atPerf, both] = span.events
  t.equal(plain?.name, 'plain')
  t.notOk(plain !== undefined && 'attributes' in plain, 'no attributes when none were given')
  t.ok(plain !== undefined && plain.timeMs >= span.startMs, 'no time: now (not before the span started)')
  t.strictSame(withAttrs?.attributes, { 'nsm.endpoint': 'nse-1', tries: 2 }, 'attributes kept')
  t.equal(atDate?.timeMs, 1_700_000_000_123, 'a Date')
  t.notOk(atDate !== undefined && 'attributes' in atDate, 'a time is not taken for attributes')
  t.equal(atEpoch?.timeMs, epochMs, 'epoch milliseconds')
  t.equal(atHr?.timeMs, 1_700_000_002_250, 'an HrTime [seconds, nanoseconds]')
  t.equal(atPerf?.timeMs, performance.timeOrigin + perfReading, 'a performance.now() reading is anchored at the time origin')
  t.strictSame(both, { name: 'with both', timeMs: 1_700_000_000_123, attributes: { why: 'timeout' } }, 'attributes and a time')
})

t.test('RecordedSpan: recordException adds the `exception` event', async (t) => {
  const { recorder } = recorderWith()
  const span = recorded(t, recorder.start('CNI ADD', SpanKind.SERVER, {}, undefined))
  const err = new TypeError('no such netns')
  span.recordException(err)
  span.recordException('plain words')
  span.recordException({ code: 'ECONNREFUSED', message: 'connect refused' }, new Date(1_700_000_000_000))
  const [fromError, fromString, fromCode] = span.events
  t.equal(fromError?.name, 'exception')
  t.strictSame(fromError?.attributes, { 'exception.type': 'TypeError', 'exception.message': 'no such netns', 'exception.stacktrace': err.stack }, 'type, message and stack trace of an Error')
  t.equal(fromString?.name, 'exception')
  t.strictSame(fromString?.attributes, { 'exception.message': 'plain words' }, 'a string is the message')
  t.strictSame(fromCode?.attributes, { 'exception.type': 'ECONNREFUSED', 'exception.message': 'connect refused' }, 'without a name, the code is the type')
  t.equal(fromCode?.timeMs, 1_700_000_000_000, 'at the time given')
  t.strictSame(span.status, { code: SpanStatusCode.UNSET }, 'recording an exception does not set the status')
})

t.test('RecordedSpan: status rules', async (t) => {
  const { recorder } = recorderWith()
  const start = (): RecordedSpan => recorded(t, recorder.start('s', SpanKind.INTERNAL, {}, undefined))

  const failed = start()
  t.strictSame(failed.status, { code: SpanStatusCode.UNSET }, 'UNSET at start')
  failed.setStatus({ code: SpanStatusCode.ERROR, message: 'no endpoint for service web' })
  t.strictSame(failed.status, { code: SpanStatusCode.ERROR, message: 'no endpoint for service web' }, 'ERROR keeps its message')
  failed.setStatus({ code: SpanStatusCode.ERROR })
  t.strictSame(failed.status, { code: SpanStatusCode.ERROR }, 'a later ERROR replaces an ERROR')

  const ok = start()
  ok.setStatus({ code: SpanStatusCode.OK, message: 'fine' })
  t.strictSame(ok.status, { code: SpanStatusCode.OK }, 'OK drops a message')
  ok.setStatus({ code: SpanStatusCode.ERROR, message: 'late' })
  t.strictSame(ok.status, { code: SpanStatusCode.OK }, 'OK is final: a later ERROR does not replace it')
  ok.setStatus({ code: SpanStatusCode.UNSET })
  t.strictSame(ok.status, { code: SpanStatusCode.OK }, 'nor does UNSET')

  const unset = start()
  unset.setStatus({ code: SpanStatusCode.UNSET, message: 'ignored' })
  t.strictSame(unset.status, { code: SpanStatusCode.UNSET }, 'UNSET drops a message')

  const recovered = start()
  recovered.setStatus({ code: SpanStatusCode.ERROR, message: 'first try failed' })
  recovered.setStatus({ code: SpanStatusCode.OK })
  t.strictSame(recovered.status, { code: SpanStatusCode.OK }, 'OK replaces an ERROR')
})

t.test('RecordedSpan: updateName', async (t) => {
  const { recorder } = recorderWith()
  const span = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, {}, undefined))
  t.equal(span.updateName('NetworkService/Close'), span, 'chains')
  t.equal(span.name, 'NetworkService/Close')
})

t.test('RecordedSpan: end() sends the span once, and nothing changes after', async (t) => {
  const { recorder, sink } = recorderWith()
  const link = remoteContext(true)
  const span = recorded(t, recorder.start('CNI DEL', SpanKind.SERVER, { a: 1 }, undefined))
  span.addEvent('before end')
  span.setStatus({ code: SpanStatusCode.ERROR, message: 'boom' })
  t.equal(sink.spans.length, 0, 'nothing sent before end')
  span.end()
  t.equal(sink.spans.length, 1, 'sent at end')
  t.equal(sink.spans[0], span, 'the span itself is what the sink gets')
  t.ok(span.endMs >= span.startMs, 'endMs ≥ startMs')
  t.equal(span.isRecording(), false, 'not recording after end')
  const endMs = span.endMs
  span.end()
  t.equal(sink.spans.length, 1, 'a second end() sends nothing')
  t.equal(span.endMs, endMs, 'and keeps the first end time')

  const events = span.events.length
  span.setAttribute('late', true)
  span.setAttributes({ later: 1 })
  span.addEvent('after end')
  span.recordException(new Error('after end'))
  span.setStatus({ code: SpanStatusCode.OK })
  span.updateName('renamed')
  span.addLink({ context: link })
  span.addLinks([{ context: link }])
  t.strictSame(span.attributes, { a: 1 }, 'setAttribute(s) after end ignored')
  t.equal(span.events.length, events, 'addEvent and recordException after end ignored')
  t.strictSame(span.status, { code: SpanStatusCode.ERROR, message: 'boom' }, 'setStatus after end ignored')
  t.equal(span.name, 'CNI DEL', 'updateName after end ignored')
  t.equal(span.links.length, 0, 'addLink(s) after end ignored')

  const timed = recorded(t, recorder.start('timed', SpanKind.INTERNAL, {}, undefined))
  timed.end(timed.startMs + 250)
  t.equal(timed.endMs, timed.startMs + 250, 'endMs from an explicit end time')
  const early = recorded(t, recorder.start('early', SpanKind.INTERNAL, {}, undefined))
  early.end(new Date(early.startMs - 5_000))
  t.equal(early.endMs, early.startMs, 'an end time before the start is the start')
  t.equal(sink.spans.length, 3, 'each span sent once')
})

t.test('RecordedSpan: addLink and addLinks record the linked context', async (t) => {
  const { recorder } = recorderWith()
  const span = recorded(t, recorder.start('heal', SpanKind.INTERNAL, {}, undefined))
  const first = remoteContext(true, 'vendor=abc')
  const second = remoteContext(false)
  const third: SpanContext = { traceId: hex(16), spanId: hex(8), traceFlags: TraceFlags.SAMPLED }
  t.equal(span.addLink({ context: first, attributes: { 'nsm.connection': 'c1' } }), span, 'addLink chains')
  t.equal(span.addLinks([{ context: second }, { context: third, attributes: { why: 'retry' } }]), span, 'addLinks chains')
  t.strictSame(span.links, [
    { traceId: first.traceId, spanId: first.spanId, flags: TraceFlags.SAMPLED, traceState: 'vendor=abc', attributes: { 'nsm.connection': 'c1' } },
    { traceId: second.traceId, spanId: second.spanId, flags: TraceFlags.NONE },
    { traceId: third.traceId, spanId: third.spanId, flags: TraceFlags.SAMPLED, attributes: { why: 'retry' } },
  ])
})

t.test('the @opentelemetry/api Tracer facade', async (t) => {
  const { recorder } = recorderWith()
  const parent = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, {}, undefined))
  const linked = remoteContext(true)
  const attributes = { 'peer.service': 'nsm-agent' }
  const child = recorded(t, recorder.startSpan('forward', { kind: SpanKind.CLIENT, attributes, links: [{ context: linked }] }, trace.setSpan(ROOT_CONTEXT, parent)))
  t.equal(child.traceId, parent.traceId, 'startSpan in a context holding a span: its child')
  t.equal(child.parentSpanId, parent.spanId, 'parent span id of the span in the context')
  t.equal(child.parentIsRemote, false, 'a local parent')
  t.equal(child.kind, SpanKind.CLIENT, 'kind from the options')
  t.strictSame(child.attributes, { 'peer.service': 'nsm-agent' }, 'attributes from the options')
  child.setAttribute('x', 1)
  t.strictSame(attributes, { 'peer.service': 'nsm-agent' }, "the options' attributes are not changed by the span")
  t.strictSame(child.links, [{ traceId: linked.traceId, spanId: linked.spanId, flags: TraceFlags.SAMPLED }], 'links from the options')

  const root = recorded(t, recorder.startSpan('detached', { root: true }, trace.setSpan(ROOT_CONTEXT, parent)))
  t.not(root.traceId, parent.traceId, '{ root: true }: a new trace')
  t.equal(root.parentSpanId, undefined, '{ root: true }: no parent')

  const bare = recorded(t, recorder.startSpan('bare'))
  t.equal(bare.parentSpanId, undefined, 'no context: a root')
  t.equal(bare.kind, SpanKind.INTERNAL, 'default kind INTERNAL')

  const remote = remoteContext(true)
  const fromRemote = recorded(t, recorder.startSpan('from remote', {}, withRemote(remote)))
  t.equal(fromRemote.traceId, remote.traceId, 'a remote context in the context: its trace')
  t.equal(fromRemote.parentSpanId, remote.spanId, 'its span is the parent')
  t.equal(fromRemote.parentIsRemote, true, 'a remote parent')

  // Through the api's Tracer type, as code using the global tracer provider sees it.
  const tracer: Tracer = recorder
  let seen: Span | undefined
  const result = tracer.startActiveSpan('active', (span: Span) => {
    seen = span
    return 42
  })
  t.equal(result, 42, "startActiveSpan returns fn's result")
  t.type(seen, RecordedSpan, 'fn gets a recorded span')
  t.equal(seen instanceof RecordedSpan ? seen.name : undefined, 'active', 'named as asked')

  const nested = tracer.startActiveSpan('nested', { kind: SpanKind.PRODUCER }, trace.setSpan(ROOT_CONTEXT, parent), (span: Span) => span)
  const n = recorded(t, nested)
  t.equal(n.parentSpanId, parent.spanId, 'startActiveSpan with options and a context: a child of the span in it')
  t.equal(n.kind, SpanKind.PRODUCER, 'kind from the options')

  // A dropped parent reached through the facade: the parent itself, as with start().
  const off = recorderWith({ OTEL_TRACES_SAMPLER: 'always_off' }).recorder
  const dropped = off.startSpan('dropped')
  t.equal(off.startSpan('child', {}, trace.setSpan(ROOT_CONTEXT, dropped)), dropped, 'a child of a non-recording span is that span')
})
