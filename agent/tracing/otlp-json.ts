// OTLP/JSON (OTEL_EXPORTER_OTLP_PROTOCOL=http/json): the same ExportTraceServiceRequest ./otlp-encode.ts writes in
// protobuf, field for field, written as the OTLP specification's "JSON Protobuf Encoding" (opentelemetry-proto's
// docs/specification.md): proto3's JSON mapping with lowerCamelCase keys, except that trace and span ids (span,
// parent, link) are hex strings, not base64, and enums are integers. 64-bit integers (the fixed64 times, an
// AnyValue's int64) are decimal strings, as proto3's mapping writes them; a double that JSON has no number for
// is "NaN", "Infinity" or "-Infinity". What protobuf leaves out (a default value, an empty repeated field) is
// left out here too, so that the two say the same (test/unit/otlp-export-json.test.ts compares them).
//
// Each span is written as one JSON text when it is added, in the span's own terms (no object tree, no
// JSON.stringify of the span: only of strings, for their escapes); a batch is those texts joined inside the
// request's envelope when it is sent. The collector's answer is read as JSON in ./otlp-transport.ts.
import type { AttributeValue, Attributes } from '@opentelemetry/api'
import { spanFlags, type FinishedSpan, type SpanBatch } from './otlp-encode.js'

/** A JSON string literal (quotes and escapes). */
const str = (s: string): string => JSON.stringify(s)

/** Fractional epoch milliseconds as decimal nanoseconds, exact (the protobuf writer's rounding: ./proto-writer.ts epochNanos). */
export function epochNanosDecimal(ms: number): string {
  const whole = Math.floor(ms)
  const subNs = Math.round((ms - whole) * 1e6) // ms - whole is exact
  return (BigInt(whole) * 1_000_000n + BigInt(subNs)).toString()
}

/** A double as proto3 JSON: a number, or the string JSON has for NaN and the infinities. */
const double = (v: number): string => (Number.isFinite(v) ? String(v) : v > 0 ? '"Infinity"' : v < 0 ? '"-Infinity"' : '"NaN"')

function anyValue(v: AttributeValue | null): string {
  switch (typeof v) {
    case 'string':
      return `{"stringValue":${str(v)}}`
    case 'boolean':
      return v ? '{"boolValue":true}' : '{"boolValue":false}'
    case 'number':
      return Number.isSafeInteger(v) ? `{"intValue":"${v}"}` : `{"doubleValue":${double(v)}}`
    default:
      if (!Array.isArray(v)) return '{}'
      // An element that is null or undefined stays, as an empty AnyValue: the positions are the data.
      if (v.length === 0) return '{"arrayValue":{}}'
      return `{"arrayValue":{"values":[${(v as ReadonlyArray<string | number | boolean | null | undefined>).map((item) => anyValue(item ?? null)).join(',')}]}}`
  }
}

/** `,"attributes":[...]` (KeyValue list, null and undefined values left out), or nothing when none is left. */
function attributes(attrs: Attributes | undefined): string {
  if (attrs === undefined) return ''
  let out = ''
  for (const key in attrs) {
    const v = attrs[key]
    if (v === undefined || v === null) continue
    out += `${out === '' ? '' : ','}{"key":${str(key)},"value":${anyValue(v)}}`
  }
  return out === '' ? '' : `,"attributes":[${out}]`
}

/** `,"<key>":"<value>"` for a string that protobuf would write (not empty), or nothing. */
const optional = (key: string, v: string | undefined): string => (v === undefined || v === '' ? '' : `,"${key}":${str(v)}`)

/** One Span as OTLP/JSON. */
export function spanJson(s: FinishedSpan): string {
  let out = `{"traceId":${str(s.traceId)},"spanId":${str(s.spanId)}`
  out += optional('traceState', s.traceState)
  out += optional('parentSpanId', s.parentSpanId)
  out += optional('name', s.name)
  out += `,"kind":${s.kind + 1},"startTimeUnixNano":"${epochNanosDecimal(s.startMs)}","endTimeUnixNano":"${epochNanosDecimal(s.endMs)}"`
  out += attributes(s.attributes)
  if (s.events.length > 0) {
    const events = s.events.map((e) => `{"timeUnixNano":"${epochNanosDecimal(e.timeMs)}"${optional('name', e.name)}${attributes(e.attributes)}}`)
    out += `,"events":[${events.join(',')}]`
  }
  if (s.links.length > 0) {
    const links = s.links.map((l) => `{"traceId":${str(l.traceId)},"spanId":${str(l.spanId)}${optional('traceState', l.traceState)}${attributes(l.attributes)}${l.flags === 0 ? '' : `,"flags":${l.flags >>> 0}`}}`)
    out += `,"links":[${links.join(',')}]`
  }
  const { code, message } = s.status
  if (code !== 0 || (message !== undefined && message !== '')) {
    const status = `${optional('message', message)}${code === 0 ? '' : `,"code":${code}`}`
    out += `,"status":{${status.slice(1)}}`
  }
  const flags = spanFlags(s)
  if (flags !== 0) out += `,"flags":${flags}`
  return `${out}}`
}

/** Resource and InstrumentationScope as OTLP/JSON, made once: what comes before a batch's spans. */
function envelopeHead(resource: Attributes, scope: { name: string; version?: string }): string {
  const scopeFields = `${optional('name', scope.name)}${optional('version', scope.version)}`
  return `{"resourceSpans":[{"resource":{${attributes(resource).slice(1)}},"scopeSpans":[{"scope":{${scopeFields.slice(1)}},"spans":[`
}

class JsonBatch implements SpanBatch {
  private spans: string[] = []

  constructor(private readonly head: string) {}

  add(span: FinishedSpan): void {
    this.spans.push(spanJson(span)) // made whole first: a span that throws leaves nothing
  }

  request(): Buffer {
    const body = Buffer.from(`${this.head}${this.spans.join(',')}]}]}]}`, 'utf8')
    this.spans = []
    return body
  }

  another(): SpanBatch {
    return new JsonBatch(this.head)
  }
}

/** An empty batch that writes ExportTraceServiceRequests in OTLP/JSON for this resource and scope. */
export function jsonBatch(resource: Attributes, scope: { name: string; version?: string }): SpanBatch {
  return new JsonBatch(envelopeHead(resource, scope))
}
