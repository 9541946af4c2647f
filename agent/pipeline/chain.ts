// The request pipeline's shape (ARCHITECTURE, rule 3): a chain element takes the next handler and returns
// its own, `(next) => ({ request, close })`. Per-request state travels in one typed object
// (`RequestState`), each field owned by the element that fills it. Every element declares which fields
// it needs and which it provides, and `buildChain` refuses a list where an element needs a field that
// no earlier element provides — a misordered pipeline fails when the agent starts, not on the first
// request.
//
// Undo rule: an element that changes the kernel or a store and then sees `next` throw undoes its own
// change before rethrowing. Close runs the same chain with the stored record of the connection.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection.js'
import type { NetworkService } from '../../conf/networkservice.js'
import type { CallContext } from '../server/handler.js'
import type { Mechanism as MechanismImpl } from '../mechanisms/types.js'
import type { DatapathRecord, EndpointInfo, P2PAddresses } from './types.js'
import { performance } from 'node:perf_hooks'
import { CallFrame, frameStack, popFrame, pushFrame, type PipelineObserver, type PipelineOp } from './observe.js'

export interface RequestState {
  /** The implementation of the requested mechanism (from the mechanism registry) that will build it. */
  mechanism?: MechanismImpl
  /** The netns path the client's side goes into (from the mechanism's parameters, policy-checked). */
  clientNetns?: string
  /** The client's interface name (mechanism parameter `name`). */
  clientIfname?: string
  /** Labels selection matches against. */
  clientLabels?: Record<string, string>
  /** The stored record when this id was requested before (refresh / reselect). */
  previous?: DatapathRecord
  service?: NetworkService
  endpoint?: EndpointInfo
  addresses?: P2PAddresses
  /**
   * The other node of a remote cross-connect (forward element): the endpoint's node on the client's side,
   * the calling peer on the endpoint's side.
   */
  peerNode?: string
  datapath?: DatapathRecord
}

export interface PipelineRequest {
  readonly connection: Connection
  readonly mechanismPreferences: readonly Mechanism[]
  readonly ctx: CallContext
  readonly state: RequestState
}

export interface PipelineClose {
  readonly connection: Connection
  readonly ctx: CallContext
  /** What the request built; undefined when the id is unknown (close is then a no-op). */
  readonly record: DatapathRecord | undefined
}

export interface Handler {
  request(r: PipelineRequest): Promise<Connection>
  close(c: PipelineClose): Promise<void>
}

export type StateField = keyof RequestState

export interface Element {
  readonly name: string
  readonly needs: readonly StateField[]
  readonly provides: readonly StateField[]
  /**
   * Which of its calls the instrumentation hook (./observe.ts) watches (default: all). An element whose close,
   * or whose request for some connections, only hands the call on says so: that call gets no span and no time
   * of its own (they would only repeat the next element's), which keeps what tracing costs a call down to the
   * elements that work in it.
   */
  readonly observed?: {
    readonly request?: false | ((r: PipelineRequest) => boolean)
    readonly close?: false | ((c: PipelineClose) => boolean)
  }
  wrap(next: Handler): Handler
}

/** The end of every chain: returns the connection as the elements shaped it. */
const terminal: Handler = {
  request: async (r) => r.connection,
  close: async () => undefined,
}

export class ChainOrderError extends Error {
  override readonly name = 'ChainOrderError'
}

export interface ChainOptions {
  /**
   * Instrumentation (./observe.ts): `observe.elementStart` is told as each element's request and close
   * starts, and `elementEnd` when that call settled. Without it the elements are linked directly, as if the hook did
   * not exist.
   */
  observe?: PipelineObserver
}

