// An OTLP/HTTP trace receiver for tests: POST /v1/traces with an ExportTraceServiceRequest in protobuf
// (what the agent's exporter, agent/tracing/otlp.ts, sends), decoded with protobufjs from the message
// definitions below (the subset of opentelemetry/proto's trace.proto, common.proto and resource.proto the
// agent's spans use, same field numbers), answered 200 with an empty ExportTraceServiceResponse. As the OTLP
// specification asks of a server, the same URL takes OTLP/JSON (Content-Type: application/json, the
// exporter's http/json), read here with JSON.parse and the specification's rules (hex ids, int64 as strings),
// and answered in JSON.
//
// startOtlpGrpcReceiver serves the same request over OTLP/gRPC (TraceService/Export, a grpc-js server).
//
// Runnable as a script too (`node --import tsx test/lib/otlp.ts HOST`), for agents in another network
// namespace (startOtlpReceiverIn): it prints `{"endpoint": URL}`, then one JSON line per span received.
import { Server as GrpcServer, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition } from '@grpc/grpc-js'
import { spawn } from 'node:child_process'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { gunzipSync } from 'node:zlib'
import protobuf from 'protobufjs'

/** The OTLP messages as protobuf text (test/unit/otlp-export.test.ts decodes and re-encodes with them too). */
export const OTLP_TRACE_PROTO = `
syntax = "proto3";
package otlp;
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5;
  int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9; uint32 dropped_attributes_count = 10;
  repeated Event events = 11; uint32 dropped_events_count = 12; repeated Link links = 13; uint32 dropped_links_count = 14;
  Status status = 15; fixed32 flags = 16;
}
message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
message Status { string message = 2; int32 code = 3; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
message ExportTracePartialSuccess { int64 rejected_spans = 1; string error_message = 2; }
`

const ExportRequest = protobuf.parse(OTLP_TRACE_PROTO, { keepCase: false }).root.lookupType('otlp.ExportTraceServiceRequest')

export type AttrValue = string | number | boolean | undefined

/** One span as received, ids in hex, attributes flattened. */
export interface ReceivedSpan {
  traceId: string
  spanId: string
  parentSpanId: string
  name: string
  kind: number
  attributes: Record<string, AttrValue>
  /** The resource's attributes (service.name, k8s.node.name, ...). */
  resource: Record<string, AttrValue>
  status: { code: number; message: string }
  events: string[]
  startNs: bigint
  endNs: bigint
}

export interface OtlpReceiver {
  /** http://127.0.0.1:PORT: the OTEL_EXPORTER_OTLP_ENDPOINT for the agent. */
  endpoint: string
  spans: ReceivedSpan[]
  /** Export requests received and decoded. */
  requests: number
  close(): Promise<void>
}

interface KeyValue {
  key: string
  value?: { stringValue?: string; boolValue?: boolean; intValue?: number | { toString(): string }; doubleValue?: number }
}
/** A decoded Span: protobufjs's object (ids as bytes, defaults filled in) or OTLP/JSON's (ids in hex, defaults left out). */
interface DecodedSpan {
  traceId: Uint8Array | string
  spanId: Uint8Array | string
  parentSpanId?: Uint8Array | string
  name?: string
  kind?: number
  startTimeUnixNano: { toString(): string } | number
  endTimeUnixNano: { toString(): string } | number
  attributes?: KeyValue[]
  events?: Array<{ name: string }>
  status?: { code?: number; message?: string }
}
interface Decoded {
  resourceSpans?: Array<{ resource?: { attributes?: KeyValue[] }; scopeSpans?: Array<{ spans?: DecodedSpan[] }> }>
}

function attrs(list: readonly KeyValue[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {}
  for (const kv of list ?? []) {
    const v = kv.value
    out[kv.key] = v?.stringValue ?? v?.boolValue ?? v?.doubleValue ?? (v?.intValue === undefined ? undefined : Number(v.intValue.toString()))
  }
  return out
}

/** An id in lowercase hex: bytes from protobuf, a (case-insensitive) hex string from OTLP/JSON. */
const hex = (id: Uint8Array | string | undefined): string => (typeof id === 'string' ? id.toLowerCase() : Buffer.from(id ?? []).toString('hex'))

/** Decodes one ExportTraceServiceRequest body (protobuf) into spans. */
export function decodeTraces(body: Uint8Array): ReceivedSpan[] {
  return spansOf(ExportRequest.toObject(ExportRequest.decode(body), { defaults: true, arrays: true }) as Decoded)
}

/** Decodes one ExportTraceServiceRequest body in OTLP/JSON into spans. */
export function decodeJsonTraces(body: Uint8Array): ReceivedSpan[] {
  return spansOf(JSON.parse(Buffer.from(body).toString('utf8')) as Decoded)
}

function spansOf(msg: Decoded): ReceivedSpan[] {
  const out: ReceivedSpan[] = []
  for (const rs of msg.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes)
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name ?? '',
          kind: s.kind ?? 0,
          attributes: attrs(s.attributes),
          resource,
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
          events: (s.events ?? []).map((e) => e.name),
          startNs: BigInt(s.startTimeUnixNano.toString()),
          endNs: BigInt(s.endTimeUnixNano.toString()),
        })
      }
    }
  }
  return out
}

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  const raw = Buffer.concat(chunks)
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw
}

const DECODERS: Record<string, { decode: (body: Buffer) => ReceivedSpan[]; answer: string }> = {
  'application/x-protobuf': { decode: decodeTraces, answer: '' },
  'application/json': { decode: decodeJsonTraces, answer: '{}' },
}

