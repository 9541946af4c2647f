// The agent's listeners besides its unix socket, started by main.ts once the socket serves, each only when
// configured: Prometheus metrics (--metrics-address), the NSM API for other agents (--listen, agent/peer/)
// and the live topology page (--web-address). One that cannot listen is logged (level error) and thrown as
// a ListenerStartError: main.ts writes its message to stderr, stops what started and exits 1.
import type { AgentConfig } from './config/config.js'
import type { AgentMetrics, MetricsServer } from './metrics/index.js'
import { peerUrlFor, startPeerListener, type PeerListener } from './peer/server.js'
import type { PeerTls } from './peer/tls.js'
import type { Logger } from './server/log.js'
import type { AgentServer } from './server/server.js'
import type { AgentState } from './state.js'
import type { NodeRecords } from './store/nodes.js'
import { agentTopologySource } from './topology/source.js'
import { startTopologyPage, type TopologyPage } from './topology/web.js'

/** agent/metrics/, loaded by main.ts only with --metrics-address. */
export type MetricsModule = typeof import('./metrics/index.js')

/** A listener that could not start: `message` names the flag and says why, `stopReason` is what the stop logs. */
export class ListenerStartError extends Error {
  constructor(
    message: string,
    readonly stopReason: string,
    options: { cause: unknown },
  ) {
    super(message, options)
  }
}

/** Metrics served on --metrics-address; undefined when it is not set. */
export async function startMetricsEndpoint(config: AgentConfig, metrics: MetricsModule | undefined, meters: AgentMetrics | undefined, log: Logger): Promise<MetricsServer | undefined> {
  if (metrics === undefined || meters === undefined || config.metricsAddress === undefined) return undefined
  const address = config.metricsAddress
  const metricsServer = await listening(log, 'the metrics', { metricsAddress: address }, `--metrics-address ${address}`, 'metrics listener failed', () =>
    metrics.serveMetrics(meters.registry, address, (err) => log.warn('metrics: a scrape failed', { err }), meters.flush),
  )
  log.info('metrics served', { address: metricsServer.address, path: '/metrics' })
  return metricsServer
}

/** Other agents call this one's NSM API here (--listen); the node record says where (ARCHITECTURE §12). */
export async function startPeerApi(config: AgentConfig, server: AgentServer, peerTls: PeerTls | undefined, nodes: NodeRecords | undefined, log: Logger): Promise<PeerListener | undefined> {
  if (config.listen === undefined) return undefined
  const listen = config.listen
  const peer = await listening(log, 'the peer listener', { listen }, `--listen ${listen}`, 'peer listener failed', () =>
    startPeerListener({
      listen,
      ...(peerTls === undefined ? { insecure: true as const } : { tls: peerTls }),
      services: server.nsmServices(),
      nodes: nodes === undefined ? undefined : { list: () => nodes.list() },
      log,
    }),
  )
  const peerUrl = config.peerUrl !== '' ? config.peerUrl : peerUrlFor(peer.address, config.underlayAddress)
  await nodes?.setPeerUrl(peerUrl).catch((err: unknown) => log.warn('node record: the peer URL is not written yet, the next rewrite writes it', { peerUrl, err }))
  log.info('peer listener ready', { address: peer.address, peerUrl, tls: peer.secure, ...(peerTls === undefined ? {} : { serialNumber: peerTls.current.serialNumber, fingerprint256: peerTls.current.fingerprint256 }) })
  return peer
}

/** The live topology page (agent/topology/web.ts) on --web-address: read-only, loopback unless --web-public. */
export async function startTopologyWeb(config: AgentConfig, state: AgentState, log: Logger): Promise<TopologyPage | undefined> {
  if (config.webAddress === undefined) return undefined
  const { table, registry, nodes, shared } = state
  const source = agentTopologySource({ nodeName: config.nodeName, table, registry, nodes: nodes === undefined || shared === undefined ? undefined : { store: shared.backend, list: () => nodes.list() } })
  const address = config.webAddress
  return listening(log, 'the topology page', { webAddress: address }, `--web-address ${address}`, 'topology page failed', () => startTopologyPage({ address, source, log }))
}

/** `start()`; when it fails, logged as `cannot serve <what>` with `fields` and thrown as a ListenerStartError naming `flag`. */
async function listening<T>(log: Logger, what: string, fields: Record<string, unknown>, flag: string, stopReason: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start()
  } catch (err) {
    log.error(`cannot serve ${what}`, { ...fields, err })
    throw new ListenerStartError(`${flag}: ${(err as Error).message}`, stopReason, { cause: err })
  }
}