/** Checks the order and links the elements; the first element runs first. */
export function buildChain(elements: readonly Element[], opts: ChainOptions = {}): Handler {
  const provided = new Set<StateField>()
  const names = new Set<string>()
  for (const e of elements) {
    if (names.has(e.name)) throw new ChainOrderError(`pipeline: element ${e.name} appears twice`)
    names.add(e.name)
    const missing = e.needs.filter((f) => !provided.has(f))
    if (missing.length > 0) {
      throw new ChainOrderError(`pipeline: element ${e.name} needs ${missing.join(', ')}, which no element before it provides (order: ${elements.map((x) => x.name).join(' → ')})`)
    }
    for (const f of e.provides) provided.add(f)
  }
  const observer = opts.observe
  const start = observer?.elementStart?.bind(observer)
  const end = observer?.elementEnd?.bind(observer)
  if (start === undefined || end === undefined) return elements.reduceRight<Handler>((next, e) => e.wrap(next), terminal)
  /** The promise `watch` returned last, and its frame: an element that returns it unchanged ends with that frame. */
  let lastPromise: Promise<unknown> | undefined
  let lastFrame: CallFrame | undefined
  /**
   * Ends `frame`: its time taken once, off its scope's stack, added to the frame that called it, observers told;
   * then the frames that handed on its promise as theirs (`endsWith`), which end with it.
   */
  const settle = (frame: CallFrame, stack: CallFrame[] | undefined, failed: boolean, error: unknown): void => {
    const endMs = performance.now()
    for (let f: CallFrame | undefined = frame; f !== undefined; f = f.endsWith) {
      f.endMs = endMs
      popFrame(stack, f)
      if (f.outer !== undefined) f.outer.innerMs += endMs - f.startMs
      f.failed = failed
      f.error = error
      end(f)
    }
    // Nothing more can be handed on: not kept until the next call.
    if (lastFrame?.endMs !== 0) {
      lastPromise = undefined
      lastFrame = undefined
    }
  }
  /**
   * `run` watched as element `name`'s `op`: one frame and one promise reaction, however many observers watch
   * (none when none records it). An element whose call hands on the next one's watched promise unchanged (its
   * work done before: validate, path) gets no reaction of its own: its frame ends with that one's.
   */
  const watch = <T>(name: string, op: PipelineOp, run: () => Promise<T>): Promise<T> => {
    const stack = frameStack()
    const frame = new CallFrame(name, op, stack?.[stack.length - 1], performance.now())
    if (!start(frame)) return run()
    pushFrame(stack, frame)
    let p: Promise<T>
    try {
      p = run()
    } catch (err) {
      settle(frame, stack, true, err)
      throw err
    }
    if (p === lastPromise && lastFrame !== undefined && lastFrame.outer === frame && lastFrame.endMs === 0) {
      // That frame (the last of a hand-on chain already) settles this one too.
      lastFrame.endsWith = frame
      lastFrame = frame
      return p
    }
    const q = p.then(
      (out) => {
        settle(frame, stack, false, undefined)
        return out
      },
      (err: unknown) => {
        settle(frame, stack, true, err)
        throw err
      },
    )
    lastPromise = q
    lastFrame = frame
    return q
  }
  return elements.reduceRight<Handler>((next, e) => {
    const h = e.wrap(next)
    const req = e.observed?.request
    const cl = e.observed?.close
    return {
      request: req === false ? (r) => h.request(r) : req === undefined ? (r) => watch(e.name, 'request', () => h.request(r)) : (r) => (req(r) ? watch(e.name, 'request', () => h.request(r)) : h.request(r)),
      close: cl === false ? (c) => h.close(c) : cl === undefined ? (c) => watch(e.name, 'close', () => h.close(c)) : (c) => (cl(c) ? watch(e.name, 'close', () => h.close(c)) : h.close(c)),
    }
  }, terminal)
}

/** Runs `undo` when `work` throws, then rethrows the original error (an undo failure is logged by the caller). */
export async function withUndo<T>(work: () => Promise<T>, undo: () => Promise<void>, onUndoError: (err: unknown) => void): Promise<T> {
  try {
    return await work()
  } catch (err) {
    try {
      await undo()
    } catch (undoErr) {
      onUndoError(undoErr)
    }
    throw err
  }
}
