// What the exporter's unit tests share (test/unit/otlp-export*.test.ts: agent/tracing/otlp.ts over
// http/protobuf and http/json): spans to send, among them one of every field and attribute type, an exporter
// from variables that records its reports, and a loopback HTTP server that records each request as received.
import type { Test } from 'tap'
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { OtlpTraceExporter, type FinishedSpan } from '../../agent/tracing/otlp.js'
import { pollUntil } from './wait.js'

export const RESOURCE = { 'service.name': 'nsm-agent', 'service.version': '0.1.0', 'k8s.node.name': 'node-a' }
export const SCOPE = { name: 'nsm-agent', version: '0.1.0' }
/** No variable of this process leaks in; exports time out soon, so a teardown never waits long. */
export const BASE = { OTEL_EXPORTER_OTLP_TIMEOUT: '2000', OTEL_BSP_SCHEDULE_DELAY: '60000' }

let seq = 0
/** A span with a parent, two attributes, no events or links; each call a new id. */
export function span(over: Partial<FinishedSpan> = {}): FinishedSpan {
  const n = (++seq).toString(16).padStart(16, '0')
  return {
    traceId: `4bf92f3577b34da6${n}`,
    spanId: n,
    parentSpanId: '00f067aa0ba902b7',
    traceState: undefined,
    flags: 1,
    parentIsRemote: false,
    name: `span ${seq}`,
    kind: 0,
    startMs: 1_700_000_000_000 + seq,
    endMs: 1_700_000_000_001 + seq,
    attributes: { 'nsm.connection': `conn-${seq}`, 'nsm.service': 'web' },
    events: [],
    links: [],
    status: { code: 0 },
    ...over,
  }
}

/** Attribute values of every type the encoders write; `skipped` (undefined) must not arrive. */
export const EVERY_TYPE = {
  str: 'text',
  empty: '',
  neg: -5,
  minSafe: Number.MIN_SAFE_INTEGER,
  maxSafe: Number.MAX_SAFE_INTEGER,
  zero: 0,
  beyond32: 2 ** 40 + 3,
  dbl: 1.5,
  negDbl: -0.25,
  yes: true,
  no: false,
  strings: ['a', 'b'],
  numbers: [1, 2.5, -3],
  bools: [true, false],
  none: [],
  unicode: 'é✓😀',
  mid: 'y'.repeat(50), // protobuf: reserved a 2-byte length, needs 1
  long: 'x'.repeat(200), // protobuf: needs a 2-byte length
  skipped: undefined,
}

/**
 * Every field set: trace state, a remote parent, SERVER, times with binary fractions of a millisecond (so
 * that the exact nanoseconds are known; 2^-11 ms is lost by a naive ms × 10^6), attributes of every type,
 * two events and two links (one with all its fields, one with none), an ERROR status with a message.
 */
export function fullSpan(attributes: FinishedSpan['attributes'] = EVERY_TYPE): FinishedSpan {
  return span({
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    parentSpanId: '00f067aa0ba902b7',
    traceState: 'vendor=opaque,other=x',
    flags: 1,
    parentIsRemote: true,
    name: 'NetworkService/Request',
    kind: 1,
    startMs: 1_700_000_000_123.5 + 2 ** -11,
    endMs: 1_700_000_000_456.25,
    attributes,
    events: [
      { name: 'exception', timeMs: 1_700_000_000_200 + 2 ** -12, attributes: { 'exception.message': 'boom', 'exception.type': 'Error' } },
      { name: 'plain', timeMs: 1_700_000_000_300 },
    ],
    links: [
      { traceId: '11111111111111111111111111111111', spanId: '2222222222222222', traceState: 'a=b', flags: 1, attributes: { 'link.why': 'follows' } },
      { traceId: '33333333333333333333333333333333', spanId: '4444444444444444', flags: 0 },
    ],
    status: { code: 2, message: 'it failed' },
  })
}

/** A root (no parent, unsampled, nothing set) and a span with a local parent (CONSUMER, OK). */
export const rootSpan = (): FinishedSpan => span({ parentSpanId: undefined, flags: 0, attributes: {}, kind: 0, status: { code: 0 } })
export const localSpan = (): FinishedSpan => span({ kind: 4, status: { code: 1 } })

export type Warning = [string, Record<string, unknown> | undefined]

/** An exporter from BASE and `env`, its reports pushed to `warnings`, shut down at teardown. */
export function exporterFor(t: Test, env: Record<string, string>, warnings: Warning[] = []): OtlpTraceExporter {
  const e = new OtlpTraceExporter({ resource: RESOURCE, scope: SCOPE, env: { ...BASE, ...env }, warn: (msg, fields) => warnings.push([msg, fields]) })
  t.teardown(() => e.shutdown())
  return e
}

export interface Hit {
  url: string
  headers: IncomingHttpHeaders
  /** As received (gzipped when it was sent so). */
  body: Buffer
}

/** An HTTP server recording each request; `answer` replies (default 200, empty body). */
export async function rawServer(t: Test, answer: (hit: Hit, n: number, res: ServerResponse) => void = (_h, _n, res) => void res.writeHead(200).end()): Promise<{ url: string; hits: Hit[]; server: Server }> {
  const hits: Hit[] = []
  const server = createServer((req, res) => void record(req, hits).then((hit) => answer(hit, hits.length, res)))
  return { url: await listen(t, server, 'http'), hits, server }
}

export async function record(req: IncomingMessage, hits: Hit[]): Promise<Hit> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  const hit = { url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) }
  hits.push(hit)
  return hit
}

export async function listen(t: Test, server: Server, scheme: string): Promise<string> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** Polls `cond` every 10 ms until it holds; throws naming `what` after `ms`. */
export const until = (what: string, cond: () => boolean, ms = 3000): Promise<number> => pollUntil(what, cond, ms, 10)
