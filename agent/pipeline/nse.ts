// nse — endpoints that serve the NSM API themselves (ARCHITECTURE §12), as every NSM NSE does: registered
// with a `unix://` or `tcp://` URL and no netns. The Request goes to the endpoint with the mechanism this
// agent proposes (KERNEL, its interface name on the endpoint's side); the endpoint does its own IPAM and
// answers with its IP context and, in the mechanism's `inodeURL`, the netns its interface goes into
// (`file:///proc/<pid>/ns/net` or `inode://<dev>/<ino>`, judged by the netns policy like any path). The
// veth is then built as for any local endpoint, with exactly the answered addresses and routes (a host
// route to the other end is added on each side when the answer has none).
//
// Undo: a later failure closes the connection at the endpoint. Close (after the veth is removed) closes it
// there too, best effort within CLOSE_TIMEOUT_MS. Both calls carry the caller's trace context (`traceparent`
// in their gRPC metadata, from the pipeline hook's `outgoing`) when tracing is on, as calls to peer agents do.
// For any other endpoint the element only hands the call on, and the hook does not watch it (no span).
// Needs: endpoint. Provides: endpoint (with its netns), addresses (for API endpoints).
import { State, type Connection } from '../../proto/gen/networkservice/connection.js'
import type { Route } from '../../proto/gen/networkservice/connectioncontext.js'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice.js'
import { AgentClient } from '../client/client.js'
import { peerTarget } from '../peer/client.js'
import { AgentError } from '../errors.js'
import { endpointIfname } from '../mechanisms/kernel/names.js'
import { netnsPathOfUrl } from '../../pkg/netns-url.js'
import type { NetnsPolicy } from '../../pkg/netns-policy.js'
import type { Logger } from '../server/log.js'
import { withUndo, type Element, type PipelineClose, type PipelineRequest } from './chain.js'
import { CLOSE_TIMEOUT_MS, pathBack, peerError } from './forward.js'
import type { P2PAddresses } from './types.js'

export interface NseOptions {
  policy: NetnsPolicy
  /** The API URL of a registered endpoint (for Close), if it serves the NSM API. */
  apiOf(endpointName: string): string | undefined
  requestTimeoutMs?: number
  log: Logger
  onUndoError(err: unknown): void
}

/** A client of one endpoint: every call carries `metadata()` besides its own (the trace context). */
class NseClient extends AgentClient {
  constructor(
    url: string,
    target: string,
    private readonly metadata: (() => Record<string, string>) | undefined,
  ) {
    super(url, target)
  }

  protected override baseMetadata(): Record<string, string> {
    return this.metadata?.() ?? {}
  }
}

/**
 * One client per endpoint URL (unix:///path or tcp://host:port), dialed lazily. `metadata`: entries every
 * call carries (the pipeline hook's `outgoing`: the running span's `traceparent`).
 */
export class NseClients {
  private readonly clients = new Map<string, AgentClient>()

  constructor(private readonly metadata?: () => Record<string, string>) {}

  get(url: string): AgentClient {
    let c = this.clients.get(url)
    if (c === undefined) {
      const target = targetOf(url)
      c = new NseClient(url, target, this.metadata)
      this.clients.set(url, c)
    }
    return c
  }

  close(): void {
    for (const c of this.clients.values()) c.close()
    this.clients.clear()
  }
}

/** `unix:///path` → `unix:/path`, `tcp://host:port` → `host:port` (grpc-js targets). */
export function targetOf(url: string): string {
  if (url.startsWith('unix://')) return `unix:${url.slice('unix://'.length)}`
  try {
    return peerTarget(url)
  } catch {
    throw AgentError.invalid('endpoint.url', `${JSON.stringify(url)}: an API endpoint's URL is unix:///path or tcp://host:port`)
  }
}

