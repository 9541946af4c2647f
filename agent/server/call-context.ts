// Builds the CallContext handed to handlers from a grpc-js call: metadata as a plain map and an
// AbortSignal that fires on client cancel or agent shutdown.
import type { Metadata, ServerUnaryCall, ServerWritableStream } from '@grpc/grpc-js'
import type { CallContext } from './handler.js'

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>

/**
 * The context for one call, and `release` to call once the call is answered: grpc-js emits no event at
 * the end of a unary call, so the shutdown listener is removed explicitly.
 */
export function callContext(call: AnyCall, shutdown: AbortSignal): { ctx: CallContext; release: () => void } {
  const metadata = metadataMap(call.metadata)
  const controller = new AbortController()
  const abort = (): void => controller.abort()
  if (shutdown.aborted) controller.abort()
  else shutdown.addEventListener('abort', abort, { once: true })
  call.once('cancelled', abort)
  const release = (): void => {
    shutdown.removeEventListener('abort', abort)
    call.removeListener('cancelled', abort)
  }
  return { ctx: { signal: controller.signal, metadata, attachment: undefined }, release }
}

/** Runs a handler with its CallContext and releases the context when it settles. */
export async function withCallContext<T>(call: AnyCall, shutdown: AbortSignal, fn: (ctx: CallContext) => Promise<T>): Promise<T> {
  const { ctx, release } = callContext(call, shutdown)
  try {
    return await fn(ctx)
  } finally {
    release()
  }
}

export function metadataMap(md: Metadata): Map<string, string> {
  const out = new Map<string, string>()
  for (const [key, values] of Object.entries(md.getMap())) {
    if (key.endsWith('-bin')) continue
    if (typeof values === 'string') out.set(key.toLowerCase(), values)
  }
  return out
}
