// Public API of agent/server for the rest of the agent (the pipeline, healing, main.ts).
export { AgentError, GrpcStatus, cniCodeFor, parseStatusMessage, type AgentErrorCode } from './agent-error.js'
export { toServiceError } from './grpc-status.js'
export {
  ADD_METADATA,
  ATTACHMENT_METADATA,
  attachmentFrom,
  recordOnlyHandler,
  type AddPhase,
  type AttachmentInfo,
  type CallContext,
  type NetworkServiceHandler,
} from './handler.js'
export { type AttachmentChecker, type PodInfoSource, type Readiness } from './nsmcni-service.js'
export { AgentServer, type AgentServerOptions } from './server.js'
export { jsonLogger, silentLogger, type Logger } from './log.js'
