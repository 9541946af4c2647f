// dist/nsm-agent: the node agent's entry and composition root. Loads the config (YAML + flags), opens the
// state (connection table, registry stores) under the state dir, builds the server with its hooks and the
// CNI service, serves on the unix socket (gRPC and the CNI shim's calls) and, with --listen, the NSM API to
// other agents (agent/peer/), prints one JSON `ready` line, and on SIGTERM/SIGINT stops gracefully (streams end,
// the socket is removed, state is flushed) and exits 0. Exit 2: bad config; exit 1: failed to start (the
// state dir locked by another agent, or state that cannot be written: the message names the file).
// Its parts: the state is opened by state.ts, kept up on a shared store by shared-upkeep.ts; the mechanisms'
// places come from mechanism-options.ts; the listeners besides the socket are started by listeners.ts.
import { mkdirSync } from 'node:fs'
import pkg from '../package.json'
import { ConfigError, type AgentConfig } from './config/config.js'
import { startIdleGc } from './idle-gc.js'
import { loadConfig } from './config/load.js'
import { USAGE } from './config/settings.js'
import { lockStateDir, StateDirLockedError } from './connections/state-lock.js'
import { DirectoryPodInfoSource } from './podinfo/directory.js'
import type { PodInfoSource } from './podinfo/types.js'
import { jsonLogger, type Logger } from './server/log.js'
import { AgentServer } from './server/server.js'
import { createDataplane } from './pipeline/index.js'
import { CniService, combineCniObservers } from './cni/index.js'
import { NetnsPolicy } from '../pkg/netns-policy.js'
import { PeerDirectory } from './peer/directory.js'
import { PeerTls, PeerTlsError } from './peer/tls.js'
import type { PeerListener } from './peer/server.js'
import type { Tracing } from './tracing/index.js'
import { combineObservers } from './pipeline/observe.js'
import type { MetricsServer } from './metrics/index.js'
import type { TopologyPage } from './topology/web.js'
import { openAgentState, type AgentState } from './state.js'
import { reconcileClaims, startSharedUpkeep } from './shared-upkeep.js'
import { memifOptions, sriovOptions } from './mechanism-options.js'
import { ListenerStartError, startMetricsEndpoint, startPeerApi, startTopologyWeb } from './listeners.js'

async function openPodInfo(config: AgentConfig, log: Logger): Promise<PodInfoSource | undefined> {
  if (config.podInfoDir !== undefined) return new DirectoryPodInfoSource({ dir: config.podInfoDir, nodeName: config.nodeName })
  if (config.kubernetes) {
    // Loaded only when configured: the Kubernetes client alone costs ~70 MiB of RSS.
    const { KubernetesPodInfoSource } = await import('./podinfo/kubernetes.js')
    return new KubernetesPodInfoSource({
      nodeName: config.nodeName,
      ...(config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig }),
      log: (msg, fields) => log.warn(msg, fields),
    })
  }
  return undefined
}

