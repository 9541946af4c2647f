// Errors of the subnet-range allocator and its stores, with stable codes; the CNI layer maps them to
// CNI error codes once (cni/nsm-ipam/handlers.ts).
export type IpamErrorCode =
  | 'INVALID_RANGE' // a range in the configuration is unusable (field named in the message)
  | 'POOL_EXHAUSTED' // no free address left in a range set
  | 'ADDRESS_UNAVAILABLE' // a requested address is held by someone else
  | 'ADDRESS_OUTSIDE_RANGES' // a requested address is in no range set
  | 'ATTACHMENT_EXISTS' // the owner already holds reservations
  | 'STORE' // the store cannot be used

export class IpamError extends Error {
  override readonly name = 'IpamError'
  constructor(
    readonly code: IpamErrorCode,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
  }
}
