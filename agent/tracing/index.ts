// agent/tracing: OpenTelemetry traces of the agent (ARCHITECTURE §13), loaded by agent/main.ts only when
// OTEL_EXPORTER_OTLP_ENDPOINT is set (nothing of OpenTelemetry is loaded otherwise). Spans go to that
// endpoint over OTLP http/protobuf (the exporter reads the standard OTEL_EXPORTER_OTLP_* and OTEL_BSP_*
// variables; OTEL_SERVICE_NAME names the service, default nsm-agent).
//
//   CNI <COMMAND>                 one per call the shim forwards (kind SERVER); its parent is the caller's W3C
//                                 trace context when the runtime passed one: CNI_ARGS TRACEPARENT=...
//                                 (TRACESTATE=...), or TRACEPARENT/TRACESTATE in the plugin's environment
//   NetworkService/Request|Close  one per call of the pipeline handler; inside a CNI call its child, otherwise
//                                 the child of the `traceparent` in the call's gRPC metadata (another agent's
//                                 forward element, an NSM client), else a root
//   <element> request|close       one per pipeline element that works in the call (nested as the elements call
//                                 each other; a call an element only hands on has none: pipeline/chain.ts)
//   heal                          one per heal of a connection, its re-Request's elements inside
//   netlink batch                 one per kernel batch (pkg/netlink's nsm:netlink:batch channel)
//
// Attributes: nsm.connection, nsm.service, nsm.pod (k8s.namespace.name, k8s.pod.name), nsm.endpoint,
// nsm.mechanism; errors mark the span ERROR with the error model's name (nsm.error) and CNI code.
// Between agents the context travels as `traceparent` in the peer call's metadata (`outgoing`), and so it does
// in the calls to NSM endpoints that serve the API (agent/pipeline/nse.ts, through the hook's `outgoing`).
//
// Cost (BENCHMARKS.md, observe): an element whose call only hands it on gets no span (agent/pipeline/chain.ts
// `observed`), span names and attributes of elements are made once, a span's child context once, and the
// spans are serialized and sent on a worker thread (./worker-exporter.ts), not on the agent's event loop.
import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api'
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node'
import type { TracingChannelSubscribers } from 'node:diagnostics_channel'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { AgentError } from '../errors.js'
import type { CniObserver } from '../cni/deps.js'
import type { CallSubject, PipelineObserver, PipelineOp } from '../pipeline/observe.js'
import type { CallContext } from '../server/handler.js'
import { batchChannel, type BatchTraceContext } from '../../pkg/netlink/rtnl.js'
import { findInScopes, scopeSlot } from '../server/call-scope.js'
import { startExporter } from './worker-exporter.js'

/**
 * The spans running, per call scope (agent/server/call-scope.ts): the innermost is the parent of the next
 * span. No OpenTelemetry context manager is registered: a second AsyncLocalStorage would cost every promise
 * of the agent; the call scope the logs already use carries the spans too.
 */
const SPANS = Symbol('tracing: spans running')

/** A span running, and the context its children start in (made once, when the first child starts). */
interface Running {
  readonly span: Span
  context: Context | undefined
}

const top = (stack: Running[]): Running | undefined => stack[stack.length - 1]

function currentSpan(): Running | undefined {
  return findInScopes(SPANS, top)
}

/** The context a child of `r` starts in. */
function contextOf(r: Running | undefined): Context {
  if (r === undefined) return ROOT_CONTEXT
  return (r.context ??= trace.setSpan(ROOT_CONTEXT, r.span))
}

export interface Tracing {
  readonly pipeline: PipelineObserver
  readonly cni: CniObserver
  /** The current trace context as gRPC metadata (`traceparent`, `tracestate`), for calls to other agents. */
  outgoing(): Record<string, string>
  /** Ends the netlink subscription, exports what is buffered. */
  shutdown(): Promise<void>
}

export interface TracingOptions {
  nodeName: string
  version: string
}

function podAttributes(pod: string | undefined): Attributes {
  if (pod === undefined) return {}
  const slash = pod.indexOf('/')
  return { 'nsm.pod': pod, 'k8s.namespace.name': pod.slice(0, slash), 'k8s.pod.name': pod.slice(slash + 1) }
}

function subjectAttributes(s: CallSubject): Attributes {
  return { 'nsm.connection': s.connection, 'nsm.service': s.service, ...podAttributes(s.pod) }
}

function failed(span: Span, err: unknown): void {
  const e = AgentError.from(err)
  span.recordException(err instanceof Error ? err : new Error(String(err)))
  span.setAttributes({ 'nsm.error': e.code, 'nsm.cni_code': e.cniCode })
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message })
}

