// The netns policy: the one decision "may the agent act on this network namespace path" (ARCHITECTURE §9),
// shared by every caller — the registry (endpoint urls and netns paths), the pipeline (a client's
// inodeURL), the per-namespace netlink sockets and sysctls (pkg/netlink), and the agent's CNI handlers.
//
// A path is judged twice, each in one place here:
//  1. Its spelling (`check`): absolute, in normal form (nothing to resolve: no `.`, `..`, `//`, trailing
//     `/`), no NUL, and matching one configured pattern:
//       /dir/*           one path component directly under the absolute directory /dir
//       /proc/*/ns/net   a numeric pid (1 and up). `self` and `thread-self` are refused: they name the
//                        agent's own namespace, never a pod's.
//       /exact/path      that path only
//     Any other pattern (`/a/*/b`, `/a/**`, `/a/b*`, `/*`, relative, not normalized, other /proc forms) is
//     refused when the policy is built, i.e. when the agent starts (NetnsPatternError; config exits 2).
//  2. What it opens (`open`, `identify`): its (dev, inode) is compared with the agent's own (host) netns and
//     a match is refused, whatever bind mount, symlink or /proc/<pid> form led there. `open` judges the fd it
//     returns (fstat), so nothing can be swapped between judging and using: it is the only place where a
//     path that came from a request or a registration becomes a namespace fd. `identify` (stat) serves the
//     cache lookups of namespaces already opened and existence checks. Both end in `judge`.
//
// No native code here (only node:fs): the policy can be loaded anywhere, also without koffi.
import { closeSync, constants, fstatSync, openSync, statSync, type Stats } from 'node:fs'
import { posix } from 'node:path'
import { KernelError } from './errors'
import type { OpenNetns } from './netns'

export type NetnsPattern =
  | { readonly kind: 'dir'; readonly text: string; readonly dir: string }
  | { readonly kind: 'proc-pid'; readonly text: string }
  | { readonly kind: 'exact'; readonly text: string }

/** The forms a pattern may take, for error messages. */
export const NETNS_PATTERN_FORMS = '/dir/* (one name directly under an absolute directory), /proc/*/ns/net (numeric pids), or an exact absolute path'

export const DEFAULT_NETNS_PATTERNS: readonly string[] = Object.freeze(['/var/run/netns/*', '/run/netns/*', '/proc/*/ns/net'])

const PROC_PID_PATTERN = '/proc/*/ns/net'
const PROC_PID_PATH = /^\/proc\/[1-9][0-9]*\/ns\/net$/
const PROC_SELF_PATH = /^\/proc\/(self|thread-self)\/ns\/net$/

/** A configured pattern the policy cannot honour. */
export class NetnsPatternError extends Error {
  override readonly name = 'NetnsPatternError'
  readonly code = 'INVALID_PATTERN'
  constructor(
    readonly pattern: string,
    why: string,
  ) {
    super(`netns pattern ${JSON.stringify(pattern)} ${why}; accepted forms: ${NETNS_PATTERN_FORMS}`)
  }
}

/** Parses one configured pattern, or throws NetnsPatternError saying why and which forms are accepted. */
export function parseNetnsPattern(text: string): NetnsPattern {
  const refuse = (why: string): never => {
    throw new NetnsPatternError(text, why)
  }
  if (typeof text !== 'string' || text === '') refuse('is empty')
  if (text.includes('\0')) refuse('contains a NUL byte')
  if (!text.startsWith('/')) refuse('is not an absolute path')
  if (posix.normalize(text) !== text || (text.length > 1 && text.endsWith('/'))) refuse('is not in normal form (no ., .., // or trailing /)')
  if (text === PROC_PID_PATTERN) return { kind: 'proc-pid', text }
  if (text === '/proc' || text.startsWith('/proc/')) refuse(`is under /proc, where only ${PROC_PID_PATTERN} is accepted`)
  const stars = text.split('*').length - 1
  if (stars === 0) {
    if (text === '/') refuse('is the root directory')
    return { kind: 'exact', text }
  }
  if (stars === 1 && text.endsWith('/*')) {
    const dir = text.slice(0, -2)
    if (dir === '') refuse('would accept every top-level path')
    return { kind: 'dir', text, dir }
  }
  return refuse('uses * other than as the whole last component')
}

/** A namespace opened by the policy: the caller closes `fd` (closeSync) when done. */
export interface JudgedNetns extends OpenNetns {
  /** Identity of what was opened, `dev:inode`. */
  readonly key: string
}

let hostKey: string | undefined

/**
 * Identity of the agent's own (host) network namespace, read once. The agent's JS runs on one thread that
 * is only ever switched inside synchronous sections (pkg/netns.ts), so this is read outside of them.
 */
function hostNetnsKey(): string {
  if (hostKey === undefined) {
    const st = statSync('/proc/self/ns/net')
    hostKey = keyOf(st)
  }
  return hostKey
}

const keyOf = (st: Stats): string => `${st.dev}:${st.ino}`

export class NetnsPolicy {
  readonly patterns: readonly NetnsPattern[]

