// The one per-call context of the agent (ARCHITECTURE §13): a CNI call, a Request, a Close or a heal runs
// inside a scope (AsyncLocalStorage) that carries its log fields and per-scope slots: the pipeline's
// instrumentation keeps its stack of frames running there (agent/pipeline/observe.ts: the element calls being
// watched, the spans of Requests, Closes, heals and CNI calls). One AsyncLocalStorage for
// all of them: each instance in use adds work to every promise the agent makes, so logs, metrics and traces
// share this one (tracing registers no context manager of its own: agent/tracing/).
//
// Scopes nest: a Request inside a CNI call has its own scope whose `outer` is the call's. Slots are per scope
// (two Closes a GC runs side by side never share one); `find` walks out through the outer scopes.
import { AsyncLocalStorage } from 'node:async_hooks'

export interface CallScope {
  /** Every log line inside carries these (the outer scopes' included; the inner one wins). */
  readonly fields: Readonly<Record<string, unknown>>
  readonly outer: CallScope | undefined
  /** Per-scope state of the observability hooks, by key. */
  readonly slots: Map<symbol, unknown>
}

const scopes = new AsyncLocalStorage<CallScope>()

/** Runs `fn` in a new scope whose lines carry `fields` (added to the outer scope's). */
export function inCallScope<T>(fields: Readonly<object>, fn: () => T): T {
  const outer = scopes.getStore()
  return scopes.run({ fields: { ...outer?.fields, ...fields }, outer, slots: new Map() }, fn)
}

export function currentScope(): CallScope | undefined {
  return scopes.getStore()
}

/** This scope's slot `key`, made by `init` on first use; undefined outside any scope. */
export function scopeSlot<T>(key: symbol, init: () => T): T | undefined {
  const s = scopes.getStore()
  if (s === undefined) return undefined
  let v = s.slots.get(key) as T | undefined
  if (v === undefined) s.slots.set(key, (v = init()))
  return v
}

/** The innermost value of slot `key` that `pick` accepts, in this scope or an outer one. */
export function findInScopes<T, R>(key: symbol, pick: (slot: T) => R | undefined): R | undefined {
  for (let s = scopes.getStore(); s !== undefined; s = s.outer) {
    const v = s.slots.get(key) as T | undefined
    if (v === undefined) continue
    const r = pick(v)
    if (r !== undefined) return r
  }
  return undefined
}
