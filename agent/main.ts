// dist/nsm-agent: the node agent's entry and composition root. Loads the config (YAML + flags), opens the
// state (connection table, registry stores) under the state dir, builds the server with its hooks and the
// CNI service, serves on the unix socket (gRPC and the CNI shim's calls) and, with --listen, the NSM API to
// other agents (agent/peer/), prints one JSON `ready` line, and on SIGTERM/SIGINT stops gracefully (streams end,
// the socket is removed, state is flushed) and exits 0. Exit 2: bad config; exit 1: failed to start (the
// state dir locked by another agent, or state that cannot be written: the message names the file).
import { accessSync, constants, mkdirSync } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import pkg from '../package.json'
import { ConfigError, type AgentConfig } from './config/config.js'
import { loadConfig } from './config/load.js'
import { USAGE } from './config/settings.js'
import { ConnectionTable } from './connections/table.js'
import { lockStateDir, StateDirLockedError } from './connections/state-lock.js'
import { Registry } from './registry/registry.js'
import { checkStoredEndpoint, checkStoredService, serviceCodec, storedEndpointCodec, timestampMs, type StoredEndpoint } from './registry/records.js'
import { FileStore } from './registry/store.js'
import { DirectoryPodInfoSource } from './podinfo/directory.js'
import type { PodInfoSource } from './podinfo/types.js'
import { jsonLogger, type Logger } from './server/log.js'
import { AgentServer } from './server/server.js'
import { createDataplane, type MemifOptions, type SriovOptions } from './pipeline/index.js'
import { MemifForwarders } from './mechanisms/memif/forwarder.js'
import { agentKey } from './mechanisms/memif/endpoint.js'
import { CniService, combineCniObservers } from './cni/index.js'
import { refreshCniEndpoints } from './cni/endpoint.js'
import { NetnsPolicy } from '../pkg/netns-policy.js'
import type { Kv } from './store/kv.js'
import { KvStore } from './store/kv-store.js'
import { NodeRecords } from './store/nodes.js'
import { AddressClaims } from './store/claims.js'
import { VniClaims } from './store/vni-claims.js'
import { PeerDirectory } from './peer/directory.js'
import type { P2PRecord } from '../ipam/p2p/index.js'
import { openSharedStore } from './store/open.js'
import { PeerTls, PeerTlsError } from './peer/tls.js'
import { peerUrlFor, startPeerListener, type PeerListener } from './peer/server.js'
import type { Tracing } from './tracing/index.js'
import { combineObservers } from './pipeline/observe.js'
import type { MetricsServer } from './metrics/index.js'
import { startTopologyPage, type TopologyPage } from './topology/web.js'
import { agentTopologySource } from './topology/source.js'

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
  let state: { table: ConnectionTable; registry: Registry }
  let shared: Kv | undefined
  let nodes: NodeRecords | undefined
  let claims: AddressClaims | undefined
  let vnis: VniClaims | undefined
  try {
    shared = await openSharedStore(config, (msg, fields) => log.warn(msg, fields))
    if (shared !== undefined && metrics !== undefined && meters !== undefined) shared = metrics.timedKv(shared, meters.series)
    state = await openState(config, netns, log, reportListenerError, shared)
    if (shared !== undefined) {
      nodes = await NodeRecords.start(shared, { name: config.nodeName, underlayAddress: config.underlayAddress, peerUrl: config.peerUrl }, { ttlMs: config.nodeTtlMs, onError: (msg, fields) => log.warn(msg, fields) })
      claims = await AddressClaims.start(shared, config.nodeName)
      vnis = await VniClaims.start(shared, config.nodeName)
    }
  } catch (err) {
    await shared?.close().catch(() => undefined)
    // A state dir that cannot be written (no room for the journal, an I/O error): the message names the file.
    log.error('cannot open the state', { stateDir: config.stateDir, err })
    process.stderr.write(`nsm-agent: ${(err as Error).message}\n`)
    return 1
  }
  const { table, registry } = state
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
  const dataplane = createDataplane({ registry, table, nodeName: config.nodeName, netnsAllow: netns, log, sriov, ...(memif === undefined ? {} : { memif }), ...(claims === undefined ? {} : { claims }), ...(mesh === undefined ? {} : { mesh }), ...(observe === undefined ? {} : { observe }) })
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
  if (claims !== undefined) await reassertClaims(claims, dataplane.pool.allRecords(), log)
  if (vnis !== undefined) {
    const released = await vnis.retain(new Set(dataplane.records.all().map((r) => r.connectionId))).catch(() => 0)
    if (released > 0) log.info('released the VNI claims of connections that are gone', { released })
  }
  dataplane.healer.start()
  dataplane.remote?.start()
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

  let stopping: Promise<void> | undefined
  const stop = (signal: string): Promise<void> => {
    stopping ??= (async () => {
      log.info('stopping', { signal })
      if (refresher !== undefined) clearInterval(refresher)
      if (collector !== undefined) clearInterval(collector)
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
  if (metrics !== undefined && meters !== undefined && config.metricsAddress !== undefined) {
    try {
      metricsServer = await metrics.serveMetrics(meters.registry, config.metricsAddress, (err) => log.warn('metrics: a scrape failed', { err }), meters.flush)
    } catch (err) {
      log.error('cannot serve the metrics', { metricsAddress: config.metricsAddress, err })
      process.stderr.write(`nsm-agent: --metrics-address ${config.metricsAddress}: ${(err as Error).message}\n`)
      await stop('metrics listener failed')
      return 1
    }
    log.info('metrics served', { address: metricsServer.address, path: '/metrics' })
  }
  // Other agents call this one's NSM API here; the node record says where (ARCHITECTURE §12).
  if (config.listen !== undefined) {
    try {
      peer = await startPeerListener({
        listen: config.listen,
        ...(peerTls === undefined ? { insecure: true as const } : { tls: peerTls }),
        services: server.nsmServices(),
        nodes: nodes === undefined ? undefined : { list: () => nodes.list() },
        log,
      })
    } catch (err) {
      log.error('cannot serve the peer listener', { listen: config.listen, err })
      process.stderr.write(`nsm-agent: --listen ${config.listen}: ${(err as Error).message}\n`)
      await stop('peer listener failed')
      return 1
    }
    const peerUrl = config.peerUrl !== '' ? config.peerUrl : peerUrlFor(peer.address, config.underlayAddress)
    await nodes?.setPeerUrl(peerUrl).catch((err: unknown) => log.warn('node record: the peer URL is not written yet, the next rewrite writes it', { peerUrl, err }))
    log.info('peer listener ready', { address: peer.address, peerUrl, tls: peer.secure, ...(peerTls === undefined ? {} : { serialNumber: peerTls.current.serialNumber, fingerprint256: peerTls.current.fingerprint256 }) })
  }
  // The live topology page (agent/topology/web.ts): read-only, loopback unless --web-public.
  if (config.webAddress !== undefined) {
    const source = agentTopologySource({ nodeName: config.nodeName, table, registry, nodes: nodes === undefined || shared === undefined ? undefined : { store: shared.backend, list: () => nodes.list() } })
    try {
      web = await startTopologyPage({ address: config.webAddress, source, log })
    } catch (err) {
      log.error('cannot serve the topology page', { webAddress: config.webAddress, err })
      process.stderr.write(`nsm-agent: --web-address ${config.webAddress}: ${(err as Error).message}\n`)
      await stop('topology page failed')
      return 1
    }
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

/**
 * The MEMIF mechanism, when its forwarder program is there (`--memif-forwarder`, found on PATH or at its
 * absolute path); otherwise a request for a memif is refused (104) and the start says why.
 */
function memifOptions(config: AgentConfig, log: Logger): (MemifOptions & { forwarder: MemifForwarders }) | undefined {
  if (config.memifForwarder === 'none') return undefined
  const program = findProgram(config.memifForwarder)
  if (program === undefined) {
    log.warn('MEMIF is not served: no memif forwarder program (install Debian\'s dpdk-dev for dpdk-testpmd, or set --memif-forwarder)', { memifForwarder: config.memifForwarder })
    return undefined
  }
  const forwarder = new MemifForwarders({ runDir: join(config.stateDir, 'memif-fwd'), testpmd: program, ...(config.memifCpu === undefined ? {} : { cpu: config.memifCpu }), log })
  forwarder.on('restarted', (ids: string[], reason: string) => log.warn('memif forwarder restarted: its pods\' DPDK clients reopen their ports', { connections: ids, reason }))
  return { root: config.memifRoot, agent: agentKey(config.stateDir), forwarder }
}

/** An executable at `name` (absolute) or in a directory of PATH. */
function findProgram(name: string): string | undefined {
  const candidates = isAbsolute(name) ? [name] : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter((d) => d !== '').map((d) => join(d, name))
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK)
      return c
    } catch {
      // not here
    }
  }
  return undefined
}

/**
 * The SR-IOV mechanism's places. NSM_AGENT_TEST_SRIOV_HANG (`tagged`, `moved`, `configured`) is a crash
 * test's seam: the build stops for good after that step, so the test can SIGKILL the agent right there.
 */
function sriovOptions(config: AgentConfig): SriovOptions {
  const hang = process.env.NSM_AGENT_TEST_SRIOV_HANG ?? ''
  return {
    sysfsRoot: config.sysfsRoot,
    devinfoDir: config.devinfoDir,
    claimDir: join(config.stateDir, 'sriov'),
    ...(hang === '' ? {} : { afterStep: (step: string) => (step === hang ? new Promise<void>(() => undefined) : undefined) }),
  }
}