async function main(argv: readonly string[]): Promise<number> {
  let config: AgentConfig
  try {
    const loaded = loadConfig(argv)
    if (loaded.help) {
      process.stdout.write(`${USAGE}\n`)
      return 0
    }
    config = loaded.config
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`nsm-agent: ${err.message}\n`)
      return 2
    }
    throw err
  }
  const log = jsonLogger(config.logLevel, undefined, { format: config.logFormat === 'pretty' || (config.logFormat === 'auto' && process.stdout.isTTY) ? 'pretty' : 'json' })
  const reportListenerError = (err: unknown): void => log.error('event listener failed', { err })
  // Metrics (agent/metrics/, prom-client) only with --metrics-address: nothing is loaded or wrapped otherwise.
  const metrics = config.metricsAddress === undefined ? undefined : await import('./metrics/index.js')
  const meters = metrics?.createMetrics()
  // Traces (agent/tracing/, OpenTelemetry) only when OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_ form) is
  // set: nothing is loaded otherwise. A bad OTEL_* value is a bad config (exit 2), named.
  let startedTracing: Tracing | undefined
  if ((process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '') !== '' || (process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? '') !== '') {
    try {
      startedTracing = (await import('./tracing/index.js')).startTracing({ nodeName: config.nodeName, version: pkg.version, warn: (msg, fields) => log.warn(`tracing: ${msg}`, fields) })
    } catch (err) {
      process.stderr.write(`nsm-agent: tracing: ${err instanceof Error ? err.message : String(err)}\n`)
      return 2
    }
  }
  const tracing = startedTracing
  // NSM_AGENT_NETLINK_ASIDE=off: link deletions go out from the main thread, holding the event loop while the
  // kernel deletes (a diagnostic, and bench/churn.ts's reference); on, the default, from a pool thread
  // (pkg/netlink/aside.ts).
  const aside = process.env.NSM_AGENT_NETLINK_ASIDE ?? ''
  if (aside !== '' && aside !== 'on' && aside !== 'off') {
    process.stderr.write(`nsm-agent: NSM_AGENT_NETLINK_ASIDE: ${JSON.stringify(aside)} is not on or off\n`)
    return 2
  }
  // The peer listener's certificates, read before anything starts: files that cannot be used are a bad
  // config (exit 2), and from here on they are watched for rotation (agent/peer/tls.ts).
  let peerTls: PeerTls | undefined
  if (config.listen !== undefined && config.tlsCert !== undefined && config.tlsKey !== undefined && config.tlsCa !== undefined) {
    try {
      peerTls = PeerTls.open({ cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa }, { log })
    } catch (err) {
      if (!(err instanceof PeerTlsError)) throw err
      process.stderr.write(`nsm-agent: peer TLS: ${err.message}\n`)
      return 2
    }
  }
  let peer: PeerListener | undefined
  let metricsServer: MetricsServer | undefined
  let web: TopologyPage | undefined

  // One netns policy for the registry, the pipeline and the CNI calls (its patterns were checked by loadConfig).
  const netns = new NetnsPolicy(config.netnsAllow)
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 })
  // One agent per state dir, before any state is read (held until the process exits: the kernel drops it).
  try {
    lockStateDir(config.stateDir)
  } catch (err) {
    log.error(err instanceof StateDirLockedError ? 'state dir in use' : 'cannot lock the state dir', { stateDir: config.stateDir, err })
    process.stderr.write(`nsm-agent: ${(err as Error).message}\n`)
    return 1
  }
  let state: AgentState
  try {
    state = await openAgentState(config, netns, log, reportListenerError, metrics === undefined || meters === undefined ? undefined : (kv) => metrics.timedKv(kv, meters.series))
  } catch (err) {
    // A state dir that cannot be written (no room for the journal, an I/O error): the message names the file.
    log.error('cannot open the state', { stateDir: config.stateDir, err })
    process.stderr.write(`nsm-agent: ${(err as Error).message}\n`)
    return 1
  }
  const { table, registry, shared, nodes, claims, vnis } = state
  meters?.setSources({ table, registry, nodeName: config.nodeName })
  registry.subscribe((ev) => {
    if (ev.kind === 'endpoint') log.info(`endpoint ${ev.reason}`, { endpoint: ev.endpoint.name })
    else log.info(`service ${ev.type}`, { service: ev.service.name })
  })
  const podInfo = await openPodInfo(config, log)

  const server = new AgentServer({
    socket: config.socket,
    nodeName: config.nodeName,
    version: pkg.version,
    table,
    registry,
    log,
    ...(podInfo === undefined ? {} : { podInfo }),
    ...(nodes === undefined || shared === undefined ? {} : { nodes: { store: shared.backend, list: () => nodes.list() } }),
  })
  // The request pipeline builds the datapaths; healing watches endpoints and namespaces.
  // The mesh across nodes: with a shared store, an underlay address and a way to call peers (mutual TLS, or
  // --insecure), endpoints of other nodes are reached through their agents (ARCHITECTURE §12).
  const peers =
    nodes !== undefined && config.underlayAddress !== '' && (peerTls !== undefined || config.insecure)
      ? new PeerDirectory({ ...(peerTls === undefined ? { insecure: true as const } : { tls: peerTls }), self: config.nodeName, nodes: () => nodes.list(), ...(tracing === undefined ? {} : { metadata: () => tracing.outgoing() }) })
      : undefined
  const mesh =
    peers === undefined || vnis === undefined || nodes === undefined
      ? undefined
      : { underlay: [config.underlayAddress], peers, vnis, liveNodes: () => new Set(nodes.list().map((n) => n.name)), lifetimeMs: config.tokenLifetimeMs }
  if (shared !== undefined && mesh === undefined) log.info('no mesh across nodes: only this node\'s endpoints are selected (needs --underlay-address and --listen with TLS or --insecure)', {})
  const observe = combineObservers([tracing?.pipeline, meters?.pipeline])
  const sriov = sriovOptions(config)
  const memif = memifOptions(config, log)
  const dataplane = createDataplane({ registry, table, nodeName: config.nodeName, netnsAllow: netns, netlinkAside: aside !== 'off', log, sriov, ...(memif === undefined ? {} : { memif }), ...(claims === undefined ? {} : { claims }), ...(mesh === undefined ? {} : { mesh }), ...(observe === undefined ? {} : { observe }) })
  server.setHandler(dataplane.handler)
  // CNI calls from the shim run in-process against the same pipeline, table and registry.
  const cniObserver = combineCniObservers([tracing?.cni, meters?.cni])
  const cni = new CniService({
    handler: () => dataplane.handler,
    table,
    registry,
    podInfo: () => podInfo,
    check: (entry) => dataplane.check(entry),
    netns,
    endpointPolicy: config.endpointPolicy,
    ...(shared === undefined ? {} : { endpointLifetimeMs: config.endpointTtlMs }),
    readiness: () => ({ ready: true, reason: '' }),
    shutdown: server.stopping,
    log,
    ...(cniObserver === undefined ? {} : { observe: cniObserver }),
  })
  server.setCni((req) => cni.run(req))
  server.setRoundRobin(dataplane.roundRobin)
  const reconciled = await dataplane.healer.reconcile()
  log.info('reconciled connections with the kernel', reconciled)
  await reconcileClaims(state, dataplane, log)
  dataplane.healer.start()
  dataplane.remote?.start()
  const upkeep = startSharedUpkeep(state, config, log)
  // Garbage collected once the agent is idle after a burst, so its memory goes back (agent/idle-gc.ts).
  const idleGc = startIdleGc({ collected: (before, after, ms) => log.debug('collected garbage while idle', { heapBefore: before, heapAfter: after, ms: Math.round(ms) }) })

  let stopping: Promise<void> | undefined
  const stop = (signal: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping', { signal })
      idleGc.stop()
      upkeep.stop()
      claims?.stop()
      vnis?.stop()
      // server.stop() first: its shutdown signal also ends the peer listener's monitor streams.
      await Promise.all([server.stop(), peer?.close(), web?.close(), metricsServer?.close()])
      peerTls?.close()
      await dataplane.stop()
      // The memif forwarders keep serving (a datapath outlives the agent); the next agent adopts them.
      await memif?.forwarder.stop({ keepRunning: true })
      peers?.close()
      registry.close()
      podInfo?.close()
      await nodes?.stop()
      await shared?.close()
      await table.flush()
      await tracing?.shutdown().catch((err: unknown) => log.warn('traces: the last spans could not be exported', { err }))
      log.info('stopped', {})
    })()
    return stopping
  }
  const done = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      stop(signal).then(
        () => resolve(0),
        (err: unknown) => {
          log.error('stop failed', { err })
          resolve(1)
        },
      )
    }
    process.once('SIGTERM', onSignal)
    process.once('SIGINT', onSignal)
  })

  try {
    await server.start()
  } catch (err) {
    log.error('cannot serve', { socket: config.socket, err })
    registry.close()
    podInfo?.close()
    await nodes?.stop()
    await shared?.close()
    return 1
  }
  try {
    metricsServer = await startMetricsEndpoint(config, metrics, meters, log)
    peer = await startPeerApi(config, server, peerTls, nodes, log)
    web = await startTopologyWeb(config, state, log)
  } catch (err) {
    if (!(err instanceof ListenerStartError)) throw err
    process.stderr.write(`nsm-agent: ${err.message}\n`)
    await stop(err.stopReason)
    return 1
  }
  // Halves this node holds for clients on other nodes that no longer have them (this agent was down while
  // they moved or closed): asked once, in the background (an unreachable node's halves expire instead).
  dataplane.remote?.collectOrphans().then(
    (closed) => closed > 0 && log.info('closed remote halves whose clients are gone', { closed }),
    (err: unknown) => log.warn('collecting remote halves failed', { err }),
  )
  log.info('ready', { ...(peer === undefined ? {} : { peer: peer.address }), ...(metricsServer === undefined ? {} : { metrics: metricsServer.address }), ...(web === undefined ? {} : { web: web.url }), socket: config.socket, stateDir: config.stateDir, nodeName: config.nodeName, store: config.store, version: pkg.version, pid: process.pid })
  return done
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`nsm-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)