  /** Throws NetnsPatternError for a pattern it cannot honour (the agent refuses to start). */
  constructor(patterns: readonly string[] = DEFAULT_NETNS_PATTERNS) {
    if (patterns.length === 0) throw new NetnsPatternError('', 'list is empty: no netns path would be accepted')
    this.patterns = patterns.map(parseNetnsPattern)
  }

  /** A policy as given, or built from patterns (options that take either). */
  static from(policyOrPatterns: NetnsPolicy | readonly string[]): NetnsPolicy {
    return policyOrPatterns instanceof NetnsPolicy ? policyOrPatterns : new NetnsPolicy(policyOrPatterns)
  }

  /** The patterns as configured, for messages. */
  describe(): string {
    return this.patterns.map((p) => p.text).join(', ')
  }

  /**
   * Whether `path` may be used: returns it (it is already normal, never rewritten) or throws KernelError
   * INVALID_ARGUMENT / NETNS_NOT_ALLOWED naming it. A path that exists is also judged by identity (not the
   * host's netns); one that does not exist (yet, or any more) passes here, and `open` fails on it later.
   */
  check(path: string): string {
    const checked = this.spelling(path)
    let st: Stats
    try {
      st = statSync(checked)
    } catch {
      return checked
    }
    this.judge(checked, st)
    return checked
  }

  /**
   * The spelling check and the identity of what the path names now: `key` undefined when nothing exists
   * there. For cache lookups and existence checks; `open` before using a namespace not seen before.
   */
  identify(path: string): { path: string; key: string | undefined } {
    const checked = this.spelling(path)
    let st: Stats
    try {
      st = statSync(checked)
    } catch {
      return { path: checked, key: undefined }
    }
    return { path: checked, key: this.judge(checked, st) }
  }

  /**
   * Opens the namespace at `path` and judges what was opened: the only place a netns path becomes an fd.
   * Throws NETNS_NOT_ALLOWED (spelling, or the host's netns) or BAD_NETNS (cannot be opened).
   */
  open(path: string): JudgedNetns {
    const checked = this.spelling(path)
    let fd: number
    try {
      // O_NONBLOCK: a FIFO planted under an allowed directory must not hang the agent in open(2).
      fd = openSync(checked, constants.O_RDONLY | constants.O_NONBLOCK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const why = code === 'ENOENT' ? 'does not exist' : `cannot be opened (${code ?? String(err)})`
      throw new KernelError('BAD_NETNS', `netns ${show(checked)} ${why}`, { cause: err })
    }
    try {
      return { path: checked, fd, key: this.judge(checked, fstatSync(fd)) }
    } catch (err) {
      closeSync(fd)
      throw err
    }
  }

  /** Identity judgement: refuses the agent's own netns; returns the identity `dev:inode`. */
  private judge(path: string, st: Stats): string {
    const key = keyOf(st)
    if (key === hostNetnsKey()) {
      throw new KernelError('NETNS_NOT_ALLOWED', `netns ${show(path)} is the agent's own (host) network namespace`)
    }
    return key
  }

  /** Spelling judgement: returns the path or throws naming it. */
  private spelling(path: string): string {
    if (typeof path !== 'string' || path.length === 0) throw new KernelError('INVALID_ARGUMENT', 'netns path is empty')
    if (path.includes('\0')) throw new KernelError('INVALID_ARGUMENT', `netns path ${show(path)} contains a NUL byte`)
    if (!path.startsWith('/')) throw new KernelError('NETNS_NOT_ALLOWED', `netns ${show(path)} is not absolute`)
    // Refuse rather than normalize: /var/run/netns/../../etc must never pass as /etc, nor as itself.
    if (posix.normalize(path) !== path || path.endsWith('/')) {
      throw new KernelError('NETNS_NOT_ALLOWED', `netns ${show(path)} is not in normal form`)
    }
    for (const p of this.patterns) if (matches(p, path)) return path
    if (PROC_SELF_PATH.test(path) && this.patterns.some((p) => p.kind === 'proc-pid')) {
      throw new KernelError('NETNS_NOT_ALLOWED', `netns ${show(path)} names the agent's own network namespace (${PROC_PID_PATTERN} takes numeric pids only)`)
    }
    throw new KernelError('NETNS_NOT_ALLOWED', `netns ${show(path)} is outside the allowlist (${this.describe()})`)
  }
}

/** A path in a message: as is when plain, JSON-quoted when it holds anything else (spaces, control bytes). */
function show(path: string): string {
  return /^[A-Za-z0-9._/:@+-]+$/.test(path) ? path : JSON.stringify(path)
}

function matches(p: NetnsPattern, path: string): boolean {
  switch (p.kind) {
    case 'exact':
      return path === p.text
    case 'proc-pid':
      return PROC_PID_PATH.test(path)
    case 'dir': {
      if (!path.startsWith(`${p.dir}/`)) return false
      const rest = path.slice(p.dir.length + 1)
      return rest.length > 0 && !rest.includes('/')
    }
  }
}
