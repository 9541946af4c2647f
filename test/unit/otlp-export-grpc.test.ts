// The trace exporter over OTLP/gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, agent/tracing/otlp-transport.ts)
// against a real grpc-js server serving opentelemetry.proto.collector.trace.v1.TraceService/Export on
// loopback: the bytes it receives decode as the spans sent, the headers arrive as metadata, gzip is the
// channel's compression, TLS with a client certificate works, and the retry rules are the specification's
// (UNAVAILABLE retried; RESOURCE_EXHAUSTED only with a RetryInfo, after its delay; INVALID_ARGUMENT dropped).
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer as createH2Server, type IncomingHttpHeaders } from 'node:http2'
import type { AddressInfo } from 'node:net'
import { gunzipSync } from 'node:zlib'
import { Metadata, Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js'
import protobuf from 'protobufjs'
import { OtlpTraceExporter, retryInfoMs, type FinishedSpan } from '../../agent/tracing/otlp.js'
import { decodeTraces, TRACE_SERVICE } from '../lib/otlp.js'
import { Pki } from '../lib/pki.js'

const RESOURCE = { 'service.name': 'nsm-agent', 'k8s.node.name': 'node-a' }
const SCOPE = { name: 'nsm-agent', version: '0.1.0' }
const BASE = { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TIMEOUT: '2000', OTEL_BSP_SCHEDULE_DELAY: '60000' }

let seq = 0
function span(): FinishedSpan {
  const n = (++seq).toString(16).padStart(16, '0')
  return {
    traceId: `4bf92f3577b34da6${n}`,
    spanId: n,
    parentSpanId: undefined,
    traceState: undefined,
    flags: 1,
    parentIsRemote: false,
    name: `span ${seq}`,
    kind: 1,
    startMs: 1_700_000_000_000 + seq,
    endMs: 1_700_000_000_002 + seq,
    attributes: { 'nsm.service': 'web' },
    events: [],
    links: [],
    status: { code: 0 },
  }
}

// google.rpc.Status with a RetryInfo, encoded by protobufjs (not by the code under test).
const RPC = protobuf.parse(`
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message Duration { int64 seconds = 1; int32 nanos = 2; }
message RetryInfo { Duration retry_delay = 1; }
message ExportTracePartialSuccess { int64 rejected_spans = 1; string error_message = 2; }
message ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
`).root
const encode = (type: string, value: object): Buffer => {
  const T = RPC.lookupType(type)
  return Buffer.from(T.encode(T.fromObject(value)).finish())
}
function statusWithRetryInfo(code: number, seconds: number, nanos: number, otherFirst = false): Buffer {
  const retry = { typeUrl: 'type.googleapis.com/google.rpc.RetryInfo', value: encode('google.rpc.RetryInfo', { retryDelay: { seconds, nanos } }) }
  const other = { typeUrl: 'type.googleapis.com/google.rpc.DebugInfo', value: Buffer.from([0x0a, 0x01, 0x78]) }
  return encode('google.rpc.Status', { code, message: 'slow down', details: otherFirst ? [other, retry] : [retry] })
}

interface Call {
  metadata: Metadata
  body: Buffer
}
type Reply = { error: { code: number; details: string; metadata?: Metadata } } | { body: Buffer }

/** A TraceService/Export server recording each call; `answer` replies (default OK, an empty response). */
async function collector(t: Test, answer: (n: number) => Reply = () => ({ body: Buffer.alloc(0) }), creds = ServerCredentials.createInsecure()): Promise<{ port: number; calls: Call[] }> {
  const calls: Call[] = []
  const server = new Server()
  server.addService(TRACE_SERVICE, {
    Export: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
      calls.push({ metadata: call.metadata, body: call.request })
      const r = answer(calls.length)
      if ('error' in r) cb({ code: r.error.code, details: r.error.details, ...(r.error.metadata === undefined ? {} : { metadata: r.error.metadata }) }, null)
      else cb(null, r.body)
    },
  })
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))))
  t.teardown(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())))
  return { port, calls }
}

type Warning = [string, Record<string, unknown> | undefined]
function exporterFor(t: Test, env: Record<string, string>, warnings: Warning[] = []): OtlpTraceExporter {
  const e = new OtlpTraceExporter({ resource: RESOURCE, scope: SCOPE, env: { ...BASE, ...env }, warn: (msg, fields) => warnings.push([msg, fields]) })
  t.teardown(() => e.shutdown())
  return e
}

