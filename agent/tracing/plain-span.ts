// A finished span as plain data, to cross into the exporter's thread (structured clone keeps no methods or
// prototypes): what the OTLP serializer reads of a ReadableSpan, nothing more. `plainOf` runs on the agent's
// thread for each exported span, `readableOf` in ./export-worker.ts.
import { createTraceState, type Attributes, type HrTime, type Link, type SpanContext, type SpanKind, type SpanStatus } from '@opentelemetry/api'
import type { Resource } from '@opentelemetry/resources'
import type { ReadableSpan } from '@opentelemetry/sdk-trace-node'

interface PlainContext {
  traceId: string
  spanId: string
  traceFlags: number
  /** The W3C tracestate, serialized; undefined when empty. */
  traceState: string | undefined
  isRemote: boolean | undefined
}

export interface PlainSpan {
  name: string
  kind: SpanKind
  context: PlainContext
  parent: PlainContext | undefined
  startTime: HrTime
  endTime: HrTime
  duration: HrTime
  status: SpanStatus
  attributes: Attributes
  events: ReadableSpan['events']
  links: Array<{ context: PlainContext; attributes: Attributes | undefined; droppedAttributesCount: number | undefined }>
  scope: { name: string; version: string | undefined; schemaUrl: string | undefined }
  droppedAttributesCount: number
  droppedEventsCount: number
  droppedLinksCount: number
}

const plainContext = (c: SpanContext): PlainContext => ({ traceId: c.traceId, spanId: c.spanId, traceFlags: c.traceFlags, traceState: c.traceState?.serialize() || undefined, isRemote: c.isRemote })

export function plainOf(s: ReadableSpan): PlainSpan {
  return {
    name: s.name,
    kind: s.kind,
    context: plainContext(s.spanContext()),
    parent: s.parentSpanContext === undefined ? undefined : plainContext(s.parentSpanContext),
    startTime: s.startTime,
    endTime: s.endTime,
    duration: s.duration,
    status: s.status,
    attributes: s.attributes,
    events: s.events,
    links: s.links.map((l) => ({ context: plainContext(l.context), attributes: l.attributes, droppedAttributesCount: l.droppedAttributesCount })),
    scope: { name: s.instrumentationScope.name, version: s.instrumentationScope.version, schemaUrl: s.instrumentationScope.schemaUrl },
    droppedAttributesCount: s.droppedAttributesCount,
    droppedEventsCount: s.droppedEventsCount,
    droppedLinksCount: s.droppedLinksCount,
  }
}

function contextOf(p: PlainContext): SpanContext {
  return {
    traceId: p.traceId,
    spanId: p.spanId,
    traceFlags: p.traceFlags,
    ...(p.traceState === undefined ? {} : { traceState: createTraceState(p.traceState) }),
    ...(p.isRemote === undefined ? {} : { isRemote: p.isRemote }),
  }
}

/**
 * The span as the exporter reads it. Spans of one resource share one Resource object and spans of one scope
 * one scope object (`scopes`): the OTLP serializer groups them by identity.
 */
export function readableOf(p: PlainSpan, resource: Resource, scopes: Map<string, ReadableSpan['instrumentationScope']>): ReadableSpan {
  const key = `${p.scope.name}\0${p.scope.version ?? ''}\0${p.scope.schemaUrl ?? ''}`
  let scope = scopes.get(key)
  if (scope === undefined) {
    scope = { name: p.scope.name, ...(p.scope.version === undefined ? {} : { version: p.scope.version }), ...(p.scope.schemaUrl === undefined ? {} : { schemaUrl: p.scope.schemaUrl }) }
    scopes.set(key, scope)
  }
  const context = contextOf(p.context)
  const links: Link[] = p.links.map((l) => ({ context: contextOf(l.context), ...(l.attributes === undefined ? {} : { attributes: l.attributes }), ...(l.droppedAttributesCount === undefined ? {} : { droppedAttributesCount: l.droppedAttributesCount }) }))
  return {
    name: p.name,
    kind: p.kind,
    spanContext: () => context,
    ...(p.parent === undefined ? {} : { parentSpanContext: contextOf(p.parent) }),
    startTime: p.startTime,
    endTime: p.endTime,
    duration: p.duration,
    status: p.status,
    attributes: p.attributes,
    links,
    events: p.events,
    ended: true,
    resource,
    instrumentationScope: scope,
    droppedAttributesCount: p.droppedAttributesCount,
    droppedEventsCount: p.droppedEventsCount,
    droppedLinksCount: p.droppedLinksCount,
  }
}
