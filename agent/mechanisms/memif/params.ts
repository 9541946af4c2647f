// Where a memif socket goes, from a request's parameters. The agent places sockets itself: one directory
// per pod under the memif root (`--memif-root`, default /run/nsm/memif), named by the `memifDir` parameter
// (the CNI layer sends the pod's UID, else the container id; an NSM client without it gets one named by
// its connection id), and one file per interface in it, `<name>.sock`. A pod mounts its own directory
// (a hostPath volume with `subPathExpr: $(POD_UID)`), and sees nobody else's.
//
// Everything here ends up in a DPDK device argument (`socket=<path>`) and in a path: only characters that
// are safe in both are accepted, and the whole path must fit a unix socket address (107 bytes).
import { isAbsolute, join, normalize } from 'node:path'

/** NSM's memif parameter keys (api: memif.SocketFilename; common.InodeURL is the KERNEL one). */
export const SOCKET_FILE_PARAM = 'socketfile'
/** Ours: the pod's directory under the memif root. */
export const MEMIF_DIR_PARAM = 'memifDir'
export const DEFAULT_MEMIF_ROOT = '/run/nsm/memif'
/** sun_path is 108 bytes with its NUL. */
export const MAX_SOCKET_PATH = 107

const DIR_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const SAFE_PATH = /^\/[A-Za-z0-9._/-]*$/

/** Why `root` cannot be the memif root, or undefined when it can. */
export function memifRootProblem(root: string): string | undefined {
  if (!isAbsolute(root)) return `${JSON.stringify(root)} is not an absolute path`
  if (!SAFE_PATH.test(root)) return `${JSON.stringify(root)} has characters other than letters, digits, '.', '_', '-' and '/' (it becomes part of a DPDK device argument)`
  if (normalize(root) !== root || (root.length > 1 && root.endsWith('/'))) return `${JSON.stringify(root)} is not a normalized path (no '.', '..', '//' or trailing '/')`
  return undefined
}

/** Why `dir` cannot name a pod's directory, or undefined when it can. */
export function memifDirProblem(dir: string): string | undefined {
  if (!DIR_NAME.test(dir) || dir.includes('..')) return `${JSON.stringify(dir)} is not a directory name (1-128 of letters, digits, '.', '_', '-', starting with a letter or digit)`
  return undefined
}

/** The socket file of interface `ifname` of the pod directory `dir`; a problem when the path is too long. */
export function socketPath(root: string, dir: string, ifname: string): { path: string } | { problem: string } {
  const path = join(root, dir, `${ifname}.sock`)
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) return { problem: `the socket path ${path} is ${Buffer.byteLength(path)} bytes, more than a unix socket address holds (${MAX_SOCKET_PATH})` }
  return { path }
}
