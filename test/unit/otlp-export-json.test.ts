// The trace exporter over OTLP/HTTP with JSON (OTEL_EXPORTER_OTLP_PROTOCOL=http/json, agent/tracing/otlp-json.ts)
// against real loopback HTTP servers: the request is application/json to /v1/traces and is the OTLP
// specification's JSON encoding (lowerCamelCase keys, ids in hex, enums as integers, 64-bit integers as decimal
// strings, typed AnyValues); it says what the protobuf encoding of the same spans says, field for field
// (protobufjs decodes the protobuf, independently of the code under test); gzip; the collector's JSON answer
// (partialSuccess) is reported; 503 with Retry-After is retried; the test receiver (test/lib/otlp.ts) reads it.
import t, { type Test } from 'tap'
import { gunzipSync } from 'node:zlib'
import protobuf from 'protobufjs'
import type { FinishedSpan } from '../../agent/tracing/otlp.js'
import { OTLP_TRACE_PROTO, startOtlpReceiver } from '../lib/otlp.js'
import { EVERY_TYPE, exporterFor, fullSpan, localSpan, rawServer, RESOURCE, rootSpan, SCOPE, span, type Warning } from '../lib/otlp-export.js'

const ExportRequest = protobuf.parse(OTLP_TRACE_PROTO).root.lookupType('otlp.ExportTraceServiceRequest')

const JSON_ENV = { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }

interface JsonAny {
  stringValue?: string
  boolValue?: boolean
  intValue?: string
  doubleValue?: number | string
  arrayValue?: { values?: JsonAny[] }
}
interface JsonKv {
  key: string
  value: JsonAny
}
interface JsonSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  traceState?: string
  flags?: number
  name?: string
  kind: number
  startTimeUnixNano: string
  endTimeUnixNano: string
  attributes?: JsonKv[]
  events?: Array<{ timeUnixNano: string; name?: string; attributes?: JsonKv[] }>
  links?: Array<{ traceId: string; spanId: string; traceState?: string; flags?: number; attributes?: JsonKv[] }>
  status?: { message?: string; code?: number }
}
interface JsonRequest {
  resourceSpans: Array<{ resource: { attributes?: JsonKv[] }; scopeSpans: Array<{ scope: { name?: string; version?: string }; spans: JsonSpan[] }> }>
}

const parse = (body: Buffer): JsonRequest => JSON.parse(body.toString('utf8')) as JsonRequest
const spansOf = (req: JsonRequest): JsonSpan[] => req.resourceSpans[0]!.scopeSpans[0]!.spans
const valueOf = (kvs: JsonKv[] | undefined, key: string): JsonAny | undefined => kvs?.find((kv) => kv.key === key)?.value

/** Spans through an exporter with `env` to a server that records them: the one request's body, as received. */
async function sent(t: Test, env: Record<string, string>, spans: FinishedSpan[]): Promise<Buffer> {
  const srv = await rawServer(t)
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: srv.url, ...env })
  for (const s of spans) e.add(s)
  await e.forceFlush()
  t.equal(srv.hits.length, 1, `${env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf'}: one request`)
  t.same(e.stats, { exported: spans.length, dropped: 0, failedExports: 0 })
  return srv.hits[0]!.body
}

/** Values JSON has no number for, and an array with a gap (an empty AnyValue keeps its place). */
const BEYOND_JSON = { nan: Number.NaN, inf: Number.POSITIVE_INFINITY, negInf: Number.NEGATIVE_INFINITY, gap: ['a', null, 'c'] as unknown as string[] }

