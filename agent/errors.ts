// The agent's one error class (ARCHITECTURE §11). Its codes are the project's stable error names
// (pkg/codes.ts), which also give the gRPC status an API client sees (agent/server/grpc-status.ts maps it,
// once) and the CNI code a runtime sees (agent/cni maps it, once). Pipeline elements, the registry and
// the CNI handlers throw AgentError, or let a KernelError from pkg/ through (`from` translates it).
import { ERRORS, isErrorName, type ErrorName } from '../pkg/codes.js'

export type AgentErrorCode = ErrorName

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

  /** The gRPC status for this error. */
  get grpcStatus(): number {
    return ERRORS[this.code].grpc
  }

  /** The CNI code a runtime sees for this error. */
  get cniCode(): number {
    return ERRORS[this.code].cni
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

/** The one wording of "a second ADD of this attachment" (CNI 106): the attachment, its connections, what to do. */
export function alreadyAttachedMessage(a: AttachmentName, connectionIds: readonly string[]): string {
  return `container ${a.containerId} interface ${a.ifname} is already attached to network ${a.network} (connections ${connectionIds.join(', ')}): DEL it first`
}

/** Parses `[CODE] message` back (the status message form: clients that only see the message). */
export function parseStatusMessage(message: string): { code: AgentErrorCode | undefined; message: string } {
  const m = /^\[([A-Z_]+)\] (.*)$/s.exec(message)
  if (m !== null && m[1] !== undefined && isErrorName(m[1])) return { code: m[1], message: m[2] ?? '' }
  return { code: undefined, message }
}