/** An OTLP/HTTP server on host:0 handing each request's spans, and the request's content type, to `onSpans`. */
async function serveOtlp(host: string, onSpans: (spans: ReceivedSpan[], contentType: string) => void): Promise<{ server: Server; endpoint: string }> {
  const server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end()
      return
    }
    bodyOf(req).then(
      (body) => {
        const contentType = req.headers['content-type'] ?? ''
        const decoder = DECODERS[contentType]
        if (decoder === undefined) throw new Error(`content-type ${contentType}`)
        onSpans(decoder.decode(body), contentType)
        res.writeHead(200, { 'content-type': contentType }).end(decoder.answer)
      },
      (err: unknown) => res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err)),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  const { port } = server.address() as AddressInfo
  return { server, endpoint: `http://${host}:${port}` }
}

/** Starts a receiver on `host` (loopback by default), closed at teardown; `contentTypes` has each request's. */
export async function startOtlpReceiver(t: Teardown, host = '127.0.0.1'): Promise<OtlpReceiver & { contentTypes: string[] }> {
  const spans: ReceivedSpan[] = []
  const contentTypes: string[] = []
  const state = { requests: 0 }
  const { server, endpoint } = await serveOtlp(host, (got, contentType) => {
    spans.push(...got)
    contentTypes.push(contentType)
    state.requests++
  })
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  t.teardown(close)
  return {
    endpoint,
    spans,
    contentTypes,
    get requests() {
      return state.requests
    },
    close,
  }
}

const raw = (b: Buffer): Buffer => b
/** opentelemetry.proto.collector.trace.v1.TraceService with one method, Export, its messages as bytes. */
export const TRACE_SERVICE: ServiceDefinition = {
  Export: { path: '/opentelemetry.proto.collector.trace.v1.TraceService/Export', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
}

/** An OTLP/gRPC receiver on `host` (TraceService/Export, answered with an empty response), closed at teardown. */
export async function startOtlpGrpcReceiver(t: Teardown, host = '127.0.0.1'): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = []
  const state = { requests: 0 }
  const server = new GrpcServer()
  server.addService(TRACE_SERVICE, {
    Export: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
      spans.push(...decodeTraces(call.request))
      state.requests++
      cb(null, Buffer.alloc(0))
    },
  })
  const port = await new Promise<number>((res, rej) => server.bindAsync(`${host}:0`, ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))))
  const close = (): Promise<void> => new Promise<void>((res) => server.tryShutdown(() => res()))
  t.teardown(close)
  return {
    endpoint: `http://${host}:${port}`,
    spans,
    get requests() {
      return state.requests
    },
    close,
  }
}

const ROOT = resolve(import.meta.dirname, '../..')

/**
 * A receiver in its own process (this file as a script), in the network namespace `netns` (undefined: this
 * one) on `host` there, killed at teardown. `countOnly`: the spans are decoded and counted, not sent back
 * (`spans` stays empty, `requests` counts the spans): a benchmark's process then spends nothing on them.
 */
export async function startOtlpReceiverIn(t: Teardown, netns: string | undefined, host: string, countOnly = false): Promise<OtlpReceiver> {
  const script = [process.execPath, '--import', 'tsx', join(ROOT, 'test/lib/otlp.ts'), host, ...(countOnly ? ['--count'] : [])]
  const [cmd, ...args] = (netns === undefined ? script : ['ip', 'netns', 'exec', netns, ...script]) as [string, ...string[]]
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((res) => child.once('exit', () => res()))
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  t.teardown(close)
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const spans: ReceivedSpan[] = []
  const state = { requests: 0 }
  const endpoint = await new Promise<string>((res, rej) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      let nl: number
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = JSON.parse(out.slice(0, nl)) as { endpoint?: string; count?: number; span?: ReceivedSpan & { startNs: string; endNs: string } }
        out = out.slice(nl + 1)
        if (line.endpoint !== undefined) res(line.endpoint)
        if (line.count !== undefined) state.requests = line.count
        if (line.span !== undefined) {
          spans.push({ ...line.span, startNs: BigInt(line.span.startNs), endNs: BigInt(line.span.endNs) })
          state.requests++
        }
      }
    })
    void exited.then(() => rej(new Error(`the OTLP receiver exited: ${stderr}`)))
  })
  return {
    endpoint,
    spans,
    get requests() {
      return state.requests
    },
    close,
  }
}

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** The spans of one trace, as parent → children. */
export function childrenOf(spans: readonly ReceivedSpan[], parent: ReceivedSpan): ReceivedSpan[] {
  return spans.filter((s) => s.traceId === parent.traceId && s.parentSpanId === parent.spanId)
}

/** Every span under `root` (itself excluded), depth first. */
export function descendantsOf(spans: readonly ReceivedSpan[], root: ReceivedSpan): ReceivedSpan[] {
  const out: ReceivedSpan[] = []
  const walk = (p: ReceivedSpan): void => {
    for (const c of childrenOf(spans, p)) {
      out.push(c)
      walk(c)
    }
  }
  walk(root)
  return out
}

// ---- as a script: the receiver in another netns ----
const invoked = process.argv[1]
if (invoked !== undefined && import.meta.url === pathToFileURL(resolve(invoked)).href) {
  const countOnly = process.argv[3] === '--count'
  let count = 0
  serveOtlp(process.argv[2] ?? '127.0.0.1', (spans) => {
    count += spans.length
    if (countOnly) process.stdout.write(`${JSON.stringify({ count })}\n`)
    else for (const span of spans) process.stdout.write(`${JSON.stringify({ span: { ...span, startNs: span.startNs.toString(), endNs: span.endNs.toString() } })}\n`)
  }).then(
    ({ endpoint }) => process.stdout.write(`${JSON.stringify({ endpoint })}\n`),
    (err: unknown) => {
      process.stderr.write(`otlp receiver: ${String(err)}\n`)
      process.exit(1)
    },
  )
}
