// The agent's OTLP trace exporter (http/protobuf, grpc, or http/json). The recorder's spans (./span.ts) come in
// after they ended, several at a time, once the agent is idle (./idle-queue.ts); add() encodes each at once into
// the pending batch (./otlp-encode.ts's protobuf, a few µs, no object tree; or ./otlp-json.ts's OTLP/JSON), and
// batches are sent from timers and setImmediate callbacks, never from inside add(). How a batch travels is
// ./otlp-transport.ts.
//
// Settings are OpenTelemetry's standard variables, read once at construction; a bad value is a ConfigError
// naming the variable (agent/main.ts turns it into exit 2):
//   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is) or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; http: or https:
//                                            (grpc: either one as is, a host and port with no path; https: is TLS;
//                                            default http://localhost:4318/v1/traces, for grpc http://localhost:4317)
//   OTEL_EXPORTER_OTLP_[TRACES_]HEADERS      k=v,k2=v2, values URL-decoded; the TRACES_ form wins per key
//   OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT      ms, default 10000: one export, its retries included
//   OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION  gzip | none (default), gzip on libuv's threads (zlib async; grpc:
//                                            the channel's message compression)
//   OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE: PEM files for https
//   OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL     http/protobuf (default), grpc, or http/json (OTLP/JSON, POSTed as
//                                            application/json to the same URL); any other value is an error
//   OTEL_BSP_SCHEDULE_DELAY (5000 ms), OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512), OTEL_BSP_MAX_QUEUE_SIZE (2048),
//   OTEL_BSP_EXPORT_TIMEOUT (30000 ms): as the SDK's BatchSpanProcessor reads them, except that a batch
//   size above the queue size is refused (the SDK shrinks it quietly).
//
// One export at a time. What the transport calls retryable (./otlp-transport.ts: for http 429, 502, 503, 504
// and network errors; for grpc UNAVAILABLE and the other codes the specification names) is retried, backoff
// from 100 ms doubling or the server's own delay (Retry-After, RetryInfo), until the export's time is up; any
// other answer drops the batch. Problems go to `warn`, at most one report per kind per 10 s (the count of those held back
// rides on the next). Nothing here throws into the caller after construction.
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { createSecureContext } from 'node:tls'
import { promisify } from 'node:util'
import { gzip } from 'node:zlib'
import type { Attributes } from '@opentelemetry/api'
import { ConfigError } from '../config/config.js'
import { protobufBatch, type FinishedSpan, type SpanBatch } from './otlp-encode.js'
import { jsonBatch } from './otlp-json.js'
import { grpcMetadata, grpcTransport, httpTransport, type OtlpTransport } from './otlp-transport.js'

export type { FinishedSpan } from './otlp-encode.js'
export { retryAfterMs, retryInfoMs } from './otlp-transport.js'

export interface OtlpExporterOptions {
  /** The Resource's attributes (service.name, ...). */
  resource: Attributes
  /** The InstrumentationScope. */
  scope: { name: string; version?: string }
  /** Default process.env. */
  env?: NodeJS.ProcessEnv
  /** Reports problems (a failed export, dropped spans); the agent logs them. */
  warn?: (msg: string, fields?: Record<string, unknown>) => void
}

interface ExporterConfig {
  protocol: Protocol
  url: URL
  headers: Record<string, string>
  /** One export's time, retries included: the smaller of the OTLP timeout and OTEL_BSP_EXPORT_TIMEOUT. */
  exportMs: number
  gzip: boolean
  tls: { ca?: Buffer; key?: Buffer; cert?: Buffer }
  scheduleDelayMs: number
  maxBatch: number
  maxQueue: number
}

const PROTOCOLS = ['http/protobuf', 'grpc', 'http/json'] as const
type Protocol = (typeof PROTOCOLS)[number]
const isProtocol = (v: string): v is Protocol => (PROTOCOLS as readonly string[]).includes(v)

const REPORT_EVERY_MS = 10_000
const gzipAsync = promisify(gzip)

/** A variable's value, trimmed; an empty one counts as unset (the OpenTelemetry rule). */
function setting(env: NodeJS.ProcessEnv, ...names: string[]): { name: string; value: string } | undefined {
  for (const name of names) {
    const value = env[name]?.trim() ?? ''
    if (value !== '') return { name, value }
  }
  return undefined
}

