// agent/tracing/span.ts, the agent's span recorder, in-process with a sink that collects what ends (no
// exporter, no network): what a recorded span keeps (attributes copied on first change, events and their
// times, the `exception` event, status rules, links) and that it is sent once and frozen at end(), and the
// @opentelemetry/api Tracer facade. How a span starts (samplers, ids, parents, dropped spans) is
// tracing-span-start.test.ts.
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Attributes, type Span, type SpanContext, type Tracer } from '@opentelemetry/api'
import { RecordedSpan } from '../../agent/tracing/span.js'
import { hex, recorded, recorderWith, remoteContext, withRemote } from '../lib/tracing-span'

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
