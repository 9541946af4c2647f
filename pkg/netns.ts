// Switching the calling thread into a network namespace, wrapped once.
//
// Why it looks like this: setns(2) changes the namespace of the calling *thread*. Node runs our JS on
// one thread, but anything that yields to the event loop (an `await`, a callback) lets other code run
// on that same thread, which would then silently act in the wrong namespace. So a switch is only ever
// done inside `withNetns(path, fn)` where `fn` is synchronous: it switches, runs fn (typically: open a
// netlink socket, or open a /proc/sys file — both bind to the namespace at creation), and switches back
// before returning. A netlink socket created that way stays bound to the target namespace for its whole
// life, so all later (async) I/O on it needs no switching at all.
//
// Never while switched: await, start timers, spawn processes, or call anything that may defer work to
// the libuv thread pool expecting the namespace (the pool threads never switch).
//
// Paths are checked against an allowlist first (DESIGN §9): request data decides which path is opened.
import koffi from 'koffi'
import { closeSync, openSync, statSync } from 'node:fs'
import { posix } from 'node:path'
import { KernelError } from './errors'

const CLONE_NEWNET = 0x40000000

let setnsCall: ((fd: number, nstype: number) => number) | undefined
let hostFd: number | undefined

function setns(fd: number): number {
  if (setnsCall === undefined) {
    const libc = koffi.load('libc.so.6')
    setnsCall = libc.func('int setns(int fd, int nstype)') as (fd: number, nstype: number) => number
  }
  return setnsCall(fd, CLONE_NEWNET)
}

/** The fd of the namespace the agent started in (its "host" namespace), opened once. */
function hostNamespaceFd(): number {
  if (hostFd === undefined) hostFd = openSync('/proc/thread-self/ns/net', 'r')
  return hostFd
}

/**
 * Runs `fn` with the calling thread in the network namespace at `path`, and switches back before
 * returning or throwing. `fn` must be synchronous; returning a promise is a programming error.
 */
export function withNetns<T>(path: string, fn: () => T): T {
  const back = hostNamespaceFd()
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    throw new KernelError('BAD_NETNS', `netns ${path}: cannot open`, { cause: err })
  }
  try {
    if (setns(fd) !== 0) {
      throw new KernelError('BAD_NETNS', `netns ${path}: setns failed (errno ${koffi.errno()}): not a network namespace?`)
    }
    let result: T
    try {
      result = fn()
    } finally {
      if (setns(back) !== 0) {
        // Continuing in the wrong namespace would misplace every later change: stop the process.
        process.stderr.write(`fatal: cannot switch back to the host netns (errno ${koffi.errno()})\n`)
        process.abort()
      }
    }
    if (result !== null && typeof result === 'object' && typeof (result as { then?: unknown }).then === 'function') {
      throw new Error('withNetns: the callback must be synchronous (it returned a promise)')
    }
    return result
  } finally {
    closeSync(fd)
  }
}

/** Identity of a namespace file: device and inode. Two paths with the same key are the same netns. */
export function netnsKey(path: string): string | undefined {
  try {
    const st = statSync(path)
    return `${st.dev}:${st.ino}`
  } catch {
    return undefined
  }
}

/** Which netns paths the agent accepts from requests (DESIGN §9). */
export class NetnsAllowlist {
  readonly prefixes: readonly string[]
  readonly allowProcPid: boolean

  static readonly DEFAULT_PREFIXES = ['/var/run/netns/', '/run/netns/']

  constructor(opts: { prefixes?: readonly string[]; allowProcPid?: boolean } = {}) {
    this.prefixes = (opts.prefixes ?? NetnsAllowlist.DEFAULT_PREFIXES).map((p) => (p.endsWith('/') ? p : `${p}/`))
    this.allowProcPid = opts.allowProcPid ?? true
  }

  /** Returns the normalized path, or throws NETNS_NOT_ALLOWED / INVALID_ARGUMENT naming the path. */
  check(path: string): string {
    if (typeof path !== 'string' || path.length === 0) {
      throw new KernelError('INVALID_ARGUMENT', 'netns path is empty')
    }
    if (path.includes('\0')) throw new KernelError('INVALID_ARGUMENT', 'netns path contains a NUL byte')
    if (!path.startsWith('/')) throw new KernelError('NETNS_NOT_ALLOWED', `netns path ${JSON.stringify(path)} is not absolute`)
    // Refuse rather than normalize paths that climb: /var/run/netns/../../etc must never pass.
    if (posix.normalize(path) !== path || path.split('/').includes('..')) {
      throw new KernelError('NETNS_NOT_ALLOWED', `netns path ${JSON.stringify(path)} is not in normal form`)
    }
    if (this.allowProcPid && /^\/proc\/[1-9][0-9]*\/ns\/net$/.test(path)) return path
    for (const prefix of this.prefixes) {
      if (path.startsWith(prefix)) {
        const rest = path.slice(prefix.length)
        if (rest.length > 0 && !rest.includes('/')) return path
      }
    }
    throw new KernelError(
      'NETNS_NOT_ALLOWED',
      `netns path ${JSON.stringify(path)} is outside the allowlist (${[...this.prefixes.map((p) => `${p}*`), ...(this.allowProcPid ? ['/proc/<pid>/ns/net'] : [])].join(', ')})`,
    )
  }
}
