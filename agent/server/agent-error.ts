// The agent's one error class (CONVENTIONS 8, DESIGN §11). Pure: no grpc-js import, so the lean CNI
// plugin can read codes back (parseStatusMessage, cniCodeFor) through agent/client/.
//
// Pipeline elements, the registry and the nsmcni service throw AgentError (or let a KernelError from
// pkg/ through); grpc-status.ts toServiceError() is the only place that turns an error into a gRPC status.
// The stable code travels in the trailers (`nsmcni-error`: the code name, `nsmcni-cni-code`: the CNI code
// the plugin reports) and as a `[CODE]` prefix of the status message.

/** gRPC status codes (numbers as on the wire). */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5,
  ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10,
  OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const
type Status = (typeof GrpcStatus)[keyof typeof GrpcStatus]
const Status = GrpcStatus

export type AgentErrorCode =
  | 'INVALID_ARGUMENT' // a request field is missing or malformed (`field` names it)
  | 'NOT_FOUND' // the connection, endpoint, service or pod does not exist
  | 'ALREADY_EXISTS'
  | 'ALREADY_ATTACHED' // an ADD's Request for a CNI attachment (or connection id) that exists already (CNI 106)
  | 'NO_ENDPOINT' // selection found no endpoint for the service (CNI 101)
  | 'POOL_EXHAUSTED' // no free address in the endpoint's pools (CNI 102)
  | 'BAD_NETNS' // a netns path is missing, not a netns, or outside the allowlist (CNI 103)
  | 'MECHANISM_NOT_SUPPORTED' // no requested mechanism can be served (CNI 104)
  | 'FAILED_PRECONDITION'
  | 'UNAVAILABLE' // the agent is not ready or is shutting down (CNI 100 on the plugin side)
  | 'UNIMPLEMENTED'
  | 'CANCELLED'
  | 'INTERNAL'

export const GRPC_STATUS: Record<AgentErrorCode, Status> = {
  INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  NOT_FOUND: Status.NOT_FOUND,
  ALREADY_EXISTS: Status.ALREADY_EXISTS,
  ALREADY_ATTACHED: Status.ALREADY_EXISTS,
  NO_ENDPOINT: Status.NOT_FOUND,
  POOL_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  BAD_NETNS: Status.INVALID_ARGUMENT,
  MECHANISM_NOT_SUPPORTED: Status.UNIMPLEMENTED,
  FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  UNAVAILABLE: Status.UNAVAILABLE,
  UNIMPLEMENTED: Status.UNIMPLEMENTED,
  CANCELLED: Status.CANCELLED,
  INTERNAL: Status.INTERNAL,
}

/** CNI error codes (DESIGN §11) the plugin should report for an agent error; 999 = generic (CNI 11). */
const CNI_CODE: Partial<Record<AgentErrorCode, number>> = {
  INVALID_ARGUMENT: 7,
  NO_ENDPOINT: 101,
  POOL_EXHAUSTED: 102,
  BAD_NETNS: 103,
  MECHANISM_NOT_SUPPORTED: 104,
  UNAVAILABLE: 100,
  ALREADY_ATTACHED: 106,
}

export class AgentError extends Error {
  override readonly name = 'AgentError'
  readonly code: AgentErrorCode
  /** For INVALID_ARGUMENT / BAD_NETNS: the request field at fault, e.g. `connection.network_service`. */
  readonly field: string | undefined

  constructor(code: AgentErrorCode, message: string, opts: { field?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
    this.field = opts.field
  }

  static invalid(field: string, message: string): AgentError {
    return new AgentError('INVALID_ARGUMENT', `${field}: ${message}`, { field })
  }

  /** An ADD's Request refused: the attachment already has (or is getting) these connections. */
  static alreadyAttached(a: AttachmentName, connectionIds: readonly string[], note?: string): AgentError {
    return new AgentError('ALREADY_ATTACHED', alreadyAttachedMessage(a, connectionIds, note))
  }

  static is(err: unknown, code?: AgentErrorCode): err is AgentError {
    return err instanceof AgentError && (code === undefined || err.code === code)
  }

  /** Wraps anything thrown into an AgentError, keeping the original as `cause`. */
  static from(err: unknown): AgentError {
    if (err instanceof AgentError) return err
    const kernel = kernelCode(err)
    if (kernel !== undefined) return new AgentError(kernel, (err as Error).message, { cause: err })
    const message = err instanceof Error ? err.message : String(err)
    return new AgentError('INTERNAL', message, { cause: err })
  }
}

// pkg/errors.ts KernelError, recognised by shape so this file does not depend on the kernel layer.
function kernelCode(err: unknown): AgentErrorCode | undefined {
  if (!(err instanceof Error) || err.name !== 'KernelError') return undefined
  switch ((err as Error & { code?: string }).code) {
    case 'BAD_NETNS':
    case 'NETNS_NOT_ALLOWED':
      return 'BAD_NETNS'
    case 'INVALID_ARGUMENT':
    case 'NAME_TOO_LONG':
      return 'INVALID_ARGUMENT'
    case 'EXISTS':
      return 'ALREADY_EXISTS'
    case 'NOT_FOUND':
    case 'NO_SUCH_DEVICE':
      return 'NOT_FOUND'
    default:
      return 'INTERNAL'
  }
}

/** The CNI attachment as messages name it (network, CNI_CONTAINERID, CNI_IFNAME). */
export interface AttachmentName {
  network: string
  containerId: string
  ifname: string
}

/**
 * The one wording of "a second ADD of this attachment" (CNI 106), shared by the agent's refusal and the
 * plugin's own check (endpoint pods): the attachment, the connections it has, what to do.
 */
export function alreadyAttachedMessage(a: AttachmentName, connectionIds: readonly string[], note?: string): string {
  const conns = `connections ${connectionIds.join(', ')}${note === undefined ? '' : ` ${note}`}`
  return `container ${a.containerId} interface ${a.ifname} is already attached to network ${a.network} (${conns}): DEL it first`
}

export const ERROR_CODE_KEY = 'nsmcni-error'
export const CNI_CODE_KEY = 'nsmcni-cni-code'

/** Parses `[CODE] message` back (for clients that only see the status message). */
export function parseStatusMessage(message: string): { code: AgentErrorCode | undefined; message: string } {
  const m = /^\[([A-Z_]+)\] (.*)$/s.exec(message)
  if (m !== null && m[1] !== undefined && m[1] in GRPC_STATUS) {
    return { code: m[1] as AgentErrorCode, message: m[2] ?? '' }
  }
  return { code: undefined, message }
}

export function cniCodeFor(code: AgentErrorCode): number {
  return CNI_CODE[code] ?? 999
}
