// Shared by the tests of agents on a shared store (store-cluster-*.test.ts): waiting for a view to
// converge, and what an agent lists and registers.
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import type { RunningAgent } from './agent'
import { endpointRegistration } from './mesh'

/** Polls until `check` holds (at most `ms`); returns how long it took, or -1. */
export async function until(check: () => Promise<boolean>, ms = 10_000): Promise<number> {
  const start = Date.now()
  while (Date.now() - start < ms) {
    if (await check()) return Date.now() - start
    await new Promise((r) => setTimeout(r, 20))
  }
  return -1
}

/**
 * Polls until `check` holds (at most `ms`); throws, naming `what`, when it does not: for waits whose result is
 * not asserted, so that a timeout fails as itself rather than as a later check.
 */
export async function reach(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  if ((await until(check, ms)) < 0) throw new Error(`gave up after ${ms} ms waiting for ${what}`)
}

/** The endpoint names an agent lists, sorted. */
export async function endpointNames(a: RunningAgent): Promise<string[]> {
  return (await a.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints.map((e) => e.endpoint?.name ?? '').sort()
}

/** Registers an endpoint of `service` in `netns` with one pool through an agent's API. */
export function registerOn(a: RunningAgent, e: { name: string; netns: string; service: string; pool: string; ttlMs?: number }) {
  return a.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: e.name, netns: e.netns, service: e.service, labels: { app: 'x' }, pools: [e.pool], ...(e.ttlMs === undefined ? {} : { ttlMs: e.ttlMs }) }))
}