t.test('the request: application/json to /v1/traces, every field as the OTLP JSON encoding writes it', async (t) => {
  const srv = await rawServer(t)
  const warnings: Warning[] = []
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: srv.url, ...JSON_ENV }, warnings)
  t.same(warnings, [], 'http/json is served: nothing reported')
  const full = fullSpan({ ...EVERY_TYPE, ...BEYOND_JSON })
  for (const s of [full, rootSpan(), localSpan()]) e.add(s)
  await e.forceFlush()
  t.equal(srv.hits.length, 1)
  const hit = srv.hits[0]!
  t.equal(hit.url, '/v1/traces')
  t.equal(hit.headers['content-type'], 'application/json')
  t.equal(hit.headers['content-encoding'], undefined, 'not compressed by default')
  t.equal(Number(hit.headers['content-length']), hit.body.length)

  const req = parse(hit.body)
  t.equal(req.resourceSpans.length, 1)
  const rs = req.resourceSpans[0]!
  t.strictSame(rs.resource.attributes, Object.entries(RESOURCE).map(([key, v]) => ({ key, value: { stringValue: v } })), 'the resource')
  t.strictSame(rs.scopeSpans[0]!.scope, SCOPE, 'the scope')
  const [a, b, c] = spansOf(req)
  if (a === undefined || b === undefined || c === undefined) throw new Error('three spans expected')

  const { attributes: _a, events: _e, links: _l, status: _s, ...head } = a
  t.strictSame(
    head,
    {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceState: 'vendor=opaque,other=x',
      parentSpanId: '00f067aa0ba902b7',
      name: 'NetworkService/Request',
      kind: 2,
      startTimeUnixNano: '1700000000123500488',
      endTimeUnixNano: '1700000000456250000',
      flags: 0x301,
    },
    'ids in hex (not base64); kind SERVER as an integer (the api kind + 1); times as decimal strings, to the nanosecond; flags: sampled, parent is-remote known, remote',
  )
  const v = (key: string): JsonAny | undefined => valueOf(a.attributes, key)
  t.strictSame(v('str'), { stringValue: 'text' })
  t.strictSame(v('empty'), { stringValue: '' })
  t.strictSame(v('neg'), { intValue: '-5' }, 'int64 as a decimal string')
  t.strictSame(v('minSafe'), { intValue: '-9007199254740991' })
  t.strictSame(v('maxSafe'), { intValue: '9007199254740991' })
  t.strictSame(v('zero'), { intValue: '0' })
  t.strictSame(v('beyond32'), { intValue: String(2 ** 40 + 3) })
  t.strictSame(v('dbl'), { doubleValue: 1.5 }, 'a double as a number')
  t.strictSame(v('negDbl'), { doubleValue: -0.25 })
  t.strictSame([v('nan'), v('inf'), v('negInf')], [{ doubleValue: 'NaN' }, { doubleValue: 'Infinity' }, { doubleValue: '-Infinity' }], "proto3 JSON's strings for what JSON has no number for")
  t.strictSame([v('yes'), v('no')], [{ boolValue: true }, { boolValue: false }])
  t.strictSame(v('strings'), { arrayValue: { values: [{ stringValue: 'a' }, { stringValue: 'b' }] } })
  t.strictSame(v('numbers'), { arrayValue: { values: [{ intValue: '1' }, { doubleValue: 2.5 }, { intValue: '-3' }] } })
  t.strictSame(v('bools'), { arrayValue: { values: [{ boolValue: true }, { boolValue: false }] } })
  t.strictSame(v('none'), { arrayValue: {} }, 'an empty array: no values')
  t.strictSame(v('gap'), { arrayValue: { values: [{ stringValue: 'a' }, {}, { stringValue: 'c' }] } }, 'a null element keeps its place')
  t.strictSame(v('unicode'), { stringValue: 'é✓😀' })
  t.equal(v('skipped'), undefined, 'undefined left out')
  t.equal(a.attributes?.length, Object.keys(EVERY_TYPE).length - 1 + Object.keys(BEYOND_JSON).length)
  t.strictSame(a.events, [
    { timeUnixNano: '1700000000200000244', name: 'exception', attributes: [{ key: 'exception.message', value: { stringValue: 'boom' } }, { key: 'exception.type', value: { stringValue: 'Error' } }] },
    { timeUnixNano: '1700000000300000000', name: 'plain' },
  ])
  t.strictSame(a.links, [
    { traceId: '11111111111111111111111111111111', spanId: '2222222222222222', traceState: 'a=b', attributes: [{ key: 'link.why', value: { stringValue: 'follows' } }], flags: 1 },
    { traceId: '33333333333333333333333333333333', spanId: '4444444444444444' },
  ])
  t.strictSame(a.status, { message: 'it failed', code: 2 }, 'ERROR as an integer')

  t.equal(b.parentSpanId, undefined, 'a root has no parentSpanId')
  t.equal(b.flags, undefined, 'nor flags when unsampled and without a parent')
  t.equal(b.kind, 1, 'INTERNAL')
  t.equal(b.status, undefined, 'UNSET without a message: no status')
  t.equal(b.attributes, undefined, 'no attributes: none written')
  t.equal(b.events, undefined)
  t.equal(c.flags, 0x101, 'a local parent: is-remote known, not remote')
  t.equal(c.kind, 5, 'CONSUMER')
  t.strictSame(c.status, { code: 1 }, 'OK without a message')
})

/**
 * A protobufjs-decoded request as the OTLP JSON encoding would write it: proto3 JSON (int64 and fixed64 as
 * strings, NaN and the infinities as strings, defaults left out), with the ids' bytes in hex instead of base64.
 */
function protoAsOtlpJson(body: Buffer): unknown {
  const obj = ExportRequest.toObject(ExportRequest.decode(body), { longs: String, bytes: String, json: true }) as unknown
  const ids = new Set(['traceId', 'spanId', 'parentSpanId'])
  const walk = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(walk)
    if (typeof x !== 'object' || x === null) return x
    return Object.fromEntries(Object.entries(x).map(([k, val]) => [k, ids.has(k) && typeof val === 'string' ? Buffer.from(val, 'base64').toString('hex') : walk(val)]))
  }
  return walk(obj)
}

