// The network configuration on stdin: decoded once, checked for the fields every plugin relies on
// (name, type, cniVersion/cniVersions, args, runtimeConfig, prevResult, GC's valid attachments).
// Plugin-specific fields stay in `raw` for the plugin to validate.
import { CniCode, CniError } from './errors'
import { parseResult, type CniResult } from './result'
import { negotiateVersion, type SpecVersion } from './version'

export interface Attachment {
  containerID: string
  ifname: string
}

export interface NetConf {
  raw: Record<string, unknown>
  version: SpecVersion
  name: string
  type: string
  /** `args.cni`, the conventional place for structured per-call arguments. */
  cniArgs: Record<string, unknown> | undefined
  runtimeConfig: Record<string, unknown> | undefined
  prevResult: CniResult | undefined
  /**
   * GC only: `cni.dev/valid-attachments` (or the spec's earlier misspelling `cni.dev/attachments`). Null
   * (libcni's nil list: CRI-O's GC of a network without pods) and absent (libcni v1.2.0's `cnitool gc`)
   * are the empty list, as the reference plugins read them.
   */
  validAttachments: Attachment[]
}

/** Spec: network names start with an alphanumeric, then alphanumerics, '_', '.', '-'. */
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/

/** Decodes stdin as JSON (code 6 on failure) and requires an object. */
export function decodeJson(stdin: Buffer): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(stdin.toString('utf8'))
  } catch (err) {
    throw new CniError(CniCode.DECODING_FAILURE, `stdin: network configuration is not valid JSON: ${(err as Error).message}`, { cause: err })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CniError(CniCode.DECODING_FAILURE, 'stdin: network configuration must be a JSON object')
  }
  return value as Record<string, unknown>
}

function optionalObject(raw: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const v = raw[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw new CniError(CniCode.INVALID_CONFIG, `${key}: expected an object, got ${JSON.stringify(v)}`)
  }
  return v as Record<string, unknown>
}

function parseAttachments(v: unknown, key: string): Attachment[] {
  if (!Array.isArray(v)) throw new CniError(CniCode.INVALID_CONFIG, `${key}: expected a list of {containerID, ifname}`)
  return v.map((a, n) => {
    if (typeof a !== 'object' || a === null || typeof (a as Attachment).containerID !== 'string' || typeof (a as Attachment).ifname !== 'string') {
      throw new CniError(CniCode.INVALID_CONFIG, `${key}[${n}]: expected {"containerID": string, "ifname": string}, got ${JSON.stringify(a)}`)
    }
    return { containerID: (a as Attachment).containerID, ifname: (a as Attachment).ifname }
  })
}

export function parseNetConf(raw: Record<string, unknown>): NetConf {
  const version = negotiateVersion(raw)
  const name = raw.name
  if (name === undefined || name === '') throw new CniError(CniCode.INVALID_CONFIG, 'name: missing network name')
  if (typeof name !== 'string' || !NETWORK_NAME.test(name)) {
    throw new CniError(CniCode.INVALID_CONFIG, `name: ${JSON.stringify(name)} is not a valid network name (letters, digits, "_", ".", "-"; starting with a letter or digit)`)
  }
  const type = raw.type
  if (typeof type !== 'string' || type === '') throw new CniError(CniCode.INVALID_CONFIG, `type: expected a plugin name, got ${JSON.stringify(type)}`)
  const args = optionalObject(raw, 'args')
  let cniArgs: Record<string, unknown> | undefined
  if (args !== undefined && args.cni !== undefined && args.cni !== null) {
    if (typeof args.cni !== 'object' || Array.isArray(args.cni)) throw new CniError(CniCode.INVALID_CONFIG, `args.cni: expected an object, got ${JSON.stringify(args.cni)}`)
    cniArgs = args.cni as Record<string, unknown>
  }
  const runtimeConfig = optionalObject(raw, 'runtimeConfig')
  const prevResult = raw.prevResult === undefined || raw.prevResult === null ? undefined : parseResult(raw.prevResult)
  const given = (k: string): boolean => raw[k] !== undefined && raw[k] !== null
  let validAttachments: Attachment[] = []
  if (given('cni.dev/valid-attachments')) validAttachments = parseAttachments(raw['cni.dev/valid-attachments'], 'cni.dev/valid-attachments')
  else if (given('cni.dev/attachments')) validAttachments = parseAttachments(raw['cni.dev/attachments'], 'cni.dev/attachments')
  return { raw, version, name, type, cniArgs, runtimeConfig, prevResult, validAttachments }
}
