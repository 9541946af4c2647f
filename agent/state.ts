// The agent's state, opened by main.ts at start before anything serves: the connection table (journaled in
// the state dir) and the registry, whose stores are the state dir's files or, with --store etcd|kubernetes,
// the shared engine; on a shared engine also this node's record and the address and VNI claims kept there.
// Damaged files do not stop the start (quarantined and logged, level error, naming the file). State that
// cannot be opened or written throws, naming the file, after the shared engine (if one was opened) is closed.
import { join } from 'node:path'
import type { AgentConfig } from './config/config.js'
import { ConnectionTable } from './connections/table.js'
import { Registry } from './registry/registry.js'
import { checkStoredEndpoint, checkStoredService, serviceCodec, storedEndpointCodec, timestampMs, type StoredEndpoint } from './registry/records.js'
import { FileStore } from './registry/store.js'
import type { Logger } from './server/log.js'
import type { NetnsPolicy } from '../pkg/netns-policy.js'
import type { Kv } from './store/kv.js'
import { KvStore } from './store/kv-store.js'
import { NodeRecords } from './store/nodes.js'
import { AddressClaims } from './store/claims.js'
import { VniClaims } from './store/vni-claims.js'
import { openSharedStore } from './store/open.js'

export interface AgentState {
  table: ConnectionTable
  registry: Registry
  /** The shared engine (--store etcd|kubernetes); undefined on the file store, and so are the three below. */
  shared: Kv | undefined
  nodes: NodeRecords | undefined
  claims: AddressClaims | undefined
  vnis: VniClaims | undefined
}

/**
 * Opens the shared engine the config names (its calls wrapped by `timeKv`, the metrics' timing, when given),
 * the connection table and the registry, then on a shared engine this node's record and its claims.
 */
export async function openAgentState(config: AgentConfig, netns: NetnsPolicy, log: Logger, onListenerError: (err: unknown) => void, timeKv: ((kv: Kv) => Kv) | undefined): Promise<AgentState> {
  let shared: Kv | undefined
  try {
    shared = await openSharedStore(config, (msg, fields) => log.warn(msg, fields))
    if (shared !== undefined && timeKv !== undefined) shared = timeKv(shared)
    const { table, registry } = await openState(config, netns, log, onListenerError, shared)
    if (shared === undefined) return { table, registry, shared, nodes: undefined, claims: undefined, vnis: undefined }
    const nodes = await NodeRecords.start(shared, { name: config.nodeName, underlayAddress: config.underlayAddress, peerUrl: config.peerUrl }, { ttlMs: config.nodeTtlMs, onError: (msg, fields) => log.warn(msg, fields) })
    const claims = await AddressClaims.start(shared, config.nodeName)
    const vnis = await VniClaims.start(shared, config.nodeName)
    return { table, registry, shared, nodes, claims, vnis }
  } catch (err) {
    await shared?.close().catch(() => undefined)
    throw err
  }
}

/**
 * Loads the connection table and the registry from the state dir. Damaged files do not stop the start:
 * they are quarantined and logged (level error) naming the file, and every readable record is kept.
 * Throws (naming the file) when the state cannot be written, e.g. no room to preallocate the journal.
 */
async function openState(config: AgentConfig, netns: NetnsPolicy, log: Logger, onListenerError: (err: unknown) => void, shared: Kv | undefined): Promise<{ table: ConnectionTable; registry: Registry }> {
  const onDamage = (d: { file: string; reason: string; quarantined: string | undefined }): void =>
    log.error('damaged state file', { file: d.file, reason: d.reason, ...(d.quarantined === undefined ? {} : { quarantined: d.quarantined }) })
  // NSM_AGENT_JOURNAL_BYTES: the journal's preallocated size (tests fill a small disk with it).
  const journalBytes = Number.parseInt(process.env.NSM_AGENT_JOURNAL_BYTES ?? '', 10)
  const table = await ConnectionTable.open(join(config.stateDir, 'connections.json'), onListenerError, {
    onDamage,
    ...(Number.isInteger(journalBytes) && journalBytes > 0 ? { journalBytes } : {}),
  })
  // The registry in the state dir (one node), or in the shared engine (every agent sees every endpoint,
  // each stamped with its node; an endpoint's engine entry lives as long as its registration).
  const stores =
    shared === undefined
      ? {
          services: new FileStore(join(config.stateDir, 'registry', 'services.json'), serviceCodec, { onDamage }),
          endpoints: new FileStore(join(config.stateDir, 'registry', 'endpoints.json'), storedEndpointCodec, { onDamage }),
        }
      : {
          services: new KvStore(shared, 'services', serviceCodec, { onDamage, check: checkStoredService }),
          endpoints: new KvStore(shared, 'endpoints', storedEndpointCodec, {
            onDamage,
            check: checkStoredEndpoint,
            ttlOf: (e: StoredEndpoint) => {
              const at = timestampMs(e.endpoint.expirationTime)
              return at === undefined ? undefined : at - Date.now()
            },
          }),
          nodeName: config.nodeName,
          onStoreState: (store: string, state: string, reason?: string) => {
            const fields = { backend: shared.backend, store, ...(reason === undefined ? {} : { reason }) }
            if (state === 'down') log.error('store down', fields)
            else log.info('store up', fields)
          },
        }
  const registry = await Registry.open({ ...stores, netnsAllow: netns, defaultTtlMs: config.endpointTtlMs, onListenerError })
  return { table, registry }
}