export function nseElement(o: NseOptions, clients: NseClients): Element {
  const closeAt = async (url: string, c: Connection, why: string): Promise<void> => {
    try {
      await clients.get(url).unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, { ...c, state: State.DOWN }, { timeoutMs: CLOSE_TIMEOUT_MS })
    } catch (err) {
      o.log.warn('closing a connection at its NSM endpoint failed', { connection: c.id, url, why, err: (err as Error).message })
    }
  }
  /** The API URL this request goes to: a local endpoint serving the NSM API, addresses not chosen yet. */
  const requestUrl = (r: PipelineRequest): string | undefined => {
    const endpoint = r.state.endpoint
    return endpoint === undefined || !endpoint.local || r.state.addresses !== undefined ? undefined : endpoint.api
  }
  const closeUrl = (cl: PipelineClose): string | undefined => (cl.record === undefined ? undefined : o.apiOf(cl.record.endpointName))
  return {
    name: 'nse',
    needs: ['endpoint'],
    provides: ['endpoint', 'addresses'],
    observed: { request: (r) => requestUrl(r) !== undefined, close: (cl) => closeUrl(cl) !== undefined },
    wrap: (next) => ({
      async request(r) {
        const endpoint = r.state.endpoint
        const url = requestUrl(r)
        if (endpoint === undefined || url === undefined) return next.request(r)
        const c = r.connection
        let answer: Connection
        try {
          answer = await clients.get(url).unary(
            NetworkServiceDefinition,
            NetworkServiceDefinition.methods.request,
            {
              connection: { ...c, mechanism: undefined, networkServiceEndpointName: endpoint.name, state: State.UP },
              mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: endpointIfname(c.id) } }],
            },
            { timeoutMs: o.requestTimeoutMs ?? 15_000, signal: r.ctx.signal },
          )
        } catch (err) {
          throw peerError(`endpoint ${endpoint.name} at ${url}`, err)
        }
        let netns: string
        let addresses: P2PAddresses
        try {
          netns = answeredNetns(endpoint.name, answer, o.policy)
          addresses = answeredAddresses(endpoint.name, answer)
        } catch (err) {
          await closeAt(url, answer, 'its answer was refused')
          throw err
        }
        r.state.endpoint = { ...endpoint, netns }
        r.state.addresses = addresses
        return withUndo(() => next.request({ ...r, connection: { ...c, path: pathBack(c.path, answer.path) } }), () => closeAt(url, answer, 'a later step failed'), o.onUndoError)
      },
      async close(cl) {
        await next.close(cl)
        const url = closeUrl(cl)
        if (url !== undefined) await closeAt(url, cl.connection, 'closed')
      },
    }),
  }
}

/** The endpoint's netns from its answer's KERNEL mechanism (`inodeURL`), judged by the policy. */
function answeredNetns(name: string, answer: Connection, policy: NetnsPolicy): string {
  const field = `endpoint ${name}'s answer: connection.mechanism.parameters.inodeURL`
  const url = answer.mechanism?.type === 'KERNEL' ? answer.mechanism.parameters.inodeURL : undefined
  if (url === undefined || url === '') throw new AgentError('BAD_NETNS', `${field} is missing: the endpoint must name its netns`)
  try {
    return policy.check(netnsPathOfUrl(url))
  } catch (err) {
    const e = AgentError.from(err)
    throw new AgentError(e.code, `${field}: ${e.message}`, { cause: err })
  }
}

/** The answered IP context as the datapath applies it; each side gets a host route to the other's address. */
function answeredAddresses(name: string, answer: Connection): P2PAddresses {
  const ip = answer.context?.ipContext
  if (ip === undefined || ip.srcIpAddrs.length === 0 || ip.dstIpAddrs.length === 0) throw new AgentError('INTERNAL', `endpoint ${name} answered without addresses (context.ip_context src_ip_addrs and dst_ip_addrs)`)
  const withHostRoutes = (routes: readonly Route[], peer: readonly string[]): Route[] => {
    const out = [...routes]
    for (const a of peer) if (!out.some((r) => r.prefix === a)) out.unshift({ prefix: a, nextHop: '' })
    return out
  }
  return {
    src: [...ip.srcIpAddrs],
    dst: [...ip.dstIpAddrs],
    srcRoutes: withHostRoutes(ip.srcRoutes, ip.dstIpAddrs),
    dstRoutes: withHostRoutes(ip.dstRoutes, ip.srcIpAddrs),
    // The endpoint's own IPAM: nothing of this node's allocator.
    record: { connectionId: answer.id, clientId: '', endpointId: '', pairs: [] },
  }
}
