// How the OTLP trace exporter (./otlp.ts) delivers one encoded ExportTraceServiceRequest: a POST over
// http/protobuf or http/json (OTEL_EXPORTER_OTLP_PROTOCOL=http/json: the request in OTLP/JSON, ./otlp-json.ts),
// or a unary call of opentelemetry.proto.collector.trace.v1.TraceService/Export over gRPC
// (OTEL_EXPORTER_OTLP_PROTOCOL=grpc). All answer with an ExportTraceServiceResponse, in the request's encoding
// (read here: its partial_success); what differs is how an answer says "retry later". Each send settles as one
// `Delivery` and never rejects: the exporter decides about retries and reports.
//
// What is retried, as the OTLP specification says:
//   http/*         429, 502, 503, 504 and network errors; Retry-After (seconds or an HTTP-date) sets the wait
//   grpc           CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and
//                  RESOURCE_EXHAUSTED only when the server's status details carry a google.rpc.RetryInfo
//                  (whose retry_delay sets the wait)
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire'
import { Client, credentials, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js'
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'

/** ExportTracePartialSuccess, when the collector set it: spans it rejected (maybe 0) and why. */
export interface PartialSuccess {
  rejectedSpans: number
  message: string
}

/** One send's outcome: delivered (with the collector's partial success, if any), or why not and whether a later try may pass. */
export type Delivery =
  | { ok: true; partial: PartialSuccess | undefined }
  | { ok: false; retryable: boolean; retryAfterMs: number | undefined; fields: Record<string, unknown> }

export interface OtlpTransport {
  /** Sends one request's bytes, given up after `timeoutMs`; never rejects. */
  send(payload: Buffer, timeoutMs: number): Promise<Delivery>
  close(): void
}

export interface TransportOptions {
  url: URL
  headers: Record<string, string>
  gzip: boolean
  tls: { ca?: Buffer; key?: Buffer; cert?: Buffer }
}

const HTTP_RETRYABLE = new Set([429, 502, 503, 504])

/** http/protobuf or http/json: one POST at a time over a keep-alive agent; the body gzipped here when asked. */
export function httpTransport(o: TransportOptions, gzip: (b: Buffer) => Promise<Buffer>, encoding: 'protobuf' | 'json' = 'protobuf'): OtlpTransport {
  const https = o.url.protocol === 'https:'
  const agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ...o.tls }) : new HttpAgent({ keepAlive: true, maxSockets: 1 })
  const request = https ? httpsRequest : httpRequest
  const contentType = encoding === 'json' ? 'application/json' : 'application/x-protobuf'
  const answer = encoding === 'json' ? jsonPartialSuccess : partialSuccess
  const post = (payload: Buffer, timeoutMs: number): Promise<Delivery> =>
    new Promise<Delivery>((resolve) => {
      const headers: Record<string, string | number> = { ...o.headers, 'content-type': contentType, 'content-length': payload.length }
      if (o.gzip) headers['content-encoding'] = 'gzip'
      const req = request(o.url, { method: 'POST', agent, headers })
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${Math.round(timeoutMs)} ms`)), Math.max(timeoutMs, 1))
      const done = (d: Delivery): void => {
        clearTimeout(timer)
        resolve(d)
      }
      const failed = (error: Error): void => done({ ok: false, retryable: true, retryAfterMs: undefined, fields: { err: error.message } })
      req.once('error', failed)
      req.once('response', (res: IncomingMessage) => {
        // Keep the start of the body (a collector's reason, partial_success); read the rest to free the socket.
        const kept: Buffer[] = []
        let size = 0
        res.on('data', (d: Buffer) => {
          if (size < 4096) kept.push(d)
          size += d.length
        })
        res.once('error', failed)
        res.once('close', () => failed(new Error('the answer was cut off'))) // after 'end' this changes nothing
        res.once('end', () => {
          const status = res.statusCode ?? 0
          const body = Buffer.concat(kept)
          if (status >= 200 && status < 300) done({ ok: true, partial: answer(body) })
          else done({ ok: false, retryable: HTTP_RETRYABLE.has(status), retryAfterMs: retryAfterMs(res.headers['retry-after']), fields: { status, body: body.subarray(0, 200).toString('utf8') } })
        })
      })
      req.end(payload)
    })
  return {
    send: async (payload, timeoutMs) => post(o.gzip ? await gzip(payload) : payload, timeoutMs),
    close: () => agent.destroy(),
  }
}

const EXPORT_METHOD = '/opentelemetry.proto.collector.trace.v1.TraceService/Export'
const GRPC_RETRYABLE = new Set([GrpcStatus.CANCELLED, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.ABORTED, GrpcStatus.OUT_OF_RANGE, GrpcStatus.UNAVAILABLE, GrpcStatus.DATA_LOSS])
/** grpc-js's channel option value for gzip (its CompressionAlgorithms enum). */
const GRPC_GZIP = 2
const passThrough = (b: Buffer): Buffer => b

/**
 * The gRPC metadata the variables' headers become; throws naming the header a gRPC call cannot carry (a
 * `-bin` key needs bytes, not text).
 */
export function grpcMetadata(headers: Record<string, string>): Metadata {
  const md = new Metadata()
  for (const [k, v] of Object.entries(headers)) {
    try {
      md.set(k, v)
    } catch (err) {
      throw new Error(`header ${k} cannot go in gRPC metadata: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  return md
}

/** grpc: unary Export calls on one channel to the endpoint's host and port (TLS for https:). */
export function grpcTransport(o: TransportOptions): OtlpTransport {
  const https = o.url.protocol === 'https:'
  const target = `${o.url.hostname}:${o.url.port || (https ? 443 : 80)}`
  const creds = https ? credentials.createSsl(o.tls.ca ?? null, o.tls.key ?? null, o.tls.cert ?? null) : credentials.createInsecure()
  // No retries of grpc-js's own: the exporter retries, within the export's time, what the specification allows.
  const client = new Client(target, creds, { 'grpc.enable_retries': 0, ...(o.gzip ? { 'grpc.default_compression_algorithm': GRPC_GZIP } : {}) })
  const metadata = grpcMetadata(o.headers)
  return {
    send: (payload, timeoutMs) =>
      new Promise<Delivery>((resolve) => {
        client.makeUnaryRequest(EXPORT_METHOD, passThrough, passThrough, payload, metadata.clone(), { deadline: Date.now() + Math.max(timeoutMs, 1) }, (err: ServiceError | null, body?: Buffer) => {
          if (err === null) {
            resolve({ ok: true, partial: partialSuccess(body ?? Buffer.alloc(0)) })
            return
          }
          const delay = err.code === GrpcStatus.RESOURCE_EXHAUSTED || GRPC_RETRYABLE.has(err.code) ? retryInfoMs(err.metadata?.get('grpc-status-details-bin')[0]) : undefined
          const retryable = GRPC_RETRYABLE.has(err.code) || (err.code === GrpcStatus.RESOURCE_EXHAUSTED && delay !== undefined)
          resolve({ ok: false, retryable, retryAfterMs: delay, fields: { grpcStatus: GrpcStatus[err.code] ?? err.code, message: err.details.slice(0, 200) } })
        })
      }),
    close: () => client.close(),
  }
}

/**
 * The fields of one protobuf message (@bufbuild/protobuf's reader, the one the generated API code uses):
 * varints as numbers, length-delimited fields as bytes, the rest skipped; undefined when malformed.
 */
function fieldsOf(b: Uint8Array): Array<{ field: number; varint?: number; bytes?: Uint8Array }> | undefined {
  const out: Array<{ field: number; varint?: number; bytes?: Uint8Array }> = []
  try {
    const r = new BinaryReader(b)
    while (r.pos < r.len) {
      const [field, type] = r.tag()
      if (type === WireType.Varint) out.push({ field, varint: Number(r.uint64()) })
      else if (type === WireType.LengthDelimited) out.push({ field, bytes: r.bytes() })
      else r.skip(type, field)
    }
  } catch {
    return undefined
  }
  return out
}

/**
 * ExportTraceServiceResponse.partial_success (1){ rejected_spans (1, int64), error_message (2) } when the
 * collector set it; undefined for an empty or unreadable body (it is advice, not the export's outcome).
 */
export function partialSuccess(body: Buffer): PartialSuccess | undefined {
  const ps = fieldsOf(body)?.find((f) => f.field === 1)?.bytes
  const fields = ps === undefined ? undefined : fieldsOf(ps)
  if (fields === undefined) return undefined
  const rejectedSpans = fields.find((f) => f.field === 1)?.varint ?? 0
  const bytes = fields.find((f) => f.field === 2)?.bytes
  const message = bytes === undefined ? '' : Buffer.from(bytes).toString('utf8')
  return rejectedSpans === 0 && message === '' ? undefined : { rejectedSpans, message }
}

/**
 * The same in OTLP/JSON: {"partialSuccess": {"rejectedSpans": "3" (an int64: a decimal string, or a number),
 * "errorMessage": "..."}}; undefined when absent, empty or unreadable.
 */
export function jsonPartialSuccess(body: Buffer): PartialSuccess | undefined {
  let answer: unknown
  try {
    answer = JSON.parse(body.toString('utf8'))
  } catch {
    return undefined
  }
  const ps: unknown = typeof answer === 'object' && answer !== null ? (answer as { partialSuccess?: unknown }).partialSuccess : undefined
  if (typeof ps !== 'object' || ps === null) return undefined
  const { rejectedSpans: rejected, errorMessage } = ps as { rejectedSpans?: unknown; errorMessage?: unknown }
  const rejectedSpans = typeof rejected === 'number' || (typeof rejected === 'string' && /^\d+$/.test(rejected)) ? Number(rejected) : 0
  const message = typeof errorMessage === 'string' ? errorMessage : ''
  return rejectedSpans === 0 && message === '' ? undefined : { rejectedSpans, message }
}

/**
 * The retry_delay of a google.rpc.RetryInfo among a google.rpc.Status's details (grpc-status-details-bin), in
 * ms; undefined when there is none.
 */
export function retryInfoMs(details: unknown): number | undefined {
  if (!Buffer.isBuffer(details)) return undefined
  for (const d of fieldsOf(details) ?? []) {
    if (d.field !== 3 || d.bytes === undefined) continue // Status.details: repeated Any
    const any = fieldsOf(d.bytes) ?? []
    const typeUrl = any.find((f) => f.field === 1)?.bytes
    const value = any.find((f) => f.field === 2)?.bytes
    if (typeUrl === undefined || !Buffer.from(typeUrl).toString('utf8').endsWith('/google.rpc.RetryInfo') || value === undefined) continue
    const duration = (fieldsOf(value) ?? []).find((f) => f.field === 1)?.bytes // RetryInfo.retry_delay
    if (duration === undefined) return 0
    const parts = fieldsOf(duration) ?? []
    const seconds = parts.find((f) => f.field === 1)?.varint ?? 0
    const nanos = parts.find((f) => f.field === 2)?.varint ?? 0
    return Math.max(0, seconds * 1000 + Math.floor(nanos / 1e6))
  }
  return undefined
}

/** Retry-After (RFC 9110: delay-seconds, or an HTTP-date) as ms from now; undefined when absent or unreadable. */
export function retryAfterMs(v: string | undefined, now = Date.now()): number | undefined {
  const s = v?.trim() ?? ''
  if (s === '') return undefined
  if (/^\d+$/.test(s)) return Number(s) * 1000
  // An HTTP-date names a day of the week and GMT (IMF-fixdate, or the obsolete RFC 850 and asctime forms).
  if (!/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)/.test(s)) return undefined
  const at = Date.parse(/GMT$/.test(s) ? s : `${s} GMT`)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}
