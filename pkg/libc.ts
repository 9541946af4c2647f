// libc's functions for the agent's few system calls node has no API for (setns, flock, an ethtool ioctl, the
// netlink deletions sent from a pool thread), bound through koffi once each, on first use: a process that
// never needs one never loads libc through koffi.
import koffi from 'koffi'

let libc: ReturnType<typeof koffi.load> | undefined
const bound = new Map<string, unknown>()

/** The libc function of this C declaration ("int close(int fd)"), bound once. */
export function libcFunction<T>(declaration: string): T {
  let f = bound.get(declaration)
  if (f === undefined) {
    libc ??= koffi.load('libc.so.6')
    f = libc.func(declaration)
    bound.set(declaration, f)
  }
  return f as T
}

/** The calling thread's errno after the last call (koffi keeps it). */
export const errno = (): number => koffi.errno()