t.test('the JSON says what the protobuf of the same spans says, field for field', async (t) => {
  const many: Record<string, number> = {}
  for (let i = 0; i < 300; i++) many[`key.${i}`] = i * 1.25
  const spans = [fullSpan({ ...EVERY_TYPE, ...BEYOND_JSON }), rootSpan(), localSpan(), span({ attributes: many, name: '' }), span({ traceState: '', status: { code: 0, message: 'only a message' } })]
  const json = parse(await sent(t, JSON_ENV, spans))
  const proto = protoAsOtlpJson(await sent(t, {}, spans))
  t.strictSame(json, proto, 'the same request: every field, value and type')
  t.equal(spansOf(json).length, spans.length)
})

t.test('gzip: the JSON arrives gzipped, and the test receiver reads it', async (t) => {
  const spans = [span(), span({ attributes: { 'netlink.messages': 3, ok: true } })]
  const body = await sent(t, { ...JSON_ENV, OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip' }, spans)
  t.equal(body.readUInt16BE(0), 0x1f8b, 'gzip magic')
  t.same(spansOf(parse(gunzipSync(body))).map((s) => s.spanId), spans.map((s) => s.spanId))

  const rx = await startOtlpReceiver(t)
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: rx.endpoint, ...JSON_ENV, OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'gzip' })
  for (const s of spans) e.add(s)
  await e.forceFlush()
  t.same(rx.contentTypes, ['application/json'])
  t.strictSame(
    rx.spans.map((s) => ({ spanId: s.spanId, parentSpanId: s.parentSpanId, startNs: s.startNs, attributes: s.attributes, resource: s.resource })),
    spans.map((s) => ({ spanId: s.spanId, parentSpanId: s.parentSpanId, startNs: BigInt(Math.round(s.startMs)) * 1_000_000n, attributes: s.attributes, resource: RESOURCE })),
  )
})

t.test('the collector answers in JSON: a partialSuccess is reported, an empty one is not', async (t) => {
  const answers: Array<[string, object | undefined]> = [
    ['{"partialSuccess":{"rejectedSpans":"1","errorMessage":"span 2: name too long"}}', { rejectedSpans: 1, message: 'span 2: name too long' }],
    ['{"partialSuccess":{"rejectedSpans":2}}', { rejectedSpans: 2, message: '' }],
    ['{"partialSuccess":{"errorMessage":"a warning only"}}', { rejectedSpans: 0, message: 'a warning only' }],
    ['{"partialSuccess":{}}', undefined],
    ['{}', undefined],
    ['', undefined],
    ['not json', undefined],
  ]
  for (const [answer, reported] of answers) {
    const srv = await rawServer(t, (_hit, _n, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(answer))
    const warnings: Warning[] = []
    const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: srv.url, ...JSON_ENV }, warnings)
    e.add(span())
    e.add(span())
    await e.forceFlush()
    t.same(e.stats, { exported: 2, dropped: 0, failedExports: 0 }, `${answer}: delivered`)
    if (reported === undefined) t.same(warnings, [], `${answer}: nothing reported`)
    else t.match(warnings, [[/rejected spans/, { spans: 2, ...reported }]], `${answer}: reported`)
  }
})

t.test('503 with Retry-After: the same JSON again after the wait', async (t) => {
  const srv = await rawServer(t, (_hit, n, res) => void (n === 1 ? res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"code":14,"message":"busy"}') : res.writeHead(200).end()))
  const warnings: Warning[] = []
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: srv.url, ...JSON_ENV }, warnings)
  const s = span()
  e.add(s)
  const started = Date.now()
  await e.forceFlush()
  const waited = Date.now() - started
  t.equal(srv.hits.length, 2, 'retried once')
  t.ok(waited >= 950, `waited as told, not the 100 ms backoff (${waited} ms)`)
  t.same(srv.hits[1]!.body, srv.hits[0]!.body, 'the same batch again')
  t.same(srv.hits.map((h) => h.headers['content-type']), ['application/json', 'application/json'])
  t.equal(spansOf(parse(srv.hits[1]!.body))[0]?.spanId, s.spanId)
  t.same(e.stats, { exported: 1, dropped: 0, failedExports: 0 })
  t.same(warnings, [])
})

t.test('the traces variable chooses http/json over the general one; a content-type header does not change it', async (t) => {
  const srv = await rawServer(t)
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: srv.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_HEADERS: 'content-type=text/plain,x-tenant=a' })
  e.add(span())
  await e.forceFlush()
  const hit = srv.hits[0]!
  t.equal(hit.headers['content-type'], 'application/json')
  t.equal(hit.headers['x-tenant'], 'a')
  t.equal(hit.url, '/v1/traces')
  t.equal(spansOf(parse(hit.body)).length, 1)
})
