// /nsmcni.Agent/*: what NSM has no method for, for nsmctl and tools: GetPodInfo (through the PodInfoSource),
// Status, endpoint registration with our extension, the connection table with CNI attachments, and Explain (agent/select's report over the registry).
// CNI calls do not come here: the shim's frames go to agent/cni (see socket.ts).
import type { sendUnaryData, ServerUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js'
import { NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import type { Empty } from '../../proto/gen/google/protobuf/empty.js'
import type { ConnectionRecords, EndpointQuery, EndpointRegistration, EndpointRegistrations, NodeList, ServiceRegistration, ExplainRequest, ExplainResponse, PodInfo, PodInfoRequest, StatusResponse } from '../../proto/gen/nsmcni/nsmcni.js'
import { explain, type RoundRobin } from '../select/index.js'
import type { ConnectionTable } from '../connections/table.js'
import { endpointCandidates } from '../registry/candidates.js'
import type { Registry } from '../registry/registry.js'
import { timestampOf } from '../registry/records.js'
import { AgentError } from '../errors.js'
import type { NodeRecord } from '../store/nodes.js'
import { withCallContext } from './call-context.js'
import type { CallContext, NetworkServiceHandler } from './handler.js'
import { toServiceError } from './grpc-status.js'
import type { Logger } from './log.js'

/** Where GetPodInfo looks pods up (agent/podinfo implements it: a directory, or the Kubernetes API). */
export interface PodInfoSource {
  /** The pod, or undefined when it does not exist; rejects with `code` INVALID_NAME / UNAVAILABLE. */
  get(namespace: string, name: string): Promise<PodInfo | undefined>
  close(): void
}

export interface Readiness {
  ready: boolean
  reason: string
}

export interface NsmcniDeps {
  handler: () => NetworkServiceHandler
  table: ConnectionTable
  registry: Registry
  nodeName: string
  startedAt: number
  version: string
  shutdown: AbortSignal
  log: Logger
  podInfo: () => PodInfoSource | undefined
  /** Extra readiness conditions (e.g. the kernel layer); the server adds its own (not shutting down). */
  readiness: () => Readiness
  roundRobin: () => RoundRobin | undefined
  /** The shared store's node records; undefined on the file store (then only this node is known). */
  nodes: () => { store: string; list(): NodeRecord[] } | undefined
}

/** ListNodes' answer: the shared store's node records, or this node alone on the file store. */
export function nodeList(nodeName: string, shared: { store: string; list(): NodeRecord[] } | undefined): NodeList {
  if (shared === undefined) {
    return { store: 'file', nodes: [{ name: nodeName, underlayAddress: '', peerUrl: '', lastSeen: timestampOf(Date.now()) }] }
  }
  return {
    store: shared.store,
    nodes: shared.list().map((n) => ({ name: n.name, underlayAddress: n.underlayAddress, peerUrl: n.peerUrl, lastSeen: n.lastSeen === '' ? undefined : timestampOf(Date.parse(n.lastSeen)) })),
  }
}

/** ListConnections' answer: the connection table, each connection with its CNI attachment. */
export function connectionRecords(table: ConnectionTable): ConnectionRecords {
  return {
    connections: table.list().map(({ connection, attachment: a }) => ({
      connection,
      attachment: a === undefined ? undefined : { network: a.network, containerId: a.containerId, ifname: a.ifname, netns: a.netns },
    })),
  }
}

type Unary<Req, Res> = (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void

function unary<Req, Res>(deps: NsmcniDeps, fn: (req: Req, ctx: CallContext) => Promise<Res>): Unary<Req, Res> {
  return (call, cb) => {
    withCallContext(call, deps.shutdown, (ctx) => fn(call.request, ctx)).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toServiceError(err)),
    )
  }
}

export function nsmcniImpl(deps: NsmcniDeps): UntypedServiceImplementation {
  return {
    getPodInfo: unary(deps, async (req: PodInfoRequest): Promise<PodInfo> => {
      if (req.namespace === '') throw AgentError.invalid('namespace', 'is required')
      if (req.name === '') throw AgentError.invalid('name', 'is required')
      const source = deps.podInfo()
      if (source === undefined) throw new AgentError('UNAVAILABLE', 'no pod-info source is configured (podInfoDir or kubernetes)')
      let pod
      try {
        pod = await source.get(req.namespace, req.name)
      } catch (err) {
        const code = (err as { code?: string }).code
        if (code === 'INVALID_NAME') throw new AgentError('INVALID_ARGUMENT', (err as Error).message, { cause: err })
        if (code === 'UNAVAILABLE') throw new AgentError('UNAVAILABLE', (err as Error).message, { cause: err })
        throw err
      }
      if (pod === undefined) throw new AgentError('NOT_FOUND', `pod ${req.namespace}/${req.name} not found`)
      return pod
    }),

    status: unary(deps, async (): Promise<StatusResponse> => {
      const r: Readiness = deps.shutdown.aborted ? { ready: false, reason: 'shutting down' } : deps.readiness()
      return {
        ready: r.ready,
        reason: r.reason,
        version: deps.version,
        connections: deps.table.size,
        endpoints: deps.registry.findEndpoints().length,
        started: timestampOf(deps.startedAt),
        nodeName: deps.nodeName,
      }
    }),

    registerEndpoint: unary(deps, async (req: EndpointRegistration): Promise<EndpointRegistration> => {
      if (req.endpoint === undefined) throw AgentError.invalid('endpoint', 'is required')
      const ext = req.extension ?? { endpointName: req.endpoint.name, netnsPath: '', cidrPools: [], routes: [], excludedPrefixes: [], nodeName: '' }
      const stored = await deps.registry.registerEndpoint(req.endpoint, ext).catch((err: unknown) => {
        // Field names from the registry are relative to the endpoint message; say where they sit here.
        if (AgentError.is(err) && err.field?.startsWith('network_service_endpoint.') === true) {
          const field = err.field.replace(/^network_service_endpoint/, 'endpoint')
          throw new AgentError(err.code, err.message.replace(/^network_service_endpoint/, 'endpoint'), { field, cause: err })
        }
        throw err
      })
      return { endpoint: stored.endpoint, extension: stored.extension }
    }),

    listNodes: unary(deps, async (): Promise<NodeList> => nodeList(deps.nodeName, deps.nodes())),

    registerService: unary(deps, async (req: ServiceRegistration): Promise<ServiceRegistration> => {
      if (req.service === undefined) throw AgentError.invalid('service', 'is required')
      const service = await deps.registry.registerService(req.service, req.policy ?? null).catch((err: unknown) => {
        // Field names from the registry are relative to the service message; say where they sit here.
        if (AgentError.is(err) && err.field?.startsWith('network_service.') === true) {
          const field = err.field.replace(/^network_service/, 'service')
          throw new AgentError(err.code, err.message.replace(/^network_service/, 'service'), { field, cause: err })
        }
        throw err
      })
      return { service, policy: deps.registry.servicePolicy(service.name) }
    }),

    unregisterEndpoint: unary(deps, async (req: EndpointQuery): Promise<Empty> => {
      if (req.endpointName === '') throw AgentError.invalid('endpoint_name', 'is required')
      const removed = await deps.registry.unregisterEndpoint(req.endpointName)
      if (removed === undefined) throw new AgentError('NOT_FOUND', `endpoint ${req.endpointName} is not registered`)
      return {}
    }),

    listEndpoints: unary(deps, async (req: EndpointQuery): Promise<EndpointRegistrations> => {
      const all = deps.registry.findEndpoints(req.endpointName === '' ? undefined : NetworkServiceEndpoint.fromPartial({ name: req.endpointName }))
      return { endpoints: all.map((e) => ({ endpoint: e.endpoint, extension: e.extension })) }
    }),

    listConnections: unary(deps, async (): Promise<ConnectionRecords> => connectionRecords(deps.table)),

    explain: unary(deps, async (req: ExplainRequest): Promise<ExplainResponse> => {
      if (req.networkService === '') throw AgentError.invalid('network_service', 'is required')
      const service = deps.registry.service(req.networkService)
      if (service === undefined) throw new AgentError('NOT_FOUND', `network service ${req.networkService} is not registered`)
      const rr = deps.roundRobin()
      const explanation = explain({
        service,
        candidates: endpointCandidates(deps.registry, deps.nodeName),
        clientLabels: { nodeName: deps.nodeName, ...req.labels },
        now: Date.now(),
        ...(rr === undefined ? {} : { roundRobin: rr }),
      })
      return { explanationJson: JSON.stringify(explanation) }
    }),
  }
}
