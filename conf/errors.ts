// conf/errors.ts: the one error class of the conf layer (input documents: NetworkService YAML, annotations).
//
// Needs: nothing (dependency-free: it is bundled into the lean CNI plugin through conf/annotations.ts).
// Contract: every parse/validation failure in conf/ throws a ConfError whose `code` is stable (callers map it
// once: the CNI layer to error 7 / 105, the agent to INVALID_ARGUMENT) and whose `path` names the offending
// field (`spec.matches[1].routes[0].destinationSelector`) or annotation entry. The message always starts with
// that path, so it can be shown as is.

export type ConfErrorCode =
  /** The text is not well-formed YAML (line and column in the message). */
  | 'YAML_SYNTAX'
  /** A field has the wrong type or an invalid value. */
  | 'INVALID_FIELD'
  /** A required field is absent. */
  | 'MISSING_FIELD'
  /** A field this document kind does not have (usually a typo). */
  | 'UNKNOWN_FIELD'
  /** The document is not a NetworkService, or its apiVersion is not one we read. */
  | 'UNSUPPORTED_KIND'
  /** A pod annotation value (one entry of its comma list) is invalid. */
  | 'ANNOTATION_INVALID'

export interface ConfErrorOptions {
  /** Field path or annotation entry that is wrong. */
  path: string
  /** 0-based index of the YAML document in a multi-document file, when there is one. */
  document?: number
  cause?: unknown
}

export class ConfError extends Error {
  override readonly name = 'ConfError'
  readonly code: ConfErrorCode
  readonly path: string
  readonly document: number | undefined

  constructor(code: ConfErrorCode, detail: string, opts: ConfErrorOptions) {
    const where = [opts.document === undefined ? '' : `document ${opts.document + 1}`, opts.path].filter((s) => s !== '')
    super([...where, detail].join(': '), opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
    this.path = opts.path
    this.document = opts.document
  }

  /** Wraps anything thrown into a ConfError (kept as is when it already is one), keeping the original as cause. */
  static from(err: unknown, code: ConfErrorCode = 'INVALID_FIELD', path = ''): ConfError {
    if (err instanceof ConfError) return err
    const detail = err instanceof Error ? err.message : String(err)
    return new ConfError(code, detail, { path, cause: err })
  }
}
