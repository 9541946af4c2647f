// CNI errors: one class with a stable numeric code, mapped once to the spec's error JSON.
//
// The codes themselves are defined once, with their names and gRPC statuses, in pkg/codes.ts (spec codes
// 1-99, ours from 100). Every error a handler throws ends up as `{cniVersion, code, msg, details}` on
// stdout with a non-zero exit (see main.ts).

import { CniCode } from '../../pkg/codes'

export { CniCode }

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
  static from(err: unknown, code: number = CniCode.INTERNAL): CniError {
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
  new CniError(CniCode.INVALID_CONFIG, msg, details === undefined ? {} : { details })
