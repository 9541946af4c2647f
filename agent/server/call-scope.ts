// The one per-call context of the agent (ARCHITECTURE §13): a CNI call, a Request, a Close or a heal runs
// inside a scope (AsyncLocalStorage) that carries its log fields and its stack of frames: the pipeline's
// instrumentation keeps the frames running there (agent/pipeline/observe.ts: the element calls,
// Requests, Closes and heals being watched, and the spans of CNI calls). One AsyncLocalStorage for
// all of them: each instance in use adds work to every promise the agent makes, so logs, metrics and traces
// share this one (tracing registers no context manager of its own: agent/tracing/).
//
// Scopes nest: a Request inside a CNI call has its own scope whose `outer` is the call's. Frames are per scope
// (two Closes a GC runs side by side never share a stack); `findInScopes` walks out through the outer scopes.
import { AsyncLocalStorage } from 'node:async_hooks'
import type { CallFrame } from '../pipeline/observe.js'

export interface CallScope {
  /** Every log line inside carries these (the outer scopes' included; the inner one wins). */
  readonly fields: Readonly<Record<string, unknown>>
  readonly outer: CallScope | undefined
  /** The frames running in this scope, innermost last (the pipeline's instrumentation, agent/pipeline/observe.ts). */
  readonly frames: CallFrame[]
}

const scopes = new AsyncLocalStorage<CallScope>()

/** Runs `fn` in a new scope whose lines carry `fields` (added to the outer scope's). */
export function inCallScope<T>(fields: Readonly<object>, fn: () => T): T {
  const outer = scopes.getStore()
  return scopes.run({ fields: { ...outer?.fields, ...fields }, outer, frames: [] }, fn)
}

export function currentScope(): CallScope | undefined {
  return scopes.getStore()
}

/** This scope's frames; undefined outside any scope. */
export function scopeFrames(): CallFrame[] | undefined {
  return scopes.getStore()?.frames
}

/** What `pick` finds first in the frames of this scope, then of the outer ones. */
export function findInScopes<R>(pick: (frames: CallFrame[]) => R | undefined): R | undefined {
  for (let s = scopes.getStore(); s !== undefined; s = s.outer) {
    if (s.frames.length === 0) continue
    const r = pick(s.frames)
    if (r !== undefined) return r
  }
  return undefined
}
