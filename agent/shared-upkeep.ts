// With a shared store (agent/store/): what this node keeps there put in step with its connections at start
// (reconcileClaims, after the kernel reconcile), then kept up while the agent runs (startSharedUpkeep): this
// node's endpoint pods rewritten every third of their lifetime, the address and VNI claims of nodes whose
// records expired collected. On the file store both do nothing.
import type { AgentConfig } from './config/config.js'
import { refreshCniEndpoints } from './cni/endpoint.js'
import type { Dataplane } from './pipeline/index.js'
import type { Logger } from './server/log.js'
import type { AgentState } from './state.js'
import type { AddressClaims } from './store/claims.js'
import type { NodeRecords } from './store/nodes.js'
import type { P2PRecord } from '../ipam/p2p/index.js'

/** At start: the address and VNI claims of the connections the dataplane kept are asserted again, the others released. */
export async function reconcileClaims(state: AgentState, dataplane: Dataplane, log: Logger): Promise<void> {
  const { claims, vnis } = state
  if (claims !== undefined) await reassertClaims(claims, dataplane.pool.allRecords(), log)
  if (vnis !== undefined) {
    const released = await vnis.retain(new Set(dataplane.records.all().map((r) => r.connectionId))).catch(() => 0)
    if (released > 0) log.info('released the VNI claims of connections that are gone', { released })
  }
}

/** Starts the upkeep timers (unref'd); `stop` clears them. */
export function startSharedUpkeep(state: AgentState, config: Pick<AgentConfig, 'nodeName' | 'endpointTtlMs' | 'nodeTtlMs'>, log: Logger): { stop(): void } {
  const { registry, shared, nodes, claims, vnis } = state
  // Shared stores: this node's endpoint pods are rewritten every third of their lifetime; the address
  // claims of nodes whose records expired are collected.
  const refresher =
    shared === undefined
      ? undefined
      : setInterval(() => {
          refreshCniEndpoints(registry, config.nodeName, config.endpointTtlMs).catch((err: unknown) => log.warn('endpoint pods: refresh failed, retrying', { err }))
        }, config.endpointTtlMs / 3)
  refresher?.unref()
  const collector =
    claims === undefined || nodes === undefined
      ? undefined
      : setInterval(() => {
          void collectClaims(claims, nodes, config.nodeName, log)
          if (vnis !== undefined && nodes.list().some((n) => n.name === config.nodeName)) void vnis.collect(new Set(nodes.list().map((n) => n.name))).catch(() => 0)
        }, config.nodeTtlMs)
  collector?.unref()
  return {
    stop: () => {
      if (refresher !== undefined) clearInterval(refresher)
      if (collector !== undefined) clearInterval(collector)
    },
  }
}

/** At start on a shared store: the claims of the connections kept are asserted again, the others released. */
async function reassertClaims(claims: AddressClaims, records: readonly P2PRecord[], log: Logger): Promise<void> {
  const released = await claims.retain(new Set(records.map((r) => r.connectionId)))
  let lost = 0
  for (const r of records) {
    await claims.claim(r.connectionId, r.pairs).catch((err: unknown) => {
      lost++
      log.error('a kept connection\'s addresses are claimed by another node', { connection: r.connectionId, err })
    })
  }
  log.info('address claims reconciled', { kept: records.length - lost, released, lost })
}

/** Claims of nodes without a live record: collected, only while this node's own record is seen (a sane view). */
async function collectClaims(claims: AddressClaims, nodes: NodeRecords, self: string, log: Logger): Promise<void> {
  const live = new Set(nodes.list().map((n) => n.name))
  if (!live.has(self)) return
  const collected = await claims.collect(live).catch(() => 0)
  if (collected > 0) log.info('collected the address claims of nodes that are gone', { collected })
}
