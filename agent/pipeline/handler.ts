// Turns the element chain into the server's NetworkServiceHandler: one fresh RequestState per call,
// calls for the same connection id serialized (a Close never races the Request it closes), and the
// stored record removed only after every element's close succeeded.
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { AgentError } from '../errors.js'
import type { CallContext, NetworkServiceHandler } from '../server/handler.js'
import type { Handler } from './chain.js'
import type { RecordStore } from './persist.js'
import { subjectOf, watchCall, watchesCalls, type PipelineObserver } from './observe.js'
import { silentLogger, withLogFields, type Logger } from '../server/log.js'

/** Serializes async work per key. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>()

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve()
    const result = prev.then(fn, fn)
    const tail = result.then(
      () => undefined,
      () => undefined,
    )
    this.tails.set(key, tail)
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    })
    return result
  }

  /** Keys with work queued or running (for an orphan sweep: connections being built right now). */
  keys(): string[] {
    return [...this.tails.keys()]
  }
}

export interface PipelineHandler extends NetworkServiceHandler {
  /** The per-id lock, shared with healing so a heal never races a Request or Close of the same id. */
  readonly locks: KeyedMutex
  /** A request without the lock (the caller holds it): used by healing. */
  requestLocked(req: NetworkServiceRequest, ctx: CallContext): Promise<Connection>
}

/**
 * Every line logged during a Request or Close carries its connection, service and pod (agent/server/log.ts);
 * `observe` (./observe.ts) times and traces them when metrics or tracing are on.
 */
export function pipelineHandler(chain: Handler, store: RecordStore, observe?: PipelineObserver, log: Logger = silentLogger): PipelineHandler {
  const locks = new KeyedMutex()
  const watched = watchesCalls(observe)
  const requestLocked = (req: NetworkServiceRequest, ctx: CallContext): Promise<Connection> => {
    const connection = req.connection
    if (connection === undefined) throw AgentError.invalid('connection', 'is required')
    return chain.request({ connection, mechanismPreferences: req.mechanismPreferences, ctx, state: {} })
  }
  const request = (req: NetworkServiceRequest, ctx: CallContext): Promise<Connection> => {
    const connection = req.connection
    if (connection === undefined) throw AgentError.invalid('connection', 'is required')
    return locks.run(connection.id, async () => {
      const out = await requestLocked(req, ctx)
      log.debug('connection requested', { endpoint: out.networkServiceEndpointName, mechanism: out.mechanism?.type ?? '' })
      return out
    })
  }
  const close = async (conn: Connection, ctx: CallContext): Promise<void> => {
    if (conn.id === '') throw AgentError.invalid('connection.id', 'is required')
    await locks.run(conn.id, async () => {
      const record = store.record(conn.id)
      if (record === undefined) return // unknown id: Close is idempotent
      await chain.close({ connection: conn, ctx, record })
      await store.remove(conn.id)
      log.debug('connection closed', { endpoint: record.endpointName, mechanism: record.mechanism.type })
    })
  }
  return {
    locks,
    requestLocked,
    async request(req, ctx) {
      if (req.connection === undefined) throw AgentError.invalid('connection', 'is required')
      const subject = subjectOf(req.connection)
      return withLogFields(subject, () => (watched ? watchCall(observe, { op: 'request', subject, ctx }, () => request(req, ctx)) : request(req, ctx)))
    },
    async close(conn, ctx) {
      const record = conn.id === '' ? undefined : store.record(conn.id)
      const subject = subjectOf(conn, record)
      await withLogFields(subject, () => (watched ? watchCall(observe, { op: 'close', subject, ctx, record }, () => close(conn, ctx)) : close(conn, ctx)))
    },
  }
}