t.test('spans arrive over gRPC as sent, the headers as metadata', async (t) => {
  const rx = await collector(t)
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}`, OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc,x-tenant=a' })
  const sent = [span(), span(), span()]
  for (const s of sent) e.add(s)
  await e.forceFlush()
  t.equal(rx.calls.length, 1)
  const got = decodeTraces(rx.calls[0]!.body)
  t.same(
    got.map((s) => [s.name, s.traceId, s.spanId, s.kind, s.attributes['nsm.service'], s.resource['service.name']]),
    sent.map((s) => [s.name, s.traceId, s.spanId, 2, 'web', 'nsm-agent']), // kind 1 (SERVER) is 2 on the wire
  )
  t.same(rx.calls[0]!.metadata.get('authorization'), ['Bearer abc'])
  t.same(rx.calls[0]!.metadata.get('x-tenant'), ['a'])
  t.same(e.stats, { exported: 3, dropped: 0, failedExports: 0 })
})

t.test('the traces endpoint wins over the general one; gzip compresses the message on the wire', async (t) => {
  // A bare HTTP/2 server, to see the request as it travels: its headers and the message's 5-byte prefix
  // (compressed flag, length), which a grpc-js server would hide.
  const seen: Array<{ headers: IncomingHttpHeaders; body: Buffer }> = []
  const server = createH2Server()
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => {
      seen.push({ headers, body: Buffer.concat(chunks) })
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true })
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }))
      stream.end(Buffer.from([0, 0, 0, 0, 0]))
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as AddressInfo).port
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${port}/`, OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'gzip' })
  e.add(span())
  await e.forceFlush()
  t.equal(seen.length, 1)
  const { headers, body } = seen[0]!
  t.equal(headers[':path'], '/opentelemetry.proto.collector.trace.v1.TraceService/Export')
  t.equal(headers['content-type'], 'application/grpc')
  t.equal(headers['grpc-encoding'], 'gzip')
  t.equal(body[0], 1, 'the compressed flag')
  t.equal(body.readUInt32BE(1), body.length - 5, 'one message')
  t.same(decodeTraces(gunzipSync(body.subarray(5))).map((s) => s.name), [`span ${seq}`])
  t.same(e.stats, { exported: 1, dropped: 0, failedExports: 0 })
})

t.test('UNAVAILABLE is retried, and the batch arrives once', async (t) => {
  const rx = await collector(t, (n) => (n === 1 ? { error: { code: status.UNAVAILABLE, details: 'starting' } } : { body: Buffer.alloc(0) }))
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` })
  e.add(span())
  await e.forceFlush()
  t.equal(rx.calls.length, 2)
  t.same(e.stats, { exported: 1, dropped: 0, failedExports: 0 })
})

t.test('RESOURCE_EXHAUSTED: retried after the RetryInfo delay; without one, dropped at once', async (t) => {
  const md = new Metadata()
  md.set('grpc-status-details-bin', statusWithRetryInfo(status.RESOURCE_EXHAUSTED, 0, 300_000_000))
  const rx = await collector(t, (n) => (n === 1 ? { error: { code: status.RESOURCE_EXHAUSTED, details: 'slow down', metadata: md } } : { body: Buffer.alloc(0) }))
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` })
  e.add(span())
  const t0 = Date.now()
  await e.forceFlush()
  t.equal(rx.calls.length, 2)
  t.ok(Date.now() - t0 >= 290, `waited the 300 ms RetryInfo asked for (${Date.now() - t0} ms)`)
  t.same(e.stats, { exported: 1, dropped: 0, failedExports: 0 })

  const warnings = await droppedAtOnce(t, status.RESOURCE_EXHAUSTED, 'quota')
  t.match(warnings, [[/trace export to http:\/\/127\.0\.0\.1:\d+\/ failed/, { spans: 1, attempts: 1, grpcStatus: 'RESOURCE_EXHAUSTED', message: 'quota' }]])
})