export function startTracing(o: TracingOptions): Tracing {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? 'nsm-agent', 'service.version': o.version, 'k8s.node.name': o.nodeName, 'host.name': o.nodeName }),
    // The exporter serializes and sends on a thread of its own (./worker-exporter.ts).
    spanProcessors: [new BatchSpanProcessor(startExporter())],
  })
  // The W3C trace-context propagator; no context manager (see SPANS).
  provider.register({ contextManager: null })
  const tracer = provider.getTracer('nsm-agent', o.version)

  /**
   * Runs `run` as a new span, the innermost of its call scope while it runs (the parent of what starts inside
   * it); `done` adds what is known once it succeeded.
   */
  const inSpan = async <T>(name: string, kind: SpanKind, attributes: Attributes, parent: Context, run: () => Promise<T>, done?: (span: Span, out: T) => void): Promise<T> => {
    const span = tracer.startSpan(name, { kind, attributes }, parent)
    const running: Running = { span, context: undefined }
    const stack = scopeSlot(SPANS, (): Running[] => [])
    stack?.push(running)
    try {
      const out = await run()
      done?.(span, out)
      return out
    } catch (err) {
      failed(span, err)
      throw err
    } finally {
      if (stack !== undefined && stack[stack.length - 1] === running) stack.pop()
      span.end()
    }
  }

  /** An element's span name and attributes, made once per element and operation (the SDK copies attributes). */
  const elementSpans = new Map<string, Record<PipelineOp, { name: string; attributes: Attributes }>>()
  const elementSpan = (element: string, op: PipelineOp): { name: string; attributes: Attributes } => {
    let e = elementSpans.get(element)
    if (e === undefined) {
      const attributes = { 'nsm.element': element }
      e = { request: { name: `${element} request`, attributes }, close: { name: `${element} close`, attributes } }
      elementSpans.set(element, e)
    }
    return e[op]
  }

  /** The parent of a Request or Close: the span running now (a CNI call, a heal), else the caller's metadata. */
  const parentOf = (ctx: CallContext): Context => {
    const running = currentSpan()
    if (running !== undefined) return contextOf(running)
    const tp = ctx.metadata.get('traceparent')
    if (tp === undefined) return ROOT_CONTEXT
    const ts = ctx.metadata.get('tracestate')
    return propagation.extract(ROOT_CONTEXT, { traceparent: tp, ...(ts === undefined ? {} : { tracestate: ts }) })
  }

  /** The running span's trace context as metadata (`traceparent`, `tracestate`) for a call to another process. */
  const outgoing = (): Record<string, string> => {
    const running = currentSpan()
    if (running === undefined) return {}
    const carrier: Record<string, string> = {}
    propagation.inject(contextOf(running), carrier)
    return carrier
  }

  const pipeline: PipelineObserver = {
    outgoing,
    // Only inside a traced call: a remote half's periodic refresh runs the elements with no call around them.
    element: (element, op, run) => {
      const parent = currentSpan()
      if (parent === undefined) return run()
      const { name, attributes } = elementSpan(element, op)
      return inSpan(name, SpanKind.INTERNAL, attributes, contextOf(parent), run)
    },
    request: (subject, ctx, run) =>
      inSpan('NetworkService/Request', SpanKind.SERVER, subjectAttributes(subject), parentOf(ctx), run, (span, conn) => {
        span.setAttributes({ 'nsm.endpoint': conn.networkServiceEndpointName, 'nsm.mechanism': conn.mechanism?.type ?? '' })
      }),
    close: (subject, ctx, record, run) =>
      inSpan('NetworkService/Close', SpanKind.SERVER, { ...subjectAttributes(subject), ...(record === undefined ? {} : { 'nsm.endpoint': record.endpointName, 'nsm.mechanism': record.mechanism.type }) }, parentOf(ctx), run),
    heal: (subject, reason, run) =>
      inSpan('heal', SpanKind.INTERNAL, { ...subjectAttributes(subject), 'nsm.heal.reason': reason }, ROOT_CONTEXT, run, (span, healed) => {
        span.setAttribute('nsm.heal.outcome', healed ? 'healed' : 'down')
        if (!healed) span.setStatus({ code: SpanStatusCode.ERROR, message: 'no replacement: the connection stays DOWN' })
      }),
  }

  const cni: CniObserver = (call, run) => {
    const parent = call.traceparent === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, { traceparent: call.traceparent, ...(call.tracestate === undefined ? {} : { tracestate: call.tracestate }) })
    const attributes: Attributes = { 'cni.command': call.command, 'cni.container_id': call.containerId, 'cni.ifname': call.ifname, ...podAttributes(call.pod) }
    return inSpan(`CNI ${call.command}`, SpanKind.SERVER, attributes, parent, run, (span, answer) => {
      span.setAttribute('cni.exit_code', answer.exitCode)
      if (answer.exitCode !== 0) {
        let msg = answer.stdout
        try {
          const e = JSON.parse(answer.stdout) as { code?: number; msg?: string }
          if (typeof e.code === 'number') span.setAttribute('nsm.cni_code', e.code)
          msg = e.msg ?? msg
        } catch {
          // not error JSON: the output as it is
        }
        span.setStatus({ code: SpanStatusCode.ERROR, message: msg })
      }
    })
  }

  // Kernel batches: a span per batch, the child of whatever span is active where the batch is sent.
  const spans = new WeakMap<BatchTraceContext, Span>()
  const batches: TracingChannelSubscribers<BatchTraceContext> = {
    start(m) {
      const parent = currentSpan()
      if (parent === undefined) return // a batch outside any traced call (the reaper's)
      const attributes: Attributes = { 'netlink.messages': m.messages, 'netlink.first': m.what }
      if (m.netns !== undefined) attributes['netlink.netns'] = m.netns
      spans.set(m, tracer.startSpan('netlink batch', { kind: SpanKind.CLIENT, attributes }, contextOf(parent)))
    },
    end() {},
    asyncStart() {},
    asyncEnd(m) {
      spans.get(m)?.end()
    },
    error(m) {
      const span = spans.get(m)
      if (span === undefined) return
      const err = m.error instanceof Error ? m.error : new Error(String(m.error))
      span.recordException(err)
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message })
    },
  }
  batchChannel.subscribe(batches)

  return {
    pipeline,
    cni,
    outgoing,
    async shutdown() {
      batchChannel.unsubscribe(batches)
      await provider.shutdown()
    },
  }
}
