// Builds the CallContext handed to handlers from a grpc-js call: metadata as a plain map, the CNI
// attachment keys, and an AbortSignal that fires on client cancel or agent shutdown.
import type { Metadata, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js'
import { attachmentFrom, type CallContext } from './handler.js'

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>

export function callContext(call: AnyCall, shutdown: AbortSignal): CallContext {
  const metadata = metadataMap(call.metadata)
  const controller = new AbortController()
  const abort = (): void => controller.abort()
  if (shutdown.aborted) controller.abort()
  shutdown.addEventListener('abort', abort, { once: true })
  call.on('cancelled', abort)
  // A finished call no longer needs the shutdown listener.
  call.on('finish', () => shutdown.removeEventListener('abort', abort))
  return { signal: controller.signal, metadata, attachment: attachmentFrom(metadata) }
}

export function metadataMap(md: Metadata): Map<string, string> {
  const out = new Map<string, string>()
  for (const [key, values] of Object.entries(md.getMap())) {
    if (key.endsWith('-bin')) continue
    if (typeof values === 'string') out.set(key.toLowerCase(), values)
  }
  return out
}
