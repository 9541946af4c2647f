// The span exporter's thread (./worker-exporter.ts starts it): turns the batches of finished spans the agent's
// thread posts (plain data, ./plain-span.ts) back into what the OTLP exporter reads and sends them with
// @opentelemetry/exporter-trace-otlp-proto, which reads the standard OTEL_EXPORTER_OTLP_* variables (a
// worker's environment is a copy of the agent's). Serializing spans to protobuf and the HTTP requests run
// here, off the thread that serves Requests. build.mjs bundles this file into dist/nsm-agent as a string.
//
// Messages in: { export: id, resource?, spans } (resource: the spans' resource attributes, sent when they
// change), { flush: id }, { shutdown: id }. Out: { id, code, error? } once each is done.
import { parentPort } from 'node:worker_threads'
import type { Attributes } from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-node'
import { readableOf, type PlainSpan } from './plain-span.js'

export type ToExporter = { export: number; resource?: Attributes; spans: PlainSpan[] } | { flush: number } | { shutdown: number }
export interface FromExporter {
  id: number
  /** ExportResultCode: 0 SUCCESS, 1 FAILED. */
  code: number
  error?: string
}

const port = parentPort
if (port === null) throw new Error('export-worker: runs as a worker thread only')
const exporter = new OTLPTraceExporter()
let resource: Resource = resourceFromAttributes({})
const scopes = new Map<string, ReadableSpan['instrumentationScope']>()

port.on('message', (m: ToExporter) => {
  if ('export' in m) {
    if (m.resource !== undefined) resource = resourceFromAttributes(m.resource)
    const spans = m.spans.map((p) => readableOf(p, resource, scopes))
    exporter.export(spans, (r) => port.postMessage({ id: m.export, code: r.code, ...(r.error === undefined ? {} : { error: r.error.message }) } satisfies FromExporter))
  } else if ('flush' in m) {
    exporter.forceFlush().then(
      () => port.postMessage({ id: m.flush, code: 0 } satisfies FromExporter),
      (err: unknown) => port.postMessage({ id: m.flush, code: 1, error: String(err) } satisfies FromExporter),
    )
  } else {
    exporter.shutdown().then(
      () => port.postMessage({ id: m.shutdown, code: 0 } satisfies FromExporter),
      (err: unknown) => port.postMessage({ id: m.shutdown, code: 1, error: String(err) } satisfies FromExporter),
    )
  }
})
