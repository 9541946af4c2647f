// The shared store, timed: every Kv call (get, list, create, put, delete, health) is observed in
// nsm_store_operation_duration_seconds by backend, operation, kind and outcome (ok, conflict, unavailable,
// error). Watches are long-lived streams, not operations: passed through.
import { performance } from 'node:perf_hooks'
import { KvConflict, KvUnavailable, type Kv, type KvKind } from '../store/kv.js'
import type { Series } from './metrics.js'

function outcomeOf(err: unknown): string {
  if (err instanceof KvConflict) return 'conflict'
  if (err instanceof KvUnavailable) return 'unavailable'
  return 'error'
}

export function timedKv(kv: Kv, series: Series): Kv {
  const time = async <T>(operation: string, kind: KvKind | '', work: () => Promise<T>): Promise<T> => {
    const t0 = performance.now()
    let outcome = 'ok'
    try {
      return await work()
    } catch (err) {
      outcome = outcomeOf(err)
      throw err
    } finally {
      series.storeSeconds.observe({ backend: kv.backend, operation, kind, outcome }, (performance.now() - t0) / 1000)
    }
  }
  return {
    backend: kv.backend,
    get: (kind, name) => time('get', kind, () => kv.get(kind, name)),
    list: (kind) => time('list', kind, () => kv.list(kind)),
    create: (kind, name, value, opts) => time('create', kind, () => kv.create(kind, name, value, opts)),
    put: (kind, name, value, opts) => time('put', kind, () => kv.put(kind, name, value, opts)),
    delete: (kind, name, opts) => time('delete', kind, () => kv.delete(kind, name, opts)),
    watch: (kind, from, handlers) => kv.watch(kind, from, handlers),
    health: () => time('health', '', () => kv.health()),
    close: () => kv.close(),
  }
}
