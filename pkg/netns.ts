// Switching the calling thread into a network namespace, wrapped once.
//
// Why it looks like this: setns(2) changes the namespace of the calling *thread*. Node runs our JS on
// one thread, but anything that yields to the event loop (an `await`, a callback) lets other code run
// on that same thread, which would then silently act in the wrong namespace. So a switch is only ever
// done inside `withNetns(ns, fn)` where `fn` is synchronous: it switches, runs fn (typically: open a
// netlink socket, or open a /proc/sys file — both bind to the namespace at creation), and switches back
// before returning. A netlink socket created that way stays bound to the target namespace for its whole
// life, so all later (async) I/O on it needs no switching at all.
//
// Never while switched: await, start timers, spawn processes, or call anything that may defer work to
// the libuv thread pool expecting the namespace (the pool threads never switch).
//
// This file never opens a path a request named: `withNetns` takes a namespace already opened and judged
// by the netns policy (./netns-policy.ts, ARCHITECTURE §9), the one place where such paths become fds.
import koffi from 'koffi'
import { openSync, statSync } from 'node:fs'
import { libcFunction } from './libc'
import { KernelError } from './errors'

const CLONE_NEWNET = 0x40000000

let hostFd: number | undefined

function setns(fd: number): number {
  return libcFunction<(fd: number, nstype: number) => number>('int setns(int fd, int nstype)')(fd, CLONE_NEWNET)
}

/** The fd of the namespace the agent started in (its "host" namespace), opened once. */
function hostNamespaceFd(): number {
  if (hostFd === undefined) hostFd = openSync('/proc/thread-self/ns/net', 'r')
  return hostFd
}

/** A network namespace opened (and judged) by the netns policy: its path, for messages, and its fd. */
export interface OpenNetns {
  readonly path: string
  readonly fd: number
}

/**
 * Runs `fn` with the calling thread in the network namespace `ns`, and switches back before returning
 * or throwing. `fn` must be synchronous; returning a promise is a programming error. The caller owns
 * (and closes) `ns.fd`.
 */
export function withNetns<T>(ns: OpenNetns, fn: () => T): T {
  const back = hostNamespaceFd()
  if (setns(ns.fd) !== 0) {
    throw new KernelError('BAD_NETNS', `netns ${ns.path}: setns failed (errno ${koffi.errno()}): not a network namespace?`)
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