function integer(env: NodeJS.ProcessEnv, names: string[], fallback: number, min: number): number {
  const s = setting(env, ...names)
  if (s === undefined) return fallback
  if (!/^\d+$/.test(s.value) || Number(s.value) < min) throw new ConfigError(s.name, `${JSON.stringify(s.value)} is not a whole number ≥ ${min}`)
  return Number(s.value)
}

/** Each list of k=v pairs that is set, by its variable, the TRACES_ one last (it wins per case-insensitive key). */
function headersOf(env: NodeJS.ProcessEnv): Array<{ name: string; headers: Record<string, string> }> {
  const lists: Array<{ name: string; headers: Record<string, string> }> = []
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']) {
    const raw = setting(env, name)?.value
    if (raw === undefined) continue
    const out: Record<string, string> = {}
    lists.push({ name, headers: out })
    for (const item of raw.split(',')) {
      if (item.trim() === '') continue
      const eq = item.indexOf('=')
      const key = item.slice(0, eq).trim().toLowerCase()
      if (eq < 0 || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(key)) throw new ConfigError(name, `${JSON.stringify(item)} is not key=value with a header name as key`)
      let value: string
      try {
        value = decodeURIComponent(item.slice(eq + 1).trim())
      } catch {
        throw new ConfigError(name, `the value of ${key} is not URL-encoded (a stray %?)`)
      }
      // What node:http refuses in a header value, refused here rather than on every export.
      if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) throw new ConfigError(name, `the value of ${key} has a character a header cannot carry`)
      out[key] = value
    }
  }
  return lists
}

