// The `inode://<dev>/<ino>` form of a network namespace: what NSM's clients send as a KERNEL mechanism's
// `inodeURL` when they hand the namespace over as a file descriptor beside the gRPC call (NSM's grpcfd).
// The agent takes no descriptors over its socket, so it finds the namespace by its identity instead: a
// process whose /proc/<pid>/ns/net has that st_dev (decimal) and st_ino. The answer is that /proc path,
// which the caller then judges through the netns policy like any other path (./netns-policy.ts: spelling
// against `/proc/*/ns/net`, never the host's netns) — this file decides nothing about what is allowed.
//
// Which process: the lowest pid holding the namespace (in a pod, its first process, the sandbox's pause,
// which lives as long as the pod), so the same inode resolves to the same path on a refresh as long as
// that process lives. The last answer per inode is remembered and re-checked by one stat before reuse; a
// miss scans /proc (one stat per process). Threads that switched namespace alone are not looked at.
//
// No native code: node:fs only.
import { readdirSync, statSync } from 'node:fs'
import { KernelError } from './errors'

/** A network namespace by identity: the st_dev and st_ino of its nsfs file. */
export interface NetnsInode {
  readonly dev: bigint
  readonly ino: bigint
}

export const INODE_URL_SCHEME = 'inode://'

const INODE_URL = /^inode:\/\/([0-9]{1,20})\/([0-9]{1,20})$/
const U64_MAX = (1n << 64n) - 1n

/**
 * Parses `inode://<dev>/<ino>` (both decimal, as NSM writes them). Throws KernelError INVALID_ARGUMENT
 * saying what is wrong with it.
 */
export function parseInodeUrl(url: string): NetnsInode {
  const m = INODE_URL.exec(url)
  if (m === null) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(url)} is not inode://<dev>/<ino> (two decimal numbers)`)
  const dev = BigInt(m[1] as string)
  const ino = BigInt(m[2] as string)
  if (dev > U64_MAX || ino > U64_MAX) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(url)}: a number is larger than 64 bits`)
  if (ino === 0n) throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(url)}: inode 0 names no file`)
  return { dev, ino }
}

/** `inode://<dev>/<ino>` of what `path` names now (for tests and messages); throws what stat throws. */
export function inodeUrlOf(path: string): string {
  const st = statSync(path, { bigint: true })
  return `${INODE_URL_SCHEME}${st.dev}/${st.ino}`
}

const PID_DIR = /^[1-9][0-9]*$/
/** Last pid found per `dev:ino`; bounded, each entry re-checked before use. */
const lastPid = new Map<string, number>()
const LAST_PID_MAX = 1024

function holds(pid: number, id: NetnsInode): boolean {
  // A process may exit (ENOENT) or be a kernel thread we cannot read: neither holds it.
  const st = statSync(`/proc/${pid}/ns/net`, { bigint: true, throwIfNoEntry: false })
  return st !== undefined && st.dev === id.dev && st.ino === id.ino
}

function safeHolds(pid: number, id: NetnsInode): boolean {
  try {
    return holds(pid, id)
  } catch {
    return false
  }
}

/**
 * `/proc/<pid>/ns/net` of the lowest-numbered process whose network namespace is `id`, or undefined when
 * no process holds it (the namespace is gone, or is kept only by a bind mount).
 */
export function procPathOfNetns(id: NetnsInode): string | undefined {
  const key = `${id.dev}:${id.ino}`
  const cached = lastPid.get(key)
  if (cached !== undefined) {
    if (safeHolds(cached, id)) return `/proc/${cached}/ns/net`
    lastPid.delete(key)
  }
  let lowest: number | undefined
  for (const name of readdirSync('/proc')) {
    if (!PID_DIR.test(name)) continue
    const pid = Number(name)
    if (lowest !== undefined && pid >= lowest) continue
    if (safeHolds(pid, id)) lowest = pid
  }
  if (lowest === undefined) return undefined
  if (lastPid.size >= LAST_PID_MAX) {
    const oldest = lastPid.keys().next()
    if (oldest.done !== true) lastPid.delete(oldest.value)
  }
  lastPid.set(key, lowest)
  return `/proc/${lowest}/ns/net`
}

/**
 * The /proc path of the namespace `url` (`inode://<dev>/<ino>`) names. Throws KernelError INVALID_ARGUMENT
 * (malformed) or BAD_NETNS (no process holds that namespace), naming the URL.
 */
export function netnsPathOfInodeUrl(url: string): string {
  const path = procPathOfNetns(parseInodeUrl(url))
  if (path === undefined) throw new KernelError('BAD_NETNS', `${url}: no process holds a network namespace with that device and inode`)
  return path
}
