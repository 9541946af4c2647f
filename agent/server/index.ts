// Public API of agent/server for the rest of the agent (the pipeline, healing, main.ts).
export { AgentError, parseStatusMessage, type AgentErrorCode } from '../errors.js'
export { toServiceError } from './grpc-status.js'
export {
  recordOnlyHandler,
  type AttachmentInfo,
  type CallContext,
  type NetworkServiceHandler,
} from './handler.js'
export { type PodInfoSource, type Readiness } from './nsmcni-service.js'
export { AgentServer, type AgentServerOptions } from './server.js'
export { jsonLogger, silentLogger, type Logger } from './log.js'
