// ipam/p2p/errors.ts: the one error class of the point-to-point allocator.
//
// Needs: nothing. Contract: a stable `code` the agent maps once: POOL_EXHAUSTED → gRPC RESOURCE_EXHAUSTED /
// CNI 102 (same name as the agent's AgentErrorCode), NO_POOL → FAILED_PRECONDITION (the endpoint registered
// no pool), INVALID_PREFIX and INVALID_STATE → INVALID_ARGUMENT / INTERNAL. `field` names the input at fault.

export type P2PErrorCode = 'POOL_EXHAUSTED' | 'NO_POOL' | 'INVALID_PREFIX' | 'INVALID_STATE'

export class P2PError extends Error {
  override readonly name = 'P2PError'
  constructor(
    readonly code: P2PErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message)
  }

  static is(err: unknown, code?: P2PErrorCode): err is P2PError {
    return err instanceof P2PError && (code === undefined || err.code === code)
  }
}
