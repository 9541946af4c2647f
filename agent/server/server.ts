// agent/server/: the agent's unix socket. It serves gRPC (grpc-js): the NSM v1 API (NetworkService,
// MonitorConnection, both registries) and our nsmcni.Agent service, and on the same socket the CNI shim's
// calls (socket.ts tells the two apart; agent/cni runs the calls). It delegates to the pieces other
// folders own: the NetworkServiceHandler (the request pipeline), the connection table, the registry, the
// CNI service, and the optional hooks (pod info, readiness, round-robin for explain).
//
// The socket is created with mode 0600 in a 0700-or-tighter directory (root only). A stale socket left by
// a killed agent is replaced; a socket another live agent answers on is an error. stop() ends watch and
// monitor streams, waits for in-flight unary calls (bounded), and removes the socket.
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js'
import type { Server as NetServer } from 'node:net'
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice.js'
import { MonitorConnectionDefinition } from '../../proto/gen/networkservice/connection.js'
import { NetworkServiceEndpointRegistryDefinition, NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry.js'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni.js'
import type { RoundRobin } from '../select/index.js'
import { dropPeerHeaders } from '../peer/server.js'
import type { ConnectionTable } from '../connections/table.js'
import type { Registry } from '../registry/registry.js'
import { AgentError } from '../errors.js'
import { toGrpcService } from './grpc-adapter.js'
import { recordOnlyHandler, type NetworkServiceHandler } from './handler.js'
import type { Logger } from './log.js'
import { monitorImpl, networkServiceImpl } from './networkservice-service.js'
import { nsmcniImpl, type PodInfoSource, type Readiness } from './nsmcni-service.js'
import { dualProtocolServer } from './socket.js'
import type { ShimAnswer, ShimRequest } from '../../cni/nsm/frame.js'
import { CniCode, CniError, NEWEST } from '../../cni/protocol/index.js'
import { endpointRegistryImpl, serviceRegistryImpl } from './registry-service.js'
import type { NodeRecord } from '../store/nodes.js'

export interface AgentServerOptions {
  socket: string
  nodeName: string
  version: string
  table: ConnectionTable
  registry: Registry
  log: Logger
  /** Defaults to recordOnlyHandler(table) until the pipeline is installed with setHandler. */
  handler?: NetworkServiceHandler
  podInfo?: PodInfoSource
  /** Runs the CNI shim's calls (agent/cni CniService.run); until set, they are answered 11 (not ready). */
  cni?: (req: ShimRequest) => Promise<ShimAnswer>
  readiness?: () => Readiness
  roundRobin?: RoundRobin
  /** The shared store's node records (agent/store/nodes.ts); absent on the file store. */
  nodes?: { store: string; list(): NodeRecord[] }
}

export class AgentServer {
  private handler: NetworkServiceHandler
  private podInfo: PodInfoSource | undefined
  private cni: ((req: ShimRequest) => Promise<ShimAnswer>) | undefined
  private net: NetServer | undefined
  private readiness: () => Readiness
  private roundRobin: RoundRobin | undefined
  // A local caller cannot pose as a peer agent (agent/peer/server.ts dropPeerHeaders).
  private readonly grpc = new Server({ interceptors: [dropPeerHeaders] })
  private readonly nsm: ReadonlyArray<{ definition: ServiceDefinition; implementation: UntypedServiceImplementation }>
  private readonly shutdown = new AbortController()
  private listening = false

  constructor(private readonly opts: AgentServerOptions) {
    this.handler = opts.handler ?? recordOnlyHandler(opts.table)
    this.podInfo = opts.podInfo
    this.cni = opts.cni
    this.readiness = opts.readiness ?? (() => ({ ready: true, reason: '' }))
    this.roundRobin = opts.roundRobin
    const common = { table: opts.table, shutdown: this.shutdown.signal, log: opts.log, handler: () => this.handler }
    this.nsm = [
      { definition: toGrpcService(NetworkServiceDefinition), implementation: networkServiceImpl(common) },
      { definition: toGrpcService(MonitorConnectionDefinition), implementation: monitorImpl(common) },
    ]
    for (const s of this.nsm) this.grpc.addService(s.definition, s.implementation)
    const reg = { registry: opts.registry, shutdown: this.shutdown.signal, log: opts.log }
    this.grpc.addService(toGrpcService(NetworkServiceRegistryDefinition), serviceRegistryImpl(reg))
    this.grpc.addService(toGrpcService(NetworkServiceEndpointRegistryDefinition), endpointRegistryImpl(reg))
    this.grpc.addService(
      toGrpcService(AgentDefinition),
      nsmcniImpl({
        ...common,
        registry: opts.registry,
        nodeName: opts.nodeName,
        startedAt: Date.now(),
        version: opts.version,
        podInfo: () => this.podInfo,
        readiness: () => (this.listening ? this.readiness() : { ready: false, reason: 'not serving yet' }),
        roundRobin: () => this.roundRobin,
        nodes: () => opts.nodes,
      }),
    )
  }

  /**
   * The NSM v1 services (NetworkService, MonitorConnection) on this server's handler, table and shutdown
   * signal, for the peer listener (agent/peer/) to serve to other agents too. The registries and
   * nsmcni.Agent are not among them: they are for local root clients.
   */
  nsmServices(): ReadonlyArray<{ definition: ServiceDefinition; implementation: UntypedServiceImplementation }> {
    return this.nsm
  }

  /** Installs the request pipeline (calls in flight finish on the old one). */
  setHandler(handler: NetworkServiceHandler): void {
    this.handler = handler
  }
  setPodInfoSource(source: PodInfoSource | undefined): void {
    this.podInfo = source
  }
  setCni(cni: (req: ShimRequest) => Promise<ShimAnswer>): void {
    this.cni = cni
  }
  setReadiness(readiness: () => Readiness): void {
    this.readiness = readiness
  }
  setRoundRobin(rr: RoundRobin | undefined): void {
    this.roundRobin = rr
  }

  /** Signal aborted when stop() begins: long-running work started for calls should watch it. */
  get stopping(): AbortSignal {
    return this.shutdown.signal
  }

  async start(): Promise<void> {
    const socket = this.opts.socket
    mkdirSync(dirname(socket), { recursive: true, mode: 0o700 })
    await removeStaleSocket(socket)
    const injector = this.grpc.createConnectionInjector(ServerCredentials.createInsecure())
    const net = dualProtocolServer({
      grpc: (s) => injector.injectConnection(s),
      cni: (req) => (this.cni === undefined ? Promise.resolve(notReady) : this.cni(req)),
      onError: (err) => this.opts.log.warn('CNI call failed', { err }),
    })
    // umask 077 while binding, so the socket is never reachable by others, not even before the chmod.
    const previousUmask = process.umask(0o077)
    try {
      await new Promise<void>((resolve, reject) => {
        net.once('error', reject)
        net.listen(socket, () => {
          net.removeListener('error', reject)
          resolve()
        })
      })
    } finally {
      process.umask(previousUmask)
    }
    chmodSync(socket, 0o600)
    this.net = net
    this.listening = true
  }

  /** Graceful stop: no new connections, streams end, unary calls get up to `graceMs`, then the socket is removed. */
  async stop(graceMs = 5000): Promise<void> {
    this.shutdown.abort()
    this.listening = false
    const net = this.net
    this.net = undefined
    const closed = net === undefined ? Promise.resolve() : new Promise<void>((resolve) => net.close(() => resolve()))
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpc.forceShutdown()
        resolve()
      }, graceMs)
      this.grpc.tryShutdown(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    await closed
    try {
      unlinkSync(this.opts.socket)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
  }
}

const notReady: ShimAnswer = { exitCode: 1, stdout: `${JSON.stringify(new CniError(CniCode.TRY_AGAIN_LATER, 'nsm agent is starting: try again').toJSON(NEWEST))}\n`, stderr: '' }

/** Unlinks a socket file nobody answers on; refuses when a live process is serving there. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean
  try {
    isSocket = lstatSync(path).isSocket()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  if (!isSocket) throw new AgentError('FAILED_PRECONDITION', `${path} exists and is not a socket`)
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
  if (live) throw new AgentError('FAILED_PRECONDITION', `another process is serving on ${path}`)
  unlinkSync(path)
}
