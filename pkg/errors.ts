// Typed errors of the kernel layer. One class, a stable `code` callers switch on (and the agent maps
// once to gRPC status / CNI codes), the original error kept as `cause`.

export type KernelErrorCode =
  | 'EXISTS' // a link, address or route with that identity already exists (EEXIST)
  | 'NO_SUCH_DEVICE' // the named link does not exist in that namespace (ENODEV)
  | 'NOT_FOUND' // an address or route to delete/replace does not exist (ESRCH, EADDRNOTAVAIL, ENOENT)
  | 'BAD_NETNS' // the namespace path does not exist or is not a network namespace
  | 'NETNS_NOT_ALLOWED' // the netns policy refuses the path (pkg/netns-policy.ts)
  | 'NAME_TOO_LONG' // an interface name over 15 bytes, or with characters the kernel refuses
  | 'INVALID_ARGUMENT' // a malformed address, prefix, MAC, MTU or sysctl key
  | 'BUSY' // the link must be down for this change (EBUSY)
  | 'PERMISSION' // not root / missing CAP_NET_ADMIN (EPERM, EACCES)
  | 'KERNEL' // any other errno from the kernel

export class KernelError extends Error {
  override readonly name = 'KernelError'
  readonly code: KernelErrorCode
  readonly errno: number | undefined

  constructor(code: KernelErrorCode, message: string, opts: { cause?: unknown; errno?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
    this.errno = opts.errno
  }

  static is(err: unknown, code?: KernelErrorCode): err is KernelError {
    return err instanceof KernelError && (code === undefined || err.code === code)
  }
}

// errno numbers (Linux, x86_64 and arm64 agree on these).
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ERANGE: 34,
  EOPNOTSUPP: 95,
  EADDRNOTAVAIL: 99,
} as const

/** Maps a kernel errno for an operation to the typed error. `what` says what was being done. */
export function fromErrno(errno: number, what: string): KernelError {
  const name = errnoName(errno)
  const msg = `${what}: ${name}`
  switch (errno) {
    case Errno.EEXIST:
      return new KernelError('EXISTS', msg, { errno })
    case Errno.ENODEV:
      return new KernelError('NO_SUCH_DEVICE', msg, { errno })
    case Errno.ESRCH:
    case Errno.ENOENT:
    case Errno.EADDRNOTAVAIL:
      return new KernelError('NOT_FOUND', msg, { errno })
    case Errno.EBUSY:
      return new KernelError('BUSY', msg, { errno })
    case Errno.EPERM:
    case Errno.EACCES:
      return new KernelError('PERMISSION', msg, { errno })
    case Errno.EINVAL:
    case Errno.ERANGE:
      return new KernelError('INVALID_ARGUMENT', msg, { errno })
    default:
      return new KernelError('KERNEL', msg, { errno })
  }
}

function errnoName(errno: number): string {
  for (const [k, v] of Object.entries(Errno)) if (v === errno) return k
  return `errno ${errno}`
}
