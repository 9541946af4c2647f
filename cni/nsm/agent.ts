// The plugin's side of the agent: one GrpcUnaryClient per call (grpc.ts: gRPC over the plugin's own small
// HTTP/2 client on the unix socket; neither grpc-js nor node:http2, for start-up cost), the `nsmcni-*`
// attachment metadata on Request/Close (plus `nsmcni-add: first|next` on an ADD's Requests, so the agent
// refuses a second ADD of the attachment itself), and the one mapping of agent failures to CNI errors
// (DESIGN §11): unreachable → 100 naming the socket, NO_ENDPOINT 101, POOL_EXHAUSTED 102, BAD_NETNS 103,
// MECHANISM_NOT_SUPPORTED 104, ALREADY_ATTACHED 106 (the agent's message as it is: it names the
// attachment and its connections), INVALID_ARGUMENT 7 (the agent names the field), a deadline or any
// other agent failure 11 (try again later). The agent's message is kept; the original error is the cause.
import { AgentCallError, GrpcUnaryClient } from './grpc'
import { GrpcStatus } from '../../agent/server/agent-error'
import { ADD_METADATA, ATTACHMENT_METADATA, type AddPhase } from '../../agent/server/handler'
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection'
import type { Attachment, CheckResponse, DetachResponse, EndpointRegistration, PodInfo, StatusResponse } from '../../proto/gen/nsmcni/nsmcni'
import { methods } from './messages'
import { CniCode, CniError } from '../protocol/index'
import { NsmCode } from './codes'

/** The CNI attachment the calls are made for (CNI_IFNAME, not the nsm interfaces: GC and CHECK key on it). */
export interface AttachmentRef {
  network: string
  containerId: string
  ifname: string
  /** Empty on a DEL without CNI_NETNS. */
  netns: string
}

/** True when the agent could not be reached at all (no socket, nobody listening): not a refusal. */
export function isUnreachable(err: unknown): boolean {
  return err instanceof AgentCallError && err.unreachable
}

/**
 * True when the agent does not serve the method at all (an agent older than it): grpc-js's own
 * UNIMPLEMENTED, which carries no agent error code. An AgentError that maps to UNIMPLEMENTED (a
 * mechanism not supported) has its code and is a real answer.
 */
export function isUnimplemented(err: unknown): boolean {
  return err instanceof AgentCallError && err.code === GrpcStatus.UNIMPLEMENTED && err.agentCode === undefined
}

/** Maps an agent call failure to the CNI error the runtime sees. */
export function toCniError(err: unknown, what: string, socket: string): CniError {
  if (err instanceof CniError) return err
  if (!(err instanceof AgentCallError)) return CniError.from(err)
  const msg = err.details.replace(/^\[[A-Z_]+\] /, '')
  if (err.unreachable) {
    const errno = (err.cause as { errno?: string } | undefined)?.errno ?? 'unreachable'
    return new CniError(CniCode.AgentUnreachable, `nsm agent unreachable at ${socket} (${errno}): is nsm-agent running? (${what})`, { cause: err })
  }
  if (err.agentCode === 'ALREADY_ATTACHED') return new CniError(NsmCode.AttachmentExists, msg, { cause: err })
  if (err.cniCode === CniCode.AgentUnreachable) return new CniError(CniCode.AgentUnreachable, `nsm agent at ${socket}: ${msg} (${what})`, { cause: err })
  // 999: the agent gave no code that means something to a runtime (a deadline, an internal failure).
  const code = err.cniCode === 999 ? CniCode.TryAgainLater : err.cniCode
  return new CniError(code, `${what}: ${msg}`, { cause: err })
}

export class Agent {
  private readonly client: GrpcUnaryClient

  constructor(
    readonly socket: string,
    private readonly timeoutMs: number,
  ) {
    this.client = new GrpcUnaryClient(socket)
  }

  close(): void {
    this.client.close()
  }

  private metadata(a: AttachmentRef | undefined): Record<string, string> | undefined {
    if (a === undefined || a.netns === '') return undefined
    return {
      [ATTACHMENT_METADATA.network]: a.network,
      [ATTACHMENT_METADATA.containerId]: a.containerId,
      [ATTACHMENT_METADATA.ifname]: a.ifname,
      [ATTACHMENT_METADATA.netns]: a.netns,
    }
  }

  private opts(a?: AttachmentRef): { timeoutMs: number; metadata: Record<string, string> | undefined } {
    return { timeoutMs: this.timeoutMs, metadata: this.metadata(a) }
  }

  /**
   * Raw calls (AgentCallError on failure): callers decide what a failure means for their command.
   * `request` is an ADD's create (`phase`): the agent refuses it (ALREADY_ATTACHED) when the attachment
   * already has connections (`first`) or the id exists, and never treats it as a refresh.
   */
  request(connection: Connection, mechanism: Mechanism, a: AttachmentRef, phase: AddPhase): Promise<Connection> {
    const metadata = { ...this.metadata(a), [ADD_METADATA.key]: phase }
    return this.client.unary(methods.request, { connection, mechanismPreferences: [mechanism] }, { timeoutMs: this.timeoutMs, metadata })
  }

  async closeConnection(connection: Connection, a: AttachmentRef): Promise<void> {
    await this.client.unary(methods.close, connection, this.opts(a))
  }

  podInfo(namespace: string, name: string): Promise<PodInfo> {
    return this.client.unary(methods.getPodInfo, { namespace, name }, this.opts())
  }

  check(a: AttachmentRef, ifname: string): Promise<CheckResponse> {
    const attachment: Attachment = { network: a.network, containerId: a.containerId, ifname, netns: a.netns }
    return this.client.unary(methods.check, { attachment }, this.opts())
  }

  /**
   * CNI DEL in one call: the agent closes the attachment's connections and `connectionIds` (when the
   * table does not list them under it), then unregisters the container's endpoints.
   */
  detach(a: AttachmentRef, connectionIds: readonly string[]): Promise<DetachResponse> {
    const attachment: Attachment = { network: a.network, containerId: a.containerId, ifname: a.ifname, netns: a.netns }
    return this.client.unary(methods.detach, { attachment, connectionIds: [...connectionIds] }, this.opts())
  }

  async gc(network: string, valid: Array<{ containerId: string; ifname: string }>): Promise<string[]> {
    const res = await this.client.unary(
      methods.gc,
      { network, validAttachments: valid.map((v) => ({ network, containerId: v.containerId, ifname: v.ifname, netns: '' })) },
      this.opts(),
    )
    return res.closedConnectionIds
  }

  status(): Promise<Pick<StatusResponse, 'ready' | 'reason'>> {
    return this.client.unary(methods.status, {}, this.opts())
  }

  async registerEndpoint(reg: EndpointRegistration): Promise<void> {
    await this.client.unary(methods.registerEndpoint, reg, this.opts())
  }

  async unregisterEndpoint(endpointName: string): Promise<void> {
    await this.client.unary(methods.unregisterEndpoint, { endpointName }, this.opts())
  }

  /** Names of every registered endpoint. */
  listEndpointNames(): Promise<string[]> {
    return this.client.unary(methods.listEndpointNames, { endpointName: '' }, this.opts())
  }
}

/** Runs `fn` with an Agent for `socket`, closing its session afterwards. */
export async function withAgent<T>(socket: string, timeoutMs: number, fn: (agent: Agent) => Promise<T>): Promise<T> {
  const agent = new Agent(socket, timeoutMs)
  try {
    return await fn(agent)
  } finally {
    agent.close()
  }
}
