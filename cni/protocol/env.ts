// The CNI_* environment: which variables each command requires (SPEC.md §2 "Parameters" and each
// command's "Required environment parameters"), and the format rules for container id, interface name
// and netns. All problems are reported at once, as code 4 naming every offending variable.
import { statfsSync } from 'node:fs'
import { CniCode, CniError } from './errors'
import { COMMANDS, type Command } from './version'

export interface CniEnv {
  command: Command
  /** Empty string only for commands that do not require it (VERSION, STATUS, GC). */
  containerId: string
  netns: string
  ifname: string
  /** Raw CNI_ARGS; parse with parseCniArgs. */
  args: string
  /** CNI_PATH split on ':' with empty entries dropped. */
  path: string[]
}

type Var = 'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME' | 'CNI_PATH'

/** Required variables per command, CNI 1.1. The reference skel also demands CNI_PATH for ADD/DEL: we follow the spec. */
const REQUIRED: Record<Command, readonly Var[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  STATUS: [],
  GC: ['CNI_PATH'],
  VERSION: [],
}

/** Spec: starts with an alphanumeric, then alphanumerics, '_', '.' or '-'. */
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/

/** Returns why `name` is not a valid interface name, or undefined when it is. */
export function interfaceNameProblem(name: string): string | undefined {
  if (name === '') return 'is empty'
  if (name.length > 15) return `is ${name.length} characters long (at most 15)`
  if (name === '.' || name === '..') return `must not be "${name}"`
  if (/[/:]/.test(name)) return 'must not contain "/" or ":"'
  if (/\s/.test(name)) return 'must not contain whitespace'
  return undefined
}

export function containerIdProblem(id: string): string | undefined {
  if (id === '') return 'is empty'
  if (!CONTAINER_ID.test(id)) return 'must start with a letter or digit followed only by letters, digits, "_", "." or "-"'
  return undefined
}

/** Reads and validates the environment for one call. Throws code 4 naming every bad variable. */
export function parseEnv(env: Readonly<Record<string, string | undefined>>): CniEnv {
  const get = (k: string): string => env[k] ?? ''
  const cmd = get('CNI_COMMAND')
  if (cmd === '') throw new CniError(CniCode.INVALID_ENVIRONMENT, 'required environment variables missing: CNI_COMMAND')
  if (!(COMMANDS as readonly string[]).includes(cmd)) {
    throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_COMMAND: unknown command "${cmd}" (expected one of ${COMMANDS.join(', ')})`)
  }
  const command = cmd as Command
  const missing = REQUIRED[command].filter((v) => get(v) === '')
  const problems: string[] = []
  if (missing.length > 0) problems.push(`required environment variables missing: ${missing.join(', ')}`)

  const containerId = get('CNI_CONTAINERID')
  const ifname = get('CNI_IFNAME')
  const netns = get('CNI_NETNS')
  if (command !== 'VERSION') {
    if (containerId !== '') {
      const p = containerIdProblem(containerId)
      if (p !== undefined) problems.push(`CNI_CONTAINERID "${containerId}" ${p}`)
    }
    if (ifname !== '') {
      const p = interfaceNameProblem(ifname)
      if (p !== undefined) problems.push(`CNI_IFNAME "${ifname}" ${p}`)
    }
    if (netns !== '' && !netns.startsWith('/')) problems.push(`CNI_NETNS "${netns}" must be an absolute path`)
  }
  if (problems.length > 0) throw new CniError(CniCode.INVALID_ENVIRONMENT, problems.join('; '))
  return {
    command,
    containerId,
    netns,
    ifname,
    args: get('CNI_ARGS'),
    path: get('CNI_PATH').split(':').filter((p) => p !== ''),
  }
}

const NSFS_MAGIC = 0x6e736673

/**
 * Checks that CNI_NETNS names a network namespace (a bind mount such as /run/netns/x or
 * /proc/<pid>/ns/net, both on nsfs). Used for ADD and CHECK; DEL must succeed when the netns is gone.
 */
export function assertNetnsExists(path: string): void {
  let type: number
  try {
    type = Number(statfsSync(path).type)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_NETNS "${path}" does not exist (${code})`, { cause: err })
  }
  if (type !== NSFS_MAGIC) {
    throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_NETNS "${path}" is not a network namespace`)
  }
}
