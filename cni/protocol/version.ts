// CNI spec versions: which we speak, how a configuration's version is chosen, and which commands each
// version allows (CHECK from 0.4.0, STATUS and GC from 1.1.0).
import { CniCode, CniError } from './errors'

/** Every version our plugins speak, oldest first. 0.1.0/0.2.0 (ip4/ip6 results) are not supported. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const
export type SpecVersion = (typeof SUPPORTED_VERSIONS)[number]
export const NEWEST: SpecVersion = '1.1.0'

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION'
export const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION']

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/

/** Parses "x.y.z" into numbers, or undefined when it is not a plain semantic version. */
export function parseVersion(v: string): [number, number, number] | undefined {
  const m = SEMVER.exec(v)
  if (m === null) return undefined
  return [Number(m[1]), Number(m[2]), Number(m[3])]
}

/** Compares two x.y.z versions: negative, 0 or positive. Both must be valid. */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a)
  const pb = parseVersion(b)
  if (pa === undefined || pb === undefined) throw new Error(`not a version: ${pa === undefined ? a : b}`)
  return pa[0] - pb[0] || pa[1] - pb[1] || pa[2] - pb[2]
}

export function isSupported(v: string): v is SpecVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v)
}

/**
 * Picks the version to speak for one call from a parsed configuration.
 *
 * `cniVersion` is what the runtime chose (libcni writes it into every plugin's configuration) and wins.
 * Without it, a `cniVersions` list (CNI 1.1 configuration lists) gives the highest version both sides
 * support. With neither, the spec's history says 0.1.0, which we do not speak.
 */
export function negotiateVersion(conf: Record<string, unknown>): SpecVersion {
  const v = conf.cniVersion
  if (v !== undefined) {
    if (typeof v !== 'string') {
      throw new CniError(CniCode.DECODING_FAILURE, `cniVersion: expected a string, got ${JSON.stringify(v)}`)
    }
    if (parseVersion(v) === undefined) {
      throw new CniError(CniCode.DECODING_FAILURE, `cniVersion: "${v}" is not a version (x.y.z)`)
    }
    if (!isSupported(v)) {
      throw new CniError(CniCode.INCOMPATIBLE_VERSION, `incompatible CNI version: cniVersion "${v}" is not supported`, {
        details: `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
      })
    }
    return v
  }
  const list = conf.cniVersions
  if (list !== undefined) {
    if (!Array.isArray(list) || !list.every((x): x is string => typeof x === 'string')) {
      throw new CniError(CniCode.DECODING_FAILURE, `cniVersions: expected a list of strings, got ${JSON.stringify(list)}`)
    }
    const bad = list.find((x) => parseVersion(x) === undefined)
    if (bad !== undefined) throw new CniError(CniCode.DECODING_FAILURE, `cniVersions: "${bad}" is not a version (x.y.z)`)
    const common = list.filter(isSupported).sort(compareVersions)
    const best = common[common.length - 1]
    if (best === undefined) {
      throw new CniError(CniCode.INCOMPATIBLE_VERSION, `incompatible CNI version: none of cniVersions [${list.join(', ')}] is supported`, {
        details: `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
      })
    }
    return best
  }
  throw new CniError(CniCode.INCOMPATIBLE_VERSION, 'incompatible CNI version: cniVersion is missing (implies 0.1.0)', {
    details: `supported versions: ${SUPPORTED_VERSIONS.join(', ')}`,
  })
}

/** The first spec version that defines each command. */
const SINCE: Record<Command, SpecVersion | '0.1.0'> = {
  ADD: '0.1.0',
  DEL: '0.1.0',
  VERSION: '0.1.0',
  CHECK: '0.4.0',
  STATUS: '1.1.0',
  GC: '1.1.0',
}

/** Throws IncompatibleVersion when `cmd` does not exist in `version`. */
export function assertCommandAllowed(cmd: Command, version: SpecVersion): void {
  const since = SINCE[cmd]
  if (compareVersions(version, since) < 0) {
    throw new CniError(CniCode.INCOMPATIBLE_VERSION, `incompatible CNI version: ${cmd} needs cniVersion ${since} or later, got "${version}"`)
  }
}
