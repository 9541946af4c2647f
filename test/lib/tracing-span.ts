// Helpers for the unit tests of agent/tracing/span.ts (test/unit/tracing-span*.test.ts): a recorder over a
// sink that collects what ends (no exporter, no network), a context from another process, and a check that
// a span was recorded.
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { createTraceState, ROOT_CONTEXT, TraceFlags, trace, type Context, type Span, type SpanContext } from '@opentelemetry/api'
import { RecordedSpan, samplerFromEnv, SpanRecorder, type SpanSink } from '../../agent/tracing/span.js'
import type { FinishedSpan } from '../../agent/tracing/otlp.js'

export const HEX32 = /^[0-9a-f]{32}$/
export const HEX16 = /^[0-9a-f]{16}$/

export class CollectingSink implements SpanSink {
  readonly spans: FinishedSpan[] = []
  add(span: FinishedSpan): void {
    this.spans.push(span)
  }
}

/** A recorder with the sampler `env` names (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) and its sink. */
export function recorderWith(env: NodeJS.ProcessEnv = {}): { recorder: SpanRecorder; sink: CollectingSink } {
  const sink = new CollectingSink()
  return { recorder: new SpanRecorder(sink, samplerFromEnv(env)), sink }
}

export const hex = (bytes: number): string => randomBytes(bytes).toString('hex')

/** A valid context from another process (what a `traceparent` header gives). */
export function remoteContext(sampled: boolean, traceState?: string): SpanContext {
  return {
    traceId: hex(16),
    spanId: hex(8),
    traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
    ...(traceState === undefined ? {} : { traceState: createTraceState(traceState) }),
  }
}

export const withRemote = (sc: SpanContext): Context => trace.setSpanContext(ROOT_CONTEXT, sc)

/** A recorded span (fails the test when the recorder did not record). */
export function recorded(t: Test, span: Span): RecordedSpan {
  t.type(span, RecordedSpan, 'the span is recorded')
  if (!(span instanceof RecordedSpan)) throw new Error('expected a RecordedSpan')
  return span
}
