// The single mapping from an error to a grpc-js ServiceError (CONVENTIONS 8): every service handler in
// agent/server/ ends in toServiceError(), nowhere else converts errors.
import { Metadata, type ServiceError } from '@grpc/grpc-js'
import { AgentError, CNI_CODE_KEY, cniCodeFor, ERROR_CODE_KEY, GRPC_STATUS } from './agent-error.js'

/** The one mapping from any error to a grpc-js ServiceError. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const e = AgentError.from(err)
  const metadata = new Metadata()
  metadata.set(ERROR_CODE_KEY, e.code)
  metadata.set(CNI_CODE_KEY, String(cniCodeFor(e.code)))
  return { code: GRPC_STATUS[e.code], details: `[${e.code}] ${e.message}`, metadata }
}

