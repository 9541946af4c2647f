// agent/tracing/span.ts, the agent's span recorder, in-process with a sink that collects what ends (no
// exporter, no network), how a span starts: the samplers OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
// name and their bad values, the ids and parents a span gets (root, local child, remote parent, invalid
// remote context), and what a sampler that drops gives (a non-recording span that is its own children,
// nothing sent). What a recorded span keeps is tracing-span.test.ts.
import t from 'tap'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Context, type SpanContext } from '@opentelemetry/api'
import { SamplingDecision, type Sampler } from '@opentelemetry/sdk-trace-base'
import { randomIds, RecordedSpan, samplerFromEnv } from '../../agent/tracing/span.js'
import { HEX16, HEX32, hex, recorded, recorderWith, remoteContext, withRemote } from '../lib/tracing-span'

function decide(sampler: Sampler, context: Context, traceId = hex(16)): SamplingDecision {
  return sampler.shouldSample(context, traceId, 'probe', SpanKind.INTERNAL, {}, []).decision
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

t.test("SpanRecorder.start: a root's trace id is made when first read, by it or by a child, and then kept", async (t) => {
  const { recorder } = recorderWith({})
  const root = recorded(t, recorder.start('NetworkService/Request', SpanKind.SERVER, {}, undefined))
  const child = recorded(t, recorder.start('ipam request', SpanKind.INTERNAL, {}, { local: root }))
  const grandchild = recorded(t, recorder.start('kernel request', SpanKind.INTERNAL, {}, { local: child }))
  const first = grandchild.traceId
  t.match(first, HEX32, 'read first through a grandchild')
  t.equal(root.traceId, first, 'the root has that id')
  t.equal(child.traceId, first, 'and the child between them')
  t.equal(root.spanContext().traceId, first, 'spanContext() too')
  t.equal(root.traceId, first, 'read again: the same')
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
