// The CallContext the pipeline sees for a CNI call: the attachment it serves (persisted with each
// connection, so CHECK, DEL and GC find them) and the agent's shutdown signal.
import type { AttachmentInfo, CallContext } from '../server/handler.js'
import type { CniDeps } from './deps.js'

export function callContext(deps: CniDeps, attachment: AttachmentInfo | undefined): CallContext {
  return { signal: deps.shutdown, metadata: new Map(), attachment }
}
