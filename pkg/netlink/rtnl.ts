// One rtnetlink socket bound to one network namespace, and the per-namespace cache of them.
//
// A socket is opened inside `withNetns` (see ../netns.ts) and from then on talks to that namespace's
// kernel tables without any further switching. The cache keeps one socket per namespace, keyed by the
// namespace file's identity (dev:inode), so a namespace deleted and re-created under the same name gets
// a fresh socket; `sweep()` closes sockets whose namespace path is gone (a socket pins its namespace).
import { createNetlink, Protocol, type NetlinkMessage, type NetlinkSocket } from 'netlink'
import { openSync } from 'node:fs'
import { Errno, fromErrno, KernelError } from '../errors'
import { NetnsAllowlist, netnsKey, withNetns } from '../netns'
import { NLM_F, NLMSG_ERROR } from './codec'

const REQUEST_TIMEOUT_MS = 5000
const SOCKET_BUFFER = 4 * 1024 * 1024

/**
 * Opens an rtnetlink socket in the calling thread's current namespace. An 'error' listener is required:
 * the package re-emits socket errors (e.g. ENOBUFS under a burst of replies), and an unhandled one
 * thrown from its native callback would terminate the process.
 */
function openSocket(onError: (err: Error) => void): NetlinkSocket {
  const sock = createNetlink(Protocol.ROUTE, { recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER })
  sock.on('error', onError)
  return sock
}

/** Socket errors are reported here (the agent replaces it with its logger). */
export let reportSocketError = (err: Error): void => {
  process.stderr.write(`netlink socket error: ${err.message}\n`)
}
export function setSocketErrorReporter(fn: (err: Error) => void): void {
  reportSocketError = fn
}
const DUMP_RETRIES = 10

export class Rtnl {
  private closed = false
  /** How many dumps were interrupted and run again (observability, tests). */
  dumpRetries = 0

  constructor(
    /** The namespace path this socket is bound to; undefined for the agent's own namespace. */
    readonly netns: string | undefined,
    private readonly sock: NetlinkSocket,
  ) {}

  /** Sends a request that expects an ACK; throws the typed error on a kernel error. */
  async request(type: number, body: Buffer[], flags: number, what: string): Promise<void> {
    const msgs = await this.send(type, body, flags, what)
    const first = msgs[0]
    if (first !== undefined && first.type === NLMSG_ERROR) {
      const errno = -first.data.readInt32LE(0)
      if (errno !== 0) throw fromErrno(errno, this.describe(what))
    }
  }

  /** Runs a dump; retries when the kernel flags it interrupted (the table changed while dumping). */
  async dump(type: number, body: Buffer[], what: string): Promise<NetlinkMessage[]> {
    for (let attempt = 0; ; attempt++) {
      const msgs = await this.send(type, body, NLM_F.DUMP, what)
      const err = msgs.find((m) => m.type === NLMSG_ERROR)
      if (err !== undefined) {
        const errno = -err.data.readInt32LE(0)
        if (errno !== 0) throw fromErrno(errno, this.describe(what))
      }
      if (!msgs.some((m) => (m.flags & NLM_F.DUMP_INTR) !== 0)) return msgs.filter((m) => m.type === type - 2) // replies to GETx are NEWx
      this.dumpRetries += 1
      if (attempt >= DUMP_RETRIES) throw fromErrno(Errno.EINTR, `${this.describe(what)}: dump kept being interrupted`)
    }
  }

  /** Exposed so that callers which need the reply body (single GET) can parse it. */
  async get(type: number, body: Buffer[], what: string): Promise<NetlinkMessage> {
    const msgs = await this.send(type, body, 0, what)
    const first = msgs[0]
    if (first === undefined) throw new KernelError('KERNEL', `${this.describe(what)}: empty reply`)
    if (first.type === NLMSG_ERROR) {
      const errno = -first.data.readInt32LE(0)
      throw fromErrno(errno === 0 ? Errno.EINVAL : errno, this.describe(what))
    }
    return first
  }

  private async send(type: number, body: Buffer[], flags: number, what: string): Promise<NetlinkMessage[]> {
    if (this.closed) throw new KernelError('BAD_NETNS', `${this.describe(what)}: the namespace's netlink socket is closed`)
    const [msgs] = await this.sock.request(type, body, { flags, timeout: REQUEST_TIMEOUT_MS, checkError: false })
    return msgs
  }

  describe(what: string): string {
    return this.netns === undefined ? what : `${what} (netns ${this.netns})`
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.sock.close()
  }

  get isClosed(): boolean {
    return this.closed
  }
}

interface Cached {
  key: string
  rtnl: Rtnl
}

/** Hands out one Rtnl per namespace, checks paths against the allowlist, and closes stale sockets. */
export class NetlinkSessions {
  private readonly byPath = new Map<string, Cached>()
  private hostRtnl: Rtnl | undefined

  constructor(readonly allowlist: NetnsAllowlist = new NetnsAllowlist()) {}

  /** The agent's own namespace. */
  host(): Rtnl {
    if (this.hostRtnl === undefined || this.hostRtnl.isClosed) this.hostRtnl = new Rtnl(undefined, openSocket((e) => reportSocketError(e)))
    return this.hostRtnl
  }

  /** The socket for the namespace at `path` (allowlisted), opened on first use. */
  forNetns(path: string): Rtnl {
    const checked = this.allowlist.check(path)
    const key = netnsKey(checked)
    const cached = this.byPath.get(checked)
    if (key === undefined) {
      if (cached !== undefined) this.drop(checked)
      throw new KernelError('BAD_NETNS', `netns ${checked} does not exist`)
    }
    if (cached !== undefined) {
      if (cached.key === key && !cached.rtnl.isClosed) return cached.rtnl
      this.drop(checked)
    }
    const sock = withNetns(checked, () => openSocket((e) => reportSocketError(e)))
    const rtnl = new Rtnl(checked, sock)
    this.byPath.set(checked, { key, rtnl })
    return rtnl
  }

  /** `undefined` means the agent's own namespace. */
  at(path: string | undefined): Rtnl {
    return path === undefined ? this.host() : this.forNetns(path)
  }

  /**
   * An fd of the namespace at `path` for IFLA_NET_NS_FD (allowlisted); the caller closes it right after
   * the request, so that no fd pins a namespace.
   */
  openNetnsFd(path: string): number {
    const checked = this.allowlist.check(path)
    try {
      return openSync(checked, 'r')
    } catch (err) {
      throw new KernelError('BAD_NETNS', `netns ${checked} does not exist`, { cause: err })
    }
  }

  /** Closes the socket of one namespace (it went away, or the caller is done with it). */
  drop(path: string): void {
    const cached = this.byPath.get(path)
    if (cached === undefined) return
    cached.rtnl.close()
    this.byPath.delete(path)
  }

  /** Closes sockets whose namespace path no longer exists or now names another namespace. */
  sweep(): string[] {
    const gone: string[] = []
    for (const [path, cached] of this.byPath) {
      if (netnsKey(path) !== cached.key) {
        this.drop(path)
        gone.push(path)
      }
    }
    return gone
  }

  /** Namespace paths with an open socket. */
  cachedPaths(): string[] {
    return [...this.byPath.keys()]
  }

  closeAll(): void {
    for (const path of [...this.byPath.keys()]) this.drop(path)
    this.hostRtnl?.close()
    this.hostRtnl = undefined
  }
}
