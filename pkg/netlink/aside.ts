// A second rtnetlink socket per namespace, for the requests whose kernel work goes on after the kernel let
// go of its lock: a link's deletion.
//
// The kernel runs a netlink request inside the sendmsg(2) that carries it, and the `netlink` package calls
// sendmsg on the agent's main thread. Deleting a link takes the kernel ~15–20 ms here, nearly all of it
// after RTNL is released (netdev_run_todo's RCU barrier): other link changes run meanwhile, but a sendmsg
// from the main thread held every other call of the agent for that long. Such a request goes out on this
// socket instead, its sendmsg on one of libuv's pool threads (koffi's async call); its ACKs are read back
// on the main thread once that send returned (by then the kernel has queued them). The socket is opened
// with the namespace's main one, in the same switch (./sessions.ts), so it talks to the same namespace.
//
// Rtnl (./rtnl.ts) keeps a namespace's requests in order around it: what is sent after a request that went
// aside waits for it. At most ASIDE_THREADS sends run at once in the process, so file and DNS work keeps
// pool threads of its own.
import { parseMessages, type NetlinkMessage } from 'netlink'
import { errno, libcFunction } from '../libc'

const AF_NETLINK = 16
const SOCK_RAW = 3
const SOCK_CLOEXEC = 0o2000000
const NETLINK_ROUTE = 0
const MSG_DONTWAIT = 0x40
const EINTR = 4
/** Pool threads that may be in a send at once (libuv has four unless UV_THREADPOOL_SIZE says otherwise). */
const ASIDE_THREADS = 2
/** What one recv(2) reads; an ACK is 36 bytes, an error's also carries the request it refuses. */
const RECV_BYTES = 64 * 1024

const socket = (): ((domain: number, type: number, protocol: number) => number) => libcFunction('int socket(int domain, int type, int protocol)')
type Send = ((fd: number, buf: Buffer, len: number, flags: number) => number) & {
  async(fd: number, buf: Buffer, len: number, flags: number, cb: (err: unknown, res: number) => void): void
}
const send = (): Send => libcFunction('long send(int fd, const void *buf, size_t len, int flags)')
const recv = (): ((fd: number, buf: Buffer, len: number, flags: number) => number) => libcFunction('long recv(int fd, _Out_ void *buf, size_t len, int flags)')
const close = (): ((fd: number) => number) => libcFunction('int close(int fd)')

/** Sends waiting for a pool thread (ASIDE_THREADS). */
const waiting: Array<() => void> = []
let running = 0

function release(): void {
  running -= 1
  waiting.shift()?.()
}

/** One receive buffer for every socket: the ACKs are read on the main thread, one socket after another. */
let received: Buffer | undefined

export class AsideSocket {
  private fd: number
  /** Sends on a pool thread now; close() leaves the fd open until they returned (the fd is the thread's). */
  private busy = 0
  private closing = false

  private constructor(fd: number) {
    this.fd = fd
  }

  /** Opens a socket in the calling thread's current namespace (call it inside withNetns). */
  static open(): AsideSocket {
    const fd = socket()(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)
    if (fd < 0) {
      const e = errno()
      throw Object.assign(new Error(`socket(AF_NETLINK) failed (errno ${e})`), { errno: e })
    }
    return new AsideSocket(fd)
  }

  /**
   * Sends `packet` (whole netlink messages) from a pool thread; once the send returned, reads what the kernel
   * answered (whole datagrams, its ACKs) and hands every message to `onMessages`. Rejects when the send fails.
   */
  async send(packet: Buffer, onMessages: (msgs: NetlinkMessage[]) => void): Promise<void> {
    if (running >= ASIDE_THREADS) await new Promise<void>((r) => waiting.push(r))
    running += 1
    let sent: boolean
    try {
      if (this.closing) throw new Error('the socket is closed')
      this.busy += 1
      try {
        sent = await this.sendOnPool(packet)
      } finally {
        this.busy -= 1
      }
    } finally {
      release()
    }
    if (sent) this.drain(onMessages)
    this.closeIfIdle()
    // errno is the pool thread's, not readable here. A netlink send fails before the kernel ran anything
    // (a full send buffer, no memory): nothing was changed.
    if (!sent) throw new Error('sendmsg from a pool thread failed')
  }

  /** Whether the send succeeded. */
  private sendOnPool(packet: Buffer): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      send().async(this.fd, packet, packet.length, 0, (err, res) => {
        if (err !== null && err !== undefined) reject(err instanceof Error ? err : new Error(String(err)))
        else resolve(res >= 0)
      })
    })
  }

  /** Reads every datagram waiting on the socket (without blocking) and hands their messages on. */
  private drain(onMessages: (msgs: NetlinkMessage[]) => void): void {
    const buf = (received ??= Buffer.alloc(RECV_BYTES))
    for (;;) {
      if (this.fd < 0) return
      const n = recv()(this.fd, buf, buf.length, MSG_DONTWAIT)
      if (n < 0) {
        if (errno() === EINTR) continue
        return // EAGAIN: all read. ENOBUFS (ACKs dropped) or another error: the batch's own timer reports it.
      }
      let msgs: NetlinkMessage[]
      try {
        msgs = parseMessages(Buffer.from(buf.subarray(0, n)))
      } catch {
        continue
      }
      onMessages(msgs)
    }
  }

  /** Closes the socket, at once or when the send in flight returns. */
  close(): void {
    this.closing = true
    this.closeIfIdle()
  }

  private closeIfIdle(): void {
    if (!this.closing || this.busy > 0 || this.fd < 0) return
    close()(this.fd)
    this.fd = -1
  }
}
