// The single mapping from an error to a grpc-js ServiceError (ARCHITECTURE §11): every service handler in
// agent/server/ ends in toServiceError(), nowhere else converts errors. The status code comes from the
// error model (pkg/codes.ts); the stable error name leads the message as `[NAME] ...`, which clients
// read back with parseStatusMessage (agent/errors.ts).
import type { ServiceError } from '@grpc/grpc-js'
import { AgentError } from '../errors.js'

export function toServiceError(err: unknown): Partial<ServiceError> {
  const e = AgentError.from(err)
  return { code: e.grpcStatus, details: `[${e.code}] ${e.message}` }
}
