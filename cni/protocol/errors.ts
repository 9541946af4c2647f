// CNI errors: one class with a stable numeric code, mapped once to the spec's error JSON.
//
// Codes 1-99 are the spec's well-known codes (SPEC.md "Error codes"); a plugin must not give them any other
// meaning. Our own codes start at 100 (../../../shared/DESIGN.md §11). Every error a handler throws ends up
// as `{cniVersion, code, msg, details}` on stdout with a non-zero exit (see main.ts).

/** The spec's well-known codes (CNI 1.1). */
export const CniCode = {
  /** Incompatible CNI version. */
  IncompatibleVersion: 1,
  /** Unsupported field in network configuration; the message must name the key and the value. */
  UnsupportedField: 2,
  /** Container unknown or does not exist: the runtime need not clean up. */
  UnknownContainer: 3,
  /** Invalid necessary environment variables; the message must name them. */
  InvalidEnvironment: 4,
  /** I/O failure, e.g. reading the configuration from stdin. */
  IoFailure: 5,
  /** Failed to decode content (malformed JSON, bad version string). */
  DecodingFailure: 6,
  /** Invalid network configuration. */
  InvalidConfig: 7,
  /** Transient condition: try again later. */
  TryAgainLater: 11,
  /** STATUS: the plugin cannot service ADD requests. */
  NotAvailable: 50,
  /** STATUS: not available, and existing containers may have limited connectivity. */
  LimitedConnectivity: 51,
  // --- plugin-specific (>= 100), shared with the agent: DESIGN.md §11 ---
  AgentUnreachable: 100,
  NoEndpoint: 101,
  PoolExhausted: 102,
  BadNetns: 103,
  MechanismNotSupported: 104,
  AnnotationInvalid: 105,
  // --- nsm-ipam specific ---
  /** ADD for a (network, container, interface) that already holds a reservation. */
  AttachmentExists: 106,
  /** A requested address is reserved by another attachment. */
  AddressUnavailable: 107,
  /** The reservation store cannot be read or written (I/O, foreign format version). */
  StoreFailure: 108,
  /** CHECK: the reservations do not match the configuration or prevResult. */
  ReservationMismatch: 109,
  /** Anything unexpected: a bug. */
  Internal: 999,
} as const

export type CniCodeValue = (typeof CniCode)[keyof typeof CniCode]

export class CniError extends Error {
  override readonly name = 'CniError'
  readonly code: number
  readonly details: string | undefined

  constructor(code: number, msg: string, opts: { details?: string; cause?: unknown } = {}) {
    super(msg, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
    this.details = opts.details
  }

  /** Keeps a CniError as it is; wraps anything else as Internal with the original as `cause`. */
  static from(err: unknown, code: number = CniCode.Internal): CniError {
    if (err instanceof CniError) return err
    const msg = err instanceof Error ? err.message : String(err)
    return new CniError(code, msg, { cause: err })
  }

  /** The spec's error object. `cniVersion` is the version in use for this call (or our newest). */
  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    const out: { cniVersion: string; code: number; msg: string; details?: string } = {
      cniVersion,
      code: this.code,
      msg: this.message,
    }
    if (this.details !== undefined && this.details !== '') out.details = this.details
    return out
  }
}

export const invalidConfig = (msg: string, details?: string): CniError =>
  new CniError(CniCode.InvalidConfig, msg, details === undefined ? {} : { details })