t.test('INVALID_ARGUMENT drops the batch at once, with the status and the message', async (t) => {
  const warnings = await droppedAtOnce(t, status.INVALID_ARGUMENT, 'bad span')
  t.match(warnings, [[/failed/, { grpcStatus: 'INVALID_ARGUMENT', message: 'bad span' }]])
})

/** A collector answering every call with `code`: one call, the span dropped; what the exporter warned. */
async function droppedAtOnce(t: Test, code: status, details: string): Promise<Warning[]> {
  const warnings: Warning[] = []
  const rx = await collector(t, () => ({ error: { code, details } }))
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` }, warnings)
  e.add(span())
  await e.forceFlush()
  t.equal(rx.calls.length, 1)
  t.same(e.stats, { exported: 0, dropped: 1, failedExports: 1 })
  return warnings
}

t.test('a partial success is delivered, and its rejection reported', async (t) => {
  const warnings: Warning[] = []
  const body = encode('google.rpc.ExportTraceServiceResponse', { partialSuccess: { rejectedSpans: 1, errorMessage: 'span too old' } })
  const rx = await collector(t, () => ({ body }))
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` }, warnings)
  e.add(span())
  e.add(span())
  await e.forceFlush()
  t.same(e.stats, { exported: 2, dropped: 0, failedExports: 0 })
  t.match(warnings, [['the collector rejected spans of an export', { spans: 2, rejectedSpans: 1, message: 'span too old' }]])
})

t.test('a collector that is not there: retried until the time is up, then dropped', async (t) => {
  const warnings: Warning[] = []
  // Port 1 on loopback: nothing listens there (connection refused).
  const e = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_EXPORTER_OTLP_TIMEOUT: '600' }, warnings)
  e.add(span())
  const t0 = Date.now()
  await e.forceFlush()
  t.ok(Date.now() - t0 < 2000, 'gave up within the export time')
  t.same(e.stats, { exported: 0, dropped: 1, failedExports: 1 })
  t.match(warnings, [[/failed/, { grpcStatus: /UNAVAILABLE|DEADLINE_EXCEEDED/ }]])
  t.ok((warnings[0]![1]!.attempts as number) > 1, 'retried before giving up')
})

t.test('TLS with a CA and a client certificate from the variables', async (t) => {
  const pki = new Pki(t)
  const server = pki.leaf('collector', { san: 'IP:127.0.0.1' })
  const client = pki.leaf('agent')
  const creds = ServerCredentials.createSsl(readFileSync(server.ca), [{ cert_chain: readFileSync(server.cert), private_key: readFileSync(server.key) }], true)
  const rx = await collector(t, undefined, creds)
  const e = exporterFor(t, {
    OTEL_EXPORTER_OTLP_ENDPOINT: `https://127.0.0.1:${rx.port}`,
    OTEL_EXPORTER_OTLP_CERTIFICATE: client.ca,
    OTEL_EXPORTER_OTLP_CLIENT_KEY: client.key,
    OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: client.cert,
  })
  e.add(span())
  await e.forceFlush()
  t.equal(rx.calls.length, 1)
  t.same(e.stats, { exported: 1, dropped: 0, failedExports: 0 })

  // Without the client certificate the server refuses the handshake: the batch is dropped, not hung.
  const e2 = exporterFor(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `https://127.0.0.1:${rx.port}`, OTEL_EXPORTER_OTLP_CERTIFICATE: client.ca, OTEL_EXPORTER_OTLP_TIMEOUT: '500' })
  e2.add(span())
  await e2.forceFlush()
  t.equal(rx.calls.length, 1)
  t.same(e2.stats, { exported: 0, dropped: 1, failedExports: 1 })
})

t.test('retryInfoMs: the RetryInfo among the details, anything else unread', async (t) => {
  t.equal(retryInfoMs(statusWithRetryInfo(8, 2, 500_000_000)), 2500)
  t.equal(retryInfoMs(statusWithRetryInfo(8, 0, 0, true)), 0, 'after another detail; a zero delay')
  t.equal(retryInfoMs(encode('google.rpc.Status', { code: 8, message: 'no details' })), undefined)
  t.equal(retryInfoMs(undefined), undefined)
  t.equal(retryInfoMs('text'), undefined)
  t.equal(retryInfoMs(Buffer.from([0x1a, 0x7f, 0x00])), undefined, 'a length past the end')
})
