// The per-namespace cache of rtnetlink sockets (./rtnl.ts: one socket, its batches and dumps).
//
// A socket is opened inside `withNetns` (see ../netns.ts) and from then on talks to that namespace's
// kernel tables without any further switching. The cache keeps one socket per namespace, keyed by the
// namespace file's identity (dev:inode), so a namespace deleted and re-created under the same name gets
// a fresh socket; `sweep()` closes sockets whose namespace path is gone (a socket pins its namespace).
import { createNetlink, Protocol, type NetlinkSocket } from 'netlink'
import { closeSync } from 'node:fs'
import { KernelError } from '../errors'
import { netnsKey, withNetns } from '../netns'
import { NetnsPolicy, type JudgedNetns } from '../netns-policy'
import { AsideSocket } from './aside'
import { Rtnl } from './rtnl'

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

/**
 * The namespace's second socket, for deletions (./aside.ts), opened in the calling thread's current namespace.
 * Without it (reported) the namespace's deletions go out on its main socket, holding the event loop as they did.
 */
function openAside(): AsideSocket | undefined {
  try {
    return AsideSocket.open()
  } catch (err) {
    reportSocketError(err instanceof Error ? err : new Error(String(err)))
    return undefined
  }
}

/** Socket errors are reported here (the agent replaces it with its logger). */
export let reportSocketError = (err: Error): void => {
  process.stderr.write(`netlink socket error: ${err.message}\n`)
}
export function setSocketErrorReporter(fn: (err: Error) => void): void {
  reportSocketError = fn
}

interface Cached {
  key: string
  rtnl: Rtnl
}

/**
 * Hands out one Rtnl per namespace, every path judged by the netns policy (../netns-policy.ts: spelling,
 * and what it opens is not the host's netns), and closes stale sockets.
 */
export class NetlinkSessions {
  private readonly byPath = new Map<string, Cached>()
  private hostRtnl: Rtnl | undefined

  /** Whether deletions go out on a second socket from a pool thread (./aside.ts); off, on the main socket. */
  private readonly aside: boolean

  constructor(
    readonly policy: NetnsPolicy = new NetnsPolicy(),
    opts: { aside?: boolean } = {},
  ) {
    this.aside = opts.aside ?? true
  }

  /** The agent's own namespace. */
  host(): Rtnl {
    if (this.hostRtnl === undefined || this.hostRtnl.isClosed) this.hostRtnl = new Rtnl(undefined, openSocket((e) => reportSocketError(e)), this.aside ? openAside() : undefined)
    return this.hostRtnl
  }

  /** The socket for the namespace at `path` (policy-checked), opened on first use. */
  forNetns(path: string): Rtnl {
    // A cached socket is reused while the path still names the namespace it was opened in (judged then).
    const { path: checked, key } = this.policy.identify(path)
    const cached = this.byPath.get(checked)
    if (key === undefined) {
      if (cached !== undefined) this.drop(checked)
      throw new KernelError('BAD_NETNS', `netns ${checked} does not exist`)
    }
    if (cached !== undefined) {
      if (cached.key === key && !cached.rtnl.isClosed) return cached.rtnl
      this.drop(checked)
    }
    // Keyed by what was actually opened and judged (the path may have changed since the stat).
    const { sock, aside, opened } = this.enter(checked, (ns) => ({ sock: openSocket((e) => reportSocketError(e)), aside: this.aside ? openAside() : undefined, opened: ns.key }))
    const rtnl = new Rtnl(checked, sock, aside)
    this.byPath.set(checked, { key: opened, rtnl })
    return rtnl
  }

  /** `undefined` means the agent's own namespace. */
  at(path: string | undefined): Rtnl {
    return path === undefined ? this.host() : this.forNetns(path)
  }

  /**
   * Runs `fn` synchronously inside the namespace at `path`, opened and judged by the policy (pkg/netns.ts
   * says what `fn` must never do while switched). Used to open sockets and /proc/sys files there.
   */
  enter<T>(path: string, fn: (ns: JudgedNetns) => T): T {
    const ns = this.policy.open(path)
    try {
      return withNetns(ns, () => fn(ns))
    } finally {
      closeSync(ns.fd)
    }
  }

  /**
   * An fd of the namespace at `path` for IFLA_NET_NS_FD (policy-checked); the caller closes it right after
   * the request, so that no fd pins a namespace.
   */
  openNetnsFd(path: string): number {
    return this.policy.open(path).fd
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
