// /nsmcni.Agent/*: what NSM has no method for. GetPodInfo (through a PodInfoSource), Check (table state,
// then the kernel through the AttachmentChecker hook), Detach (CNI DEL in one call: the attachment's
// connections closed through the installed handler, the container's endpoints unregistered), GC (closes
// a network's connections whose CNI attachment is no longer valid, through the installed handler),
// Status, endpoint registration with our extension, and Explain (agent/select's report over the registry).
import type { sendUnaryData, ServerUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js'
import { Connection, State } from '../../proto/gen/networkservice/connection.js'
import { NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import type { Empty } from '../../proto/gen/google/protobuf/empty.js'
import type {
  Attachment,
  CheckProblem,
  CheckRequest,
  CheckResponse,
  DetachRequest,
  DetachResponse,
  EndpointQuery,
  EndpointRegistration,
  EndpointRegistrations,
  ExplainRequest,
  ExplainResponse,
  GCRequest,
  GCResponse,
  PodInfo,
  PodInfoRequest,
  StatusResponse,
} from '../../proto/gen/nsmcni/nsmcni.js'
import { isContainerEndpoint } from '../../conf/endpoint-names.js'
import { explain, type RoundRobin } from '../select/index.js'
import type { ConnectionEntry, ConnectionTable } from '../connections/table.js'
import { endpointCandidates } from '../registry/candidates.js'
import { timestampOf, type Registry } from '../registry/registry.js'
import { AgentError } from './agent-error.js'
import { withCallContext } from './call-context.js'
import type { CallContext, NetworkServiceHandler } from './handler.js'
import { toServiceError } from './grpc-status.js'
import type { Logger } from './log.js'

/** The kernel half of CNI CHECK, supplied by the datapath: problems found for one connection (none = ok). */
export interface AttachmentChecker {
  check(entry: ConnectionEntry, ctx: CallContext): Promise<CheckProblem[]>
}

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
  checker: () => AttachmentChecker | undefined
  /** Extra readiness conditions (e.g. the kernel layer); the server adds its own (not shutting down). */
  readiness: () => Readiness
  roundRobin: () => RoundRobin | undefined
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

function checkAttachment(field: string, a: Attachment | undefined, needIfname: boolean): Attachment {
  if (a === undefined) throw AgentError.invalid(field, 'is required')
  if (a.network === '') throw AgentError.invalid(`${field}.network`, 'is required')
  if (a.containerId === '') throw AgentError.invalid(`${field}.container_id`, 'is required')
  if (needIfname && a.ifname === '') throw AgentError.invalid(`${field}.ifname`, 'is required')
  return a
}

/**
 * CNI DEL of one attachment: its connections (the table's, then `connection_ids` the table does not list
 * under it) closed one by one through the handler's close, the same path as NetworkService/Close (the
 * pipeline's per-id lock: never racing a Request or heal of the id; a failed teardown keeps its record,
 * so the runtime's retried DEL finds it again), stopping at the first failure; then the endpoints a CNI
 * ADD registered for the container, named by conf/endpoint-names.ts. Unknown ids, no connections and
 * endpoints already gone are success. Nothing is changed when the request is invalid.
 */
async function detach(deps: NsmcniDeps, req: DetachRequest, ctx: CallContext, done: DetachResponse): Promise<DetachResponse> {
  const a = checkAttachment('attachment', req.attachment, true)
  req.connectionIds.forEach((id, i) => {
    if (id === '') throw AgentError.invalid(`connection_ids[${i}]`, 'is empty')
    if (!id.startsWith(`${a.containerId}-`)) {
      throw AgentError.invalid(`connection_ids[${i}]`, `${JSON.stringify(id)} is not a connection id of container ${a.containerId} (<container_id>-<ifname>)`)
    }
  })
  const conns = deps.table.byAttachment(a.network, a.containerId, a.ifname).map((e) => e.connection)
  for (const id of req.connectionIds) {
    if (!conns.some((c) => c.id === id)) conns.push(deps.table.get(id)?.connection ?? Connection.fromPartial({ id }))
  }
  // What a Close from the plugin carries as nsmcni-* metadata (none on a DEL without CNI_NETNS).
  const closeCtx: CallContext = { signal: ctx.signal, metadata: ctx.metadata, attachment: a.netns === '' ? undefined : { network: a.network, containerId: a.containerId, ifname: a.ifname, netns: a.netns } }
  for (const c of conns) {
    const known = deps.table.get(c.id) !== undefined
    try {
      await deps.handler().close(c, closeCtx)
    } catch (err) {
      const e = AgentError.from(err)
      throw new AgentError(e.code, `close ${c.id}: ${e.message}`, { ...(e.field === undefined ? {} : { field: e.field }), cause: err })
    }
    if (known) done.closedConnectionIds.push(c.id)
  }
  for (const s of deps.registry.findEndpoints()) {
    const name = s.endpoint.name
    if (!isContainerEndpoint(name, a.containerId)) continue
    const removed = await deps.registry.unregisterEndpoint(name).catch((err: unknown) => {
      const e = AgentError.from(err)
      throw new AgentError(e.code, `unregister endpoint ${name}: ${e.message}`, { cause: err })
    })
    if (removed !== undefined) done.unregisteredEndpoints.push(name)
  }
  return done
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

    check: unary(deps, async (req: CheckRequest, ctx): Promise<CheckResponse> => {
      const a = checkAttachment('attachment', req.attachment, false)
      const entries = deps.table.byAttachment(a.network, a.containerId, a.ifname === '' ? undefined : a.ifname)
      const problems: CheckProblem[] = []
      if (entries.length === 0) {
        problems.push({ code: 'connection-missing', message: `no connection for ${a.network}/${a.containerId}${a.ifname === '' ? '' : `/${a.ifname}`}`, connectionId: '' })
      }
      const checker = deps.checker()
      for (const e of entries) {
        const id = e.connection.id
        if (e.connection.state !== State.UP) problems.push({ code: 'connection-down', message: `connection ${id} is ${State[e.connection.state] ?? e.connection.state}`, connectionId: id })
        if (checker !== undefined) problems.push(...(await checker.check(e, ctx)))
      }
      return { ok: problems.length === 0, problems, connections: entries.map((e) => e.connection) }
    }),

    detach: unary(deps, async (req: DetachRequest, ctx): Promise<DetachResponse> => {
      const done: DetachResponse = { closedConnectionIds: [], unregisteredEndpoints: [] }
      const a = req.attachment
      const fields = { network: a?.network, containerId: a?.containerId, ifname: a?.ifname, netns: a?.netns }
      try {
        await detach(deps, req, ctx, done)
      } catch (err) {
        deps.log.warn('detach failed', { ...fields, closed: done.closedConnectionIds, err })
        throw err
      }
      deps.log.info('detached', { ...fields, closed: done.closedConnectionIds, unregistered: done.unregisteredEndpoints })
      return done
    }),

    gC: unary(deps, async (req: GCRequest, ctx): Promise<GCResponse> => {
      if (req.network === '') throw AgentError.invalid('network', 'is required')
      req.validAttachments.forEach((a, i) => {
        if (a.containerId === '') throw AgentError.invalid(`valid_attachments[${i}].container_id`, 'is required')
      })
      const valid = (e: ConnectionEntry): boolean =>
        req.validAttachments.some((a) => a.containerId === e.attachment?.containerId && (a.ifname === '' || a.ifname === e.attachment.ifname))
      const closed: string[] = []
      const failures: string[] = []
      for (const e of deps.table.byAttachment(req.network)) {
        if (valid(e)) continue
        try {
          await deps.handler().close(e.connection, ctx)
          closed.push(e.connection.id)
        } catch (err) {
          failures.push(`${e.connection.id}: ${(err as Error).message}`)
        }
      }
      if (failures.length > 0) {
        throw new AgentError('INTERNAL', `gc closed ${closed.length} connection(s) but failed on: ${failures.join('; ')}`)
      }
      return { closedConnectionIds: closed }
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
