// agent/tracing: OpenTelemetry traces of the agent (ARCHITECTURE §13), loaded by agent/main.ts only when
// OTEL_EXPORTER_OTLP_ENDPOINT is set (nothing of OpenTelemetry is loaded otherwise). Spans go to that
// endpoint over OTLP, http/protobuf unless OTEL_EXPORTER_OTLP_PROTOCOL says grpc or http/json (the exporter
// reads the standard OTEL_EXPORTER_OTLP_* and OTEL_BSP_* variables; OTEL_SERVICE_NAME names the service,
// default nsm-agent).
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
//   netlink batch                 one per kernel batch (pkg/netlink's batch watcher)
//
// Attributes: nsm.connection, nsm.service, nsm.pod (k8s.namespace.name, k8s.pod.name), nsm.endpoint,
// nsm.mechanism; errors mark the span ERROR with the error model's name (nsm.error) and CNI code.
// Between agents the context travels as `traceparent` in the peer call's metadata (`outgoing`), and so it does
// in the calls to NSM endpoints that serve the API (agent/pipeline/nse.ts, through the hook's `outgoing`).
//
// Cost (BENCHMARKS.md, observe): spans are the agent's own lean recorder behind @opentelemetry/api's
// interfaces (./span.ts: the SDK's samplers, not its span objects or ids; an id made when first read), encoded
// into OTLP protobuf once the agent is idle (./idle-queue.ts, ./otlp.ts); an element whose call only hands it on
// gets no span (agent/pipeline/chain.ts `observed`), element span names and attributes are made once, and a
// span lives on the frame the chain or the handler makes for every observer (agent/pipeline/observe.ts
// CallFrame, told to the hooks synchronously: no promise of tracing's own).
import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type SpanContext } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { AgentError } from '../errors.js'
import type { CniObserver } from '../cni/deps.js'
import { CallFrame, frameStack, popFrame, pushFrame, runningFrame, type CallSubject, type PipelineObserver, type PipelineOp } from '../pipeline/observe.js'
import type { CallContext } from '../server/handler.js'
import { watchBatches, type BatchWatch } from '../../pkg/netlink/rtnl.js'
import { performance } from 'node:perf_hooks'
import { IdleSpanQueue } from './idle-queue.js'
import { OtlpTraceExporter } from './otlp.js'
import { ORIGIN_MS, RecordedSpan, samplerFromEnv, SpanRecorder, type Parent } from './span.js'

const propagator = new W3CTraceContextPropagator()

/** The trace context in `traceparent` (and `tracestate`) from another process; undefined when absent or invalid. */
function remoteParent(traceparent: string | undefined, tracestate: string | undefined): Parent {
  if (traceparent === undefined) return undefined
  const ctx = propagator.extract(ROOT_CONTEXT, { traceparent, ...(tracestate === undefined ? {} : { tracestate }) }, { get: (c, k) => c[k as 'traceparent'], keys: (c) => Object.keys(c) })
  const sc: SpanContext | undefined = trace.getSpanContext(ctx)
  return sc === undefined ? undefined : { remote: sc }
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
  /** The OTEL_* variables (default process.env). */
  env?: NodeJS.ProcessEnv
  /** Reports the exporter's problems (a failed export, dropped spans). */
  warn?: (msg: string, fields?: Record<string, unknown>) => void
}

function podAttributes(pod: string | undefined): Attributes {
  if (pod === undefined) return {}
  const slash = pod.indexOf('/')
  return { 'nsm.pod': pod, 'k8s.namespace.name': pod.slice(0, slash), 'k8s.pod.name': pod.slice(slash + 1) }
}

/** A call's attributes, made for its span alone (it adds to them as the call ends). */
function subjectAttributes(s: CallSubject): Attributes {
  const pod = s.pod
  if (pod === undefined) return { 'nsm.connection': s.connection, 'nsm.service': s.service }
  const slash = pod.indexOf('/')
  return { 'nsm.connection': s.connection, 'nsm.service': s.service, 'nsm.pod': pod, 'k8s.namespace.name': pod.slice(0, slash), 'k8s.pod.name': pod.slice(slash + 1) }
}

function failed(span: Span, err: unknown): void {
  const e = AgentError.from(err)
  span.recordException(err instanceof Error ? err : new Error(String(err)))
  span.setAttributes({ 'nsm.error': e.code, 'nsm.cni_code': e.cniCode })
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message })
}

