// The agent's span exporter: the batch span processor hands it the finished spans, and it posts them, as
// plain data (./plain-span.ts), to a worker thread (./export-worker.ts) that serializes them to OTLP protobuf
// and sends them. Serializing a batch of spans took the agent's event loop milliseconds at a time (longer
// while that code is still cold, as it stays in an agent that serves a few Requests a minute), delaying
// whatever Request was running then; on the worker it costs the Requests nothing but a copy.
//
// The worker's code is the bundled ./export-worker.ts, which build.mjs hands to dist/nsm-agent as a string
// (__NSM_TRACE_EXPORT_WORKER_JS__). Run from source (tsx) there is no such string: `startExporter` then gives
// the OTLP exporter itself, on the agent's thread.
//
// A worker that dies fails its pending exports and every later one (the spans are dropped, as an exporter
// that cannot reach its collector drops them); the agent goes on.
import { Worker } from 'node:worker_threads'
import type { Attributes } from '@opentelemetry/api'
import { ExportResultCode, type ExportResult } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-node'
import { plainOf } from './plain-span.js'
import type { FromExporter, ToExporter } from './export-worker.js'

/** Set by build.mjs to the bundled ./export-worker.ts; undefined when running from source. */
declare const __NSM_TRACE_EXPORT_WORKER_JS__: string | undefined

export function startExporter(): SpanExporter {
  if (typeof __NSM_TRACE_EXPORT_WORKER_JS__ !== 'string') return new OTLPTraceExporter()
  return new WorkerSpanExporter(new Worker(__NSM_TRACE_EXPORT_WORKER_JS__, { eval: true }))
}

export class WorkerSpanExporter implements SpanExporter {
  private next = 1
  private readonly pending = new Map<number, (r: FromExporter) => void>()
  private dead: Error | undefined
  private resource: ReadableSpan['resource'] | undefined

  constructor(private readonly worker: Worker) {
    // The worker never keeps the agent running: shutdown() ends it, and a crash ends it anyway.
    worker.unref()
    worker.on('message', (m: FromExporter) => {
      const done = this.pending.get(m.id)
      this.pending.delete(m.id)
      done?.(m)
    })
    const fail = (err: Error): void => {
      this.dead ??= err
      for (const done of this.pending.values()) done({ id: 0, code: ExportResultCode.FAILED, error: err.message })
      this.pending.clear()
    }
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`the span exporter's thread exited (code ${code})`)))
  }

  private call(make: (id: number) => ToExporter): Promise<FromExporter> {
    if (this.dead !== undefined) return Promise.resolve({ id: 0, code: ExportResultCode.FAILED, error: this.dead.message })
    const id = this.next++
    return new Promise((resolve) => {
      this.pending.set(id, resolve)
      this.worker.postMessage(make(id))
    })
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const first = spans[0]
    // The resource's attributes go with the first batch and whenever the spans' resource changes.
    let resource: Attributes | undefined
    if (first !== undefined && first.resource !== this.resource) {
      this.resource = first.resource
      resource = first.resource.attributes
    }
    const batch = spans.map(plainOf)
    void this.call((id) => ({ export: id, ...(resource === undefined ? {} : { resource }), spans: batch })).then((r) =>
      resultCallback(r.code === ExportResultCode.SUCCESS ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(r.error ?? 'export failed') }),
    )
  }

  async forceFlush(): Promise<void> {
    await this.call((id) => ({ flush: id }))
  }

  async shutdown(): Promise<void> {
    if (this.dead === undefined) await this.call((id) => ({ shutdown: id }))
    await this.worker.terminate()
  }
}
