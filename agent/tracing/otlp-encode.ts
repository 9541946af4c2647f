// OTLP trace protobuf, written straight from the agent's finished spans into a growable buffer
// (./otlp.ts keeps the pending bytes and sends them). Only the messages an ExportTraceServiceRequest needs:
// opentelemetry-proto's collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
// resource/v1/resource.proto and common/v1/common.proto (field numbers below); of the answer, only the
// partial_success a collector may set.
//
// Why our own writer and not a library's: a generic writer (protobufjs, @bufbuild/protobuf's BinaryWriter)
// builds each nested message as a chunk of its own and joins them, an allocation per KeyValue and AnyValue;
// the SDK's path also builds an object tree per span first. That cost, per span on the agent's thread, is
// what tracing must not spend: a typical span (8 attributes) takes ~1.2 µs here and ~8.5 µs through
// BinaryWriter (measured on the dev VM, Node 20; test/unit/otlp-export.test.ts's header). The wire format
// used is small and frozen (varint, fixed32/64, length-delimited); test/unit/otlp-export.test.ts checks
// every field against protobufjs's decoder and its re-encoding.
//
// The wire-level writer (ProtoWriter: varints, fixed32/64, minimal lengths) is ./proto-writer.ts; here are
// the messages, their field numbers and the batch around them.
import type { AttributeValue, Attributes } from '@opentelemetry/api'
import { ProtoWriter, varintSize } from './proto-writer.js'

/** A finished span, as the agent's recorder hands it over. */
export interface FinishedSpan {
  traceId: string // 32 lowercase hex
  spanId: string // 16 lowercase hex
  parentSpanId: string | undefined // 16 hex, undefined for a root
  traceState: string | undefined // the W3C tracestate header value, undefined when empty
  /** W3C trace flags (bit 0 sampled); Span.flags gets bits 8 and 9 (parent is remote) from parentIsRemote. */
  flags: number
  parentIsRemote: boolean
  name: string
  kind: number // @opentelemetry/api SpanKind: INTERNAL 0 ... CONSUMER 4 (OTLP's enum is this + 1)
  startMs: number // epoch milliseconds, fractional (performance.timeOrigin + performance.now())
  endMs: number
  attributes: Attributes // string | number | boolean | arrays of those; undefined/null values are skipped
  events: ReadonlyArray<{ name: string; timeMs: number; attributes?: Attributes }>
  links: ReadonlyArray<{ traceId: string; spanId: string; traceState?: string; flags: number; attributes?: Attributes }>
  status: { code: number; message?: string } // SpanStatusCode: UNSET 0, OK 1, ERROR 2 (same numbers in OTLP)
}

/**
 * One batch's spans, encoded as each is added, in one of OTLP's encodings: protobuf (here) or JSON
 * (./otlp-json.ts). The exporter (./otlp.ts) fills one while another is sent.
 */
export interface SpanBatch {
  /** Encodes the span after those added before; when it throws, nothing of the span stays. */
  add(span: FinishedSpan): void
  /** The ExportTraceServiceRequest around the spans added, ready to send; the batch is empty after. */
  request(): Buffer
  /** An empty batch of the same encoding, resource and scope (room sized as this one's has grown). */
  another(): SpanBatch
}

/** Span.flags bits: the parent's is-remote is known (bit 8), and it is remote (bit 9). */
const HAS_IS_REMOTE = 0x100
const IS_REMOTE = 0x200

// Tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
const T = {
  request_resourceSpans: (1 << 3) | 2,
  resourceSpans_resource: (1 << 3) | 2,
  resourceSpans_scopeSpans: (2 << 3) | 2,
  resource_attributes: (1 << 3) | 2,
  scopeSpans_scope: (1 << 3) | 2,
  scopeSpans_spans: (2 << 3) | 2,
  scope_name: (1 << 3) | 2,
  scope_version: (2 << 3) | 2,
  span_traceId: (1 << 3) | 2,
  span_spanId: (2 << 3) | 2,
  span_traceState: (3 << 3) | 2,
  span_parentSpanId: (4 << 3) | 2,
  span_name: (5 << 3) | 2,
  span_kind: (6 << 3) | 0,
  span_start: (7 << 3) | 1,
  span_end: (8 << 3) | 1,
  span_attributes: (9 << 3) | 2,
  span_events: (11 << 3) | 2,
  span_links: (13 << 3) | 2,
  span_status: (15 << 3) | 2,
  span_flags: (16 << 3) | 5, // two bytes: 0x85 0x01
  event_time: (1 << 3) | 1,
  event_name: (2 << 3) | 2,
  event_attributes: (3 << 3) | 2,
  link_traceId: (1 << 3) | 2,
  link_spanId: (2 << 3) | 2,
  link_traceState: (3 << 3) | 2,
  link_attributes: (4 << 3) | 2,
  link_flags: (6 << 3) | 5,
  status_message: (2 << 3) | 2,
  status_code: (3 << 3) | 0,
  keyValue_key: (1 << 3) | 2,
  keyValue_value: (2 << 3) | 2,
  any_string: (1 << 3) | 2,
  any_bool: (2 << 3) | 0,
  any_int: (3 << 3) | 0,
  any_double: (4 << 3) | 1,
  any_array: (5 << 3) | 2,
  array_values: (1 << 3) | 2,
} as const

function anyValue(w: ProtoWriter, tag: number, v: AttributeValue | null): void {
  const mark = w.begin(tag)
  switch (typeof v) {
    case 'string':
      w.string(T.any_string, v)
      break
    case 'boolean':
      w.uint(T.any_bool)
      w.uint(v ? 1 : 0)
      break
    case 'number':
      if (Number.isSafeInteger(v)) {
        w.uint(T.any_int)
        w.int64(v)
      } else {
        w.uint(T.any_double)
        w.double(v)
      }
      break
    default:
      if (Array.isArray(v)) {
        const arr = w.begin(T.any_array)
        // An element that is null or undefined stays, as an empty AnyValue: the positions are the data.
        for (const item of v as ReadonlyArray<string | number | boolean | null | undefined>) anyValue(w, T.array_values, item ?? null)
        w.end(arr)
      }
  }
  w.end(mark)
}

/** Repeated KeyValue under `tag`; null and undefined values are left out. */
export function attributes(w: ProtoWriter, tag: number, attrs: Attributes | undefined): void {
  if (attrs === undefined) return
  for (const key in attrs) {
    const v = attrs[key]
    if (v === undefined || v === null) continue
    const kv = w.begin(tag)
    w.string(T.keyValue_key, key)
    anyValue(w, T.keyValue_value, v)
    w.end(kv)
  }
}

/** Span.flags: the W3C flags, and whether the parent is remote when there is a parent (./otlp-json.ts too). */
export const spanFlags = (s: FinishedSpan): number => (s.flags & 0xff) | (s.parentSpanId === undefined ? 0 : HAS_IS_REMOTE | (s.parentIsRemote ? IS_REMOTE : 0))