/** The span of each call the pipeline handler runs. */
const CALL_SPANS = { request: 'NetworkService/Request', close: 'NetworkService/Close', heal: 'heal' } as const

/** One kernel batch traced: what its span is made of once the agent is idle (./idle-queue.ts). */
class BatchRecord implements BatchWatch {
  endMs = 0
  fails = false
  error: unknown = undefined

  constructor(
    private readonly queue: IdleSpanQueue<Pending>,
    /** The frame running where the batch was sent: its span is the batch's parent. */
    readonly parent: CallFrame,
    readonly netns: string | undefined,
    readonly messages: number,
    readonly what: string,
    readonly startMs: number,
  ) {}

  done(fails: boolean, error?: unknown): void {
    this.endMs = performance.now()
    this.fails = fails
    this.error = error
    this.queue.add(this)
  }
}

/** What waits in the idle queue: spans that ended, and element calls and kernel batches to make spans of. */
type Pending = RecordedSpan | CallFrame | BatchRecord

export function startTracing(o: TracingOptions): Tracing {
  const env = o.env ?? process.env
  const exporter = new OtlpTraceExporter({
    resource: { 'service.name': env.OTEL_SERVICE_NAME || 'nsm-agent', 'service.version': o.version, 'k8s.node.name': o.nodeName, 'host.name': o.nodeName },
    scope: { name: 'nsm-agent', version: o.version },
    env,
    ...(o.warn === undefined ? {} : { warn: o.warn }),
  })
  const take = (item: Pending): void => {
    if (item instanceof RecordedSpan) exporter.add(item)
    else if (item instanceof CallFrame) endElementSpan(item)
    else emitBatch(item)
  }
  const waiting = new IdleSpanQueue<Pending>(take, { onError: (err) => o.warn?.('a span could not be recorded', { err }) })
  const recorder = new SpanRecorder(waiting, samplerFromEnv(env))
  // @opentelemetry/api's facade: its propagation is W3C trace context, its global tracer this recorder. No
  // context manager: a second AsyncLocalStorage would cost every promise of the agent, and the spans running
  // are on the frames of the call scope the logs already use (agent/pipeline/observe.ts `runningFrame`).
  propagation.setGlobalPropagator(propagator)
  trace.setGlobalTracerProvider({ getTracer: () => recorder })

  /**
   * Runs `run` as a new span, on its call scope's frames while it runs (the parent of what starts inside it);
   * `done` adds what is known once it succeeded.
   */
  const inSpan = async <T>(name: string, kind: SpanKind, attributes: Attributes, parent: Parent, run: () => Promise<T>, done?: (span: Span, out: T) => void): Promise<T> => {
    const stack = frameStack()
    const frame = new CallFrame(undefined, undefined, stack?.[stack.length - 1], performance.now())
    const span = recorder.start(name, kind, attributes, parent, ORIGIN_MS + frame.startMs)
    frame.span = span
    frame.traced = span instanceof RecordedSpan
    pushFrame(stack, frame)
    waiting.callStarted()
    try {
      const out = await run()
      done?.(span, out)
      return out
    } catch (err) {
      failed(span, err)
      throw err
    } finally {
      popFrame(stack, frame)
      waiting.callEnded()
      span.end()
    }
  }

  /** An element's span name and attributes, made once per element and operation (spans share them). */
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

  /**
   * A traced frame's span: an element's is made when first needed (once the agent is idle, from the frame's
   * start; earlier when a call it makes carries its context), its parent's first.
   */
  const spanOf = (frame: CallFrame): Span => {
    if (frame.span !== undefined) return frame.span
    const parent = frame.spanParent
    if (parent === undefined || frame.element === undefined || frame.op === undefined) throw new Error('tracing: a frame with no span and no parent to make one under')
    const { name, attributes } = elementSpan(frame.element, frame.op)
    return (frame.span = recorder.start(name, SpanKind.INTERNAL, attributes, { local: spanOf(parent) }, ORIGIN_MS + frame.startMs))
  }

  /** An element call's span, made and ended once the agent is idle. */
  const endElementSpan = (frame: CallFrame): void => {
    const span = spanOf(frame)
    if (frame.failed) failed(span, frame.error)
    span.end(ORIGIN_MS + frame.endMs)
  }

  /** A kernel batch's span, once the agent is idle. */
  const emitBatch = (b: BatchRecord): void => {
    const attributes: Attributes = b.netns === undefined ? { 'netlink.messages': b.messages, 'netlink.first': b.what } : { 'netlink.messages': b.messages, 'netlink.first': b.what, 'netlink.netns': b.netns }
    const span = recorder.start('netlink batch', SpanKind.CLIENT, attributes, { local: spanOf(b.parent) }, ORIGIN_MS + b.startMs, true)
    if (b.fails) failed(span, b.error)
    span.end(ORIGIN_MS + b.endMs)
  }

  /** The parent of a Request or Close: the span running now (a CNI call, a heal), else the caller's metadata. */
  const parentOf = (ctx: CallContext): Parent => {
    const running = runningFrame()
    if (running !== undefined) return { local: spanOf(running) }
    return remoteParent(ctx.metadata.get('traceparent'), ctx.metadata.get('tracestate'))
  }

  /** The running span's trace context as metadata (`traceparent`, `tracestate`) for a call to another process. */
  const outgoing = (): Record<string, string> => {
    const running = runningFrame()
    if (running === undefined) return {}
    const carrier: Record<string, string> = {}
    propagation.inject(trace.setSpan(ROOT_CONTEXT, spanOf(running)), carrier)
    return carrier
  }

  const pipeline: PipelineObserver = {
    outgoing,
    // Only inside a traced call: a remote half's periodic refresh runs the elements with no call around them.
    // A span the sampler dropped is its children's parent too (./span.ts): nothing to record under it. The
    // frame is marked now (the batches and calls inside it find it), its span made once the agent is idle.
    elementStart(frame) {
      const o = frame.outer
      const parent = o !== undefined && (o.traced || o.span !== undefined) ? o : runningFrame()
      if (parent === undefined || !parent.traced) return false
      frame.traced = true
      frame.spanParent = parent
      return true
    },
    elementEnd(frame) {
      if (frame.traced) waiting.add(frame)
    },
    callStart(frame) {
      const call = frame.call
      if (call === undefined) return
      const attributes = subjectAttributes(call.subject)
      let parent: Parent
      if (call.op === 'heal') {
        attributes['nsm.heal.reason'] = call.reason
        parent = undefined
      } else {
        if (call.op === 'close' && call.record !== undefined) {
          attributes['nsm.endpoint'] = call.record.endpointName
          attributes['nsm.mechanism'] = call.record.mechanism.type
        }
        parent = parentOf(call.ctx)
      }
      const span = recorder.start(CALL_SPANS[call.op], call.op === 'heal' ? SpanKind.INTERNAL : SpanKind.SERVER, attributes, parent, ORIGIN_MS + frame.startMs, true)
      frame.span = span
      frame.traced = span instanceof RecordedSpan
      waiting.callStarted()
    },
    callEnd(frame) {
      const span = frame.span
      const call = frame.call
      if (span === undefined || call === undefined) return
      if (frame.failed) failed(span, frame.error)
      else if (call.op === 'request') {
        const conn = frame.result as Connection
        span.setAttribute('nsm.endpoint', conn.networkServiceEndpointName)
        span.setAttribute('nsm.mechanism', conn.mechanism?.type ?? '')
      } else if (call.op === 'heal') {
        const healed = frame.result === true
        span.setAttribute('nsm.heal.outcome', healed ? 'healed' : 'down')
        if (!healed) span.setStatus({ code: SpanStatusCode.ERROR, message: 'no replacement: the connection stays DOWN' })
      }
      span.end(ORIGIN_MS + frame.endMs)
      waiting.callEnded()
    },
  }

  const cni: CniObserver = (call, run) => {
    const attributes: Attributes = { 'cni.command': call.command, 'cni.container_id': call.containerId, 'cni.ifname': call.ifname, ...podAttributes(call.pod) }
    return inSpan(`CNI ${call.command}`, SpanKind.SERVER, attributes, remoteParent(call.traceparent, call.tracestate), run, (span, answer) => {
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

  // Kernel batches: a span per batch, the child of the span running where the batch is sent (none outside a
  // traced call, e.g. the reaper's).
  watchBatches((netns, messages, what) => {
    const parent = runningFrame()
    if (parent === undefined || !parent.traced) return undefined
    return new BatchRecord(waiting, parent, netns, messages, what, performance.now())
  })

  return {
    pipeline,
    cni,
    outgoing,
    async shutdown() {
      watchBatches(undefined)
      waiting.drain()
      await exporter.shutdown()
      trace.disable()
      propagation.disable()
    },
  }
}