function readPem(env: NodeJS.ProcessEnv, what: string): { name: string; pem: Buffer } | undefined {
  const s = setting(env, `OTEL_EXPORTER_OTLP_TRACES_${what}`, `OTEL_EXPORTER_OTLP_${what}`)
  if (s === undefined) return undefined
  try {
    return { name: s.name, pem: readFileSync(s.value) }
  } catch (err) {
    throw new ConfigError(s.name, `cannot read ${s.value}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
}

function configOf(env: NodeJS.ProcessEnv): ExporterConfig {
  const protocolSetting = setting(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL')
  const protocol = protocolSetting?.value ?? 'http/protobuf'
  if (!isProtocol(protocol)) throw new ConfigError(protocolSetting?.name ?? 'OTEL_EXPORTER_OTLP_PROTOCOL', `${JSON.stringify(protocol)} is not http/protobuf, grpc or http/json`)
  const grpc = protocol === 'grpc'
  const endpoint = setting(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')
  const base = setting(env, 'OTEL_EXPORTER_OTLP_ENDPOINT')
  const where = endpoint?.name ?? base?.name ?? 'OTEL_EXPORTER_OTLP_ENDPOINT'
  const raw = grpc ? (endpoint?.value ?? base?.value ?? 'http://localhost:4317') : (endpoint?.value ?? (base === undefined ? 'http://localhost:4318/v1/traces' : `${base.value.replace(/\/+$/, '')}/v1/traces`))
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(where, `${JSON.stringify(raw)} is not a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(where, `${JSON.stringify(raw)}: only http: and https: are served`)
  // A gRPC call goes to a host and port; a path there is most likely the http/protobuf endpoint by mistake.
  if (grpc && (url.pathname !== '/' || url.search !== '')) throw new ConfigError(where, `${JSON.stringify(raw)}: with ${protocolSetting?.name}=grpc the endpoint is a host and port, with no path`)

  const compression = setting(env, 'OTEL_EXPORTER_OTLP_TRACES_COMPRESSION', 'OTEL_EXPORTER_OTLP_COMPRESSION')
  if (compression !== undefined && compression.value !== 'gzip' && compression.value !== 'none') throw new ConfigError(compression.name, `${JSON.stringify(compression.value)} is not gzip or none`)

  const tls: ExporterConfig['tls'] = {}
  if (url.protocol === 'https:') {
    const ca = readPem(env, 'CERTIFICATE')
    const key = readPem(env, 'CLIENT_KEY')
    const cert = readPem(env, 'CLIENT_CERTIFICATE')
    const half = key ?? cert
    if (half !== undefined && (key === undefined || cert === undefined)) throw new ConfigError(half.name, `needs its pair too: OTEL_EXPORTER_OTLP_[TRACES_]${key === undefined ? 'CLIENT_KEY' : 'CLIENT_CERTIFICATE'}`)
    if (ca !== undefined) tls.ca = ca.pem
    if (key !== undefined) tls.key = key.pem
    if (cert !== undefined) tls.cert = cert.pem
    // Unusable PEM is an error now, named, not a warning on every export.
    const check = (name: string, test: () => unknown): void => {
      try {
        test()
      } catch (err) {
        throw new ConfigError(name, `not usable: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    if (ca !== undefined) check(ca.name, () => new X509Certificate(ca.pem)) // (a CA without any certificate passes createSecureContext)
    if (key !== undefined && cert !== undefined) check(`${key.name} with ${cert.name}`, () => createSecureContext({ key: key.pem, cert: cert.pem }))
  }

  const maxQueue = integer(env, ['OTEL_BSP_MAX_QUEUE_SIZE'], 2048, 1)
  const maxBatch = integer(env, ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE'], 512, 1)
  if (maxBatch > maxQueue) throw new ConfigError('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', `${maxBatch} is more than OTEL_BSP_MAX_QUEUE_SIZE (${maxQueue})`)
  const lists = headersOf(env)
  // What gRPC metadata cannot carry (a -bin key with a text value), named by the variable it came from.
  if (grpc) {
    for (const { name, headers } of lists) {
      try {
        grpcMetadata(headers)
      } catch (err) {
        throw new ConfigError(name, (err as Error).message)
      }
    }
  }
  const headers: Record<string, string> = Object.assign({}, ...lists.map((l) => l.headers))
  return {
    protocol,
    url,
    headers,
    exportMs: Math.min(integer(env, ['OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', 'OTEL_EXPORTER_OTLP_TIMEOUT'], 10_000, 1), integer(env, ['OTEL_BSP_EXPORT_TIMEOUT'], 30_000, 1)),
    gzip: compression?.value === 'gzip',
    tls,
    scheduleDelayMs: integer(env, ['OTEL_BSP_SCHEDULE_DELAY'], 5000, 0),
    maxBatch,
    maxQueue,
  }
}

/** Encoded spans waiting to be sent, up to one batch's worth. */
interface Chunk {
  batch: SpanBatch
  spans: number
}

export class OtlpTraceExporter {
  /** exported: spans the collector took; dropped: spans lost (queue full, export failed); failedExports: batches lost. */
  readonly stats = { exported: 0, dropped: 0, failedExports: 0 }

  private readonly cfg: ExporterConfig
  private readonly transport: OtlpTransport
  private readonly warnHook: OtlpExporterOptions['warn']
  /** The oldest first; the last one is being filled. */
  private readonly chunks: Chunk[]
  private readonly spare: SpanBatch[] = []
  /** Spans encoded and waiting (not yet taken by an export). */
  private queued = 0
  /** Spans queued so far, in all, and spans whose export finished (delivered or not): flush targets. */
  private added = 0
  private finished = 0
  /** Send partial chunks too until `finished` reaches this (a flush, the schedule delay). */
  private flushTo = 0
  private readonly flushWaiters: Array<{ target: number; resolve: () => void }> = []
  private inFlight: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  private immediate: NodeJS.Immediate | undefined
  private closed = false
  private readonly reported = new Map<string, { at: number; held: number }>()

  constructor(o: OtlpExporterOptions) {
    this.cfg = configOf(o.env ?? process.env)
    this.warnHook = o.warn
    const t = { url: this.cfg.url, headers: this.cfg.headers, gzip: this.cfg.gzip, tls: this.cfg.tls }
    const json = this.cfg.protocol === 'http/json'
    this.transport = this.cfg.protocol === 'grpc' ? grpcTransport(t) : httpTransport(t, gzipAsync, json ? 'json' : 'protobuf')
    this.chunks = [{ batch: (json ? jsonBatch : protobufBatch)(o.resource, o.scope), spans: 0 }]
  }

  /** Encodes the span now into the pending batch; a full batch is sent from a setImmediate. Never throws. */
  add(span: FinishedSpan): void {
    if (this.closed) return
    if (this.queued >= this.cfg.maxQueue) {
      this.stats.dropped++
      this.report('queue-full', 'spans dropped: the export queue is full (the collector is slow or unreachable)', { maxQueue: this.cfg.maxQueue, dropped: this.stats.dropped })
      return
    }
    let chunk = this.chunks[this.chunks.length - 1]!
    try {
      chunk.batch.add(span)
    } catch (err) {
      this.stats.dropped++
      this.report('encode', 'a span could not be encoded and was dropped', { span: span.name, err })
      return
    }
    chunk.spans++
    this.queued++
    this.added++
    if (chunk.spans >= this.cfg.maxBatch) {
      chunk = { batch: this.spare.pop() ?? chunk.batch.another(), spans: 0 }
      this.chunks.push(chunk)
      this.immediate ??= setImmediate(() => {
        this.immediate = undefined
        this.pump()
      })
    } else {
      this.timer ??= this.armTimer()
    }
  }

  /** Sends everything pending; resolves when those exports finished, delivered or not. */
  forceFlush(): Promise<void> {
    const target = this.added
    if (this.finished >= target) return Promise.resolve()
    this.flushTo = Math.max(this.flushTo, target)
    return new Promise<void>((resolve) => {
      this.flushWaiters.push({ target, resolve })
      this.pump()
    })
  }

  /** Sends what is pending, then stops; later add() calls are ignored. */
  async shutdown(): Promise<void> {
    this.closed = true
    await this.forceFlush()
    clearTimeout(this.timer)
    clearImmediate(this.immediate)
    this.transport.close()
  }

  private armTimer(): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.timer = undefined
      this.flushTo = Math.max(this.flushTo, this.added)
      this.pump()
    }, this.cfg.scheduleDelayMs)
    timer.unref()
    return timer
  }

  /** Starts the next export when none runs and a full chunk waits, or a flush asks for a partial one. */
  private pump(): void {
    if (this.inFlight !== undefined) return
    const first = this.chunks[0]!
    if (first.spans === 0 || (first.spans < this.cfg.maxBatch && this.finished >= this.flushTo)) return
    if (this.chunks.length === 1) this.chunks.push({ batch: this.spare.pop() ?? first.batch.another(), spans: 0 })
    this.chunks.shift()
    this.queued -= first.spans
    const body = first.batch.request()
    if (this.spare.length < 2) this.spare.push(first.batch)
    const spans = first.spans
    this.inFlight = this.exportBatch(body, spans)
      .catch((err: unknown) => {
        // exportBatch settles every outcome itself; this is a bug's last stop, not a path.
        this.stats.dropped += spans
        this.stats.failedExports++
        this.report('export-failed', 'a trace export failed', { spans, err })
      })
      .finally(() => {
        this.inFlight = undefined
        this.finished += spans
        for (let i = this.flushWaiters.length - 1; i >= 0; i--) {
          const w = this.flushWaiters[i]!
          if (w.target <= this.finished) {
            this.flushWaiters.splice(i, 1)
            w.resolve()
          }
        }
        this.pump()
        if (this.inFlight === undefined && this.chunks[0]!.spans > 0 && !this.closed) this.timer ??= this.armTimer()
      })
  }

  /** Sends one batch, retrying what may pass later, until the export's time is up. */
  private async exportBatch(body: Buffer, spans: number): Promise<void> {
    const deadline = performance.now() + this.cfg.exportMs
    let backoffMs = 100
    for (let attempt = 1; ; attempt++) {
      const d = await this.transport.send(body, deadline - performance.now())
      if (d.ok) {
        this.stats.exported += spans
        if (d.partial !== undefined) this.report('partial-success', 'the collector rejected spans of an export', { spans, ...d.partial })
        return
      }
      const waitMs = d.retryAfterMs ?? backoffMs
      if (!d.retryable || performance.now() + waitMs >= deadline) {
        this.stats.dropped += spans
        this.stats.failedExports++
        this.report(d.retryable ? 'export-failed' : 'export-rejected', `a trace export to ${this.cfg.url.href} failed`, { spans, attempts: attempt, ...d.fields })
        return
      }
      // Not unref'd: an export under way holds the process (for at most its time), or a shutdown's last
      // batch would be lost when nothing else is left to run.
      await new Promise((resolve) => setTimeout(resolve, waitMs))
      backoffMs = Math.min(backoffMs * 2, 5000)
    }
  }

  /** `warn`, at most once per kind per REPORT_EVERY_MS; `held` counts the reports held back since. */
  private report(kind: string, msg: string, fields: Record<string, unknown> = {}): void {
    const now = performance.now()
    const last = this.reported.get(kind)
    if (last !== undefined && now - last.at < REPORT_EVERY_MS) {
      last.held++
      return
    }
    this.reported.set(kind, { at: now, held: 0 })
    try {
      this.warnHook?.(msg, last === undefined || last.held === 0 ? fields : { ...fields, heldBack: last.held })
    } catch {
      // a logger that throws must not break the export path
    }
  }
}