/** One span as ScopeSpans.spans (field 2, tag included): the unit the exporter queues and splices. */
export function encodeSpan(w: ProtoWriter, s: FinishedSpan): void {
  const span = w.begin(T.scopeSpans_spans, 2)
  w.hexBytes(T.span_traceId, s.traceId)
  w.hexBytes(T.span_spanId, s.spanId)
  if (s.traceState !== undefined && s.traceState !== '') w.string(T.span_traceState, s.traceState)
  if (s.parentSpanId !== undefined) w.hexBytes(T.span_parentSpanId, s.parentSpanId)
  if (s.name !== '') w.string(T.span_name, s.name)
  w.uint(T.span_kind)
  w.uint(s.kind + 1)
  w.uint(T.span_start)
  w.epochNanos(s.startMs)
  w.uint(T.span_end)
  w.epochNanos(s.endMs)
  attributes(w, T.span_attributes, s.attributes)
  for (const e of s.events) {
    const ev = w.begin(T.span_events)
    w.uint(T.event_time)
    w.epochNanos(e.timeMs)
    if (e.name !== '') w.string(T.event_name, e.name)
    attributes(w, T.event_attributes, e.attributes)
    w.end(ev)
  }
  for (const l of s.links) {
    const link = w.begin(T.span_links)
    w.hexBytes(T.link_traceId, l.traceId)
    w.hexBytes(T.link_spanId, l.spanId)
    if (l.traceState !== undefined && l.traceState !== '') w.string(T.link_traceState, l.traceState)
    attributes(w, T.link_attributes, l.attributes)
    if (l.flags !== 0) {
      w.uint(T.link_flags)
      w.fixed32(l.flags)
    }
    w.end(link)
  }
  const { code, message } = s.status
  if (code !== 0 || (message !== undefined && message !== '')) {
    const st = w.begin(T.span_status)
    if (message !== undefined && message !== '') w.string(T.status_message, message)
    if (code !== 0) {
      w.uint(T.status_code)
      w.uint(code)
    }
    w.end(st)
  }
  const flags = spanFlags(s)
  if (flags !== 0) {
    w.uint(T.span_flags)
    w.fixed32(flags)
  }
  w.end(span)
}

/**
 * What comes before a batch's spans, in two parts: ResourceSpans.resource and ScopeSpans.scope, each with
 * its tag, made once; `requestHead` wraps them around a batch's span bytes.
 */
export function encodeResourceAndScope(resource: Attributes, scope: { name: string; version?: string }): { resource: Buffer; scope: Buffer } {
  const w = new ProtoWriter(1024)
  const r = w.begin(T.resourceSpans_resource)
  attributes(w, T.resource_attributes, resource)
  w.end(r)
  const resourceBytes = Buffer.from(w.take())
  const sc = w.begin(T.scopeSpans_scope)
  if (scope.name !== '') w.string(T.scope_name, scope.name)
  if (scope.version !== undefined && scope.version !== '') w.string(T.scope_version, scope.version)
  w.end(sc)
  return { resource: resourceBytes, scope: Buffer.from(w.take()) }
}

/**
 * ExportTraceServiceRequest{ resource_spans: [ResourceSpans{ resource, scope_spans: [ScopeSpans{ scope,
 * spans }] }] } around `spans` (encodeSpan's output, concatenated): one Buffer, ready to send.
 */
export function encodeRequest(head: { resource: Buffer; scope: Buffer }, spans: Uint8Array): Buffer {
  const scopeSpansLen = head.scope.length + spans.length
  const resourceSpansLen = head.resource.length + 1 + varintSize(scopeSpansLen) + scopeSpansLen
  const out = new ProtoWriter(1 + varintSize(resourceSpansLen) + resourceSpansLen)
  out.uint(T.request_resourceSpans)
  out.uint(resourceSpansLen)
  out.buf.set(head.resource, out.pos)
  out.pos += head.resource.length
  out.uint(T.resourceSpans_scopeSpans)
  out.uint(scopeSpansLen)
  out.buf.set(head.scope, out.pos)
  out.pos += head.scope.length
  out.buf.set(spans, out.pos)
  out.pos += spans.length
  return out.buf
}

/** An empty batch that writes ExportTraceServiceRequests in protobuf for this resource and scope. */
export function protobufBatch(resource: Attributes, scope: { name: string; version?: string }, head = encodeResourceAndScope(resource, scope), size = 16_384): SpanBatch {
  const w = new ProtoWriter(size)
  return {
    add: (span) => {
      const before = w.pos
      try {
        encodeSpan(w, span)
      } catch (err) {
        w.pos = before
        throw err
      }
    },
    request: () => encodeRequest(head, w.take()),
    another: () => protobufBatch(resource, scope, head, w.buf.length),
  }
}
