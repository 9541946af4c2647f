// One rtnetlink socket bound to one network namespace: opened there by ./sessions.ts (NetlinkSessions, one
// socket per namespace), it talks to that namespace's kernel tables without any further switching.
//
// Requests that expect an ACK go out in batches (`batch`): every message of a batch is written in one
// sendmsg(2), each with NLM_F_ACK and its own sequence number, and the batch settles once every ACK (or
// error) is back. The kernel handles a netlink write synchronously inside sendmsg, message after message,
// so a batch of N changes costs one system call and one event-loop round trip instead of N of each — the
// round trips, not the kernel's work, were most of a cross-connect's time. A single request is a batch
// of one. The `netlink` package carries the bytes; the ACKs of our batches reach us as its unmatched
// 'message' events (their sequence numbers are not in its own request table) and are matched here. A dump's
// replies are read from the socket's datagrams directly (dumpOnce), since the package's own grouping of a
// dump breaks when a batch's ACK arrives in the middle of it.
//
// A batch with a link deletion goes out on the namespace's second socket, from a pool thread (./aside.ts):
// the kernel deletes a link inside the sendmsg, ~15–20 ms, and would hold the agent's event loop that long.
// A deletion is done when its promise resolves. Batches sent meanwhile go out at once, also on the same
// namespace (many connections share an endpoint's), and the kernel may run them before it: a caller that
// needs the link gone awaits the deletion, as every caller here does. A dump waits for the deletions asked for
// before it, so it never lists a link whose deletion was already under way.
import { parseMessages, type NetlinkMessage, type NetlinkSocket } from 'netlink'
import { Errno, fromErrno, KernelError, type KernelErrorCode } from '../errors'
import type { AsideSocket } from './aside'
import { NLM_F, NLMSG_DONE, NLMSG_ERROR, RTM } from './codec'

const REQUEST_TIMEOUT_MS = 5000
const DUMP_RETRIES = 10
const NLMSG_HDRLEN = 16
const align4 = (n: number): number => (n + 3) & ~3
/** Requests sent aside (./aside.ts): the kernel's work for them goes on long after it released RTNL. */
const goesAside = (m: RtnlMessage): boolean => m.type === RTM.DELLINK

/** One request of a batch: an rtnetlink message that the kernel acknowledges. */
export interface RtnlMessage {
  type: number
  body: Buffer[]
  /** NLM_F_* flags besides REQUEST and ACK, which every message gets (CREATE, EXCL, ECHO, ...). */
  flags: number
  /** What the message does, for its error: "add route 10.60.0.0/16 dev nsm-1". */
  what: string
  /** Error codes that count as success for this message (a route another connection already added). */
  tolerate?: readonly KernelErrorCode[]
}

interface Inflight {
  /** Non-ACK messages with this sequence number: a GET's answer, an NLM_F_ECHO copy. */
  replies: NetlinkMessage[]
  done(errno: number): void
  fail(err: Error): void
}

/** One kernel batch watched: told once, as the batch settles (before its caller sees the outcome). */
export interface BatchWatch {
  /** `error` is what the batch failed with; undefined when it succeeded. */
  done(failed: boolean, error?: unknown): void
}

/**
 * Watches kernel batches (the agent's tracing makes a span of each: agent/tracing/): called as a batch is
 * sent with its namespace path (undefined: the agent's own), its message count and the first message's
 * description ("add address 10.0.0.1/32 to nsm-1"); the watch it returns is told once the batch settled,
 * from the code that settles it (no promise of its own). A plain function, not a diagnostics tracing channel:
 * that channel's start, asyncStart and asyncEnd events cost each batch more than the span they make.
 */
export type BatchWatcher = (netns: string | undefined, messages: number, what: string) => BatchWatch | undefined

let batchWatcher: BatchWatcher | undefined

/** Sets (or, with undefined, removes) the process's batch watcher. Nobody watching: one check per batch. */
export function watchBatches(w: BatchWatcher | undefined): void {
  batchWatcher = w
}

export class Rtnl {
  private closed = false
  /** How many dumps were interrupted and run again (observability, tests). */
  dumpRetries = 0
  /** The dump in flight: the kernel runs one dump per socket at a time (a second one gets EBUSY). */
  private dumpTail: Promise<unknown> = Promise.resolve()
  /** The socket's netlink port id, read once (the package would ask getsockname(2) for every message). */
  private readonly port: number
  /** Batch messages waiting for their ACK, by sequence number. */
  private readonly inflight = new Map<number, Inflight>()
  /** The dump in flight (one at a time: dumpTail), read from the raw datagrams (see dumpOnce). */
  private dumping: { seq: number; onMessage(m: NetlinkMessage): void; fail(err: Error): void } | undefined
  /** Batches sent aside and not yet answered (dumps wait for those before them). */
  private readonly asideInflight = new Set<Promise<void>>()

  constructor(
    /** The namespace path this socket is bound to; undefined for the agent's own namespace. */
    readonly netns: string | undefined,
    private readonly sock: NetlinkSocket,
    /** The second socket of this namespace for deletions; without it every batch goes out on `sock`. */
    private readonly aside?: AsideSocket,
  ) {
    this.port = sock.address().port
    sock.on('message', (msgs) => this.onMessages(msgs))
    sock.socket.on('message', (datagram) => this.onDatagram(datagram))
  }

  /** Sends a request that expects an ACK; throws the typed error on a kernel error. */
  async request(type: number, body: Buffer[], flags: number, what: string): Promise<void> {
    await this.batch([{ type, body, flags, what }])
  }

  /**
   * Sends `msgs` in one sendmsg(2) and resolves, once the kernel has answered every one, with each
   * message's replies (empty unless it asked for some: a GET, NLM_F_ECHO).
   *
   * The kernel runs every message of a batch, in order, even after one of them failed: a batch is for
   * changes that the caller rolls back as a whole when it rejects (the cross-connect deletes its veth,
   * which takes the addresses and routes along). It rejects with the error of the first message, in
   * send order, that failed with a code it does not tolerate, described as that message
   * ("add address 10.0.0.1/32 to nsm-1 (netns ...): EEXIST"); later messages' errors are most often
   * consequences of the first.
   */
  batch(msgs: readonly RtnlMessage[]): Promise<NetlinkMessage[][]> {
    const w = batchWatcher === undefined || msgs.length === 0 ? undefined : batchWatcher(this.netns, msgs.length, msgs[0]?.what ?? '')
    if (w === undefined) return this.send(msgs, undefined)
    try {
      return this.send(msgs, w)
    } catch (err) {
      w.done(true, err)
      throw err
    }
  }

  /** Sends `msgs` as one batch; `w` (the batch watcher's) is told as the batch settles, with no promise of its own. */
  private send(msgs: readonly RtnlMessage[], w: BatchWatch | undefined): Promise<NetlinkMessage[][]> {
    if (this.closed) {
      const err = this.closedError(msgs[0]?.what ?? 'request')
      w?.done(true, err)
      return Promise.reject(err)
    }
    if (msgs.length === 0) return Promise.resolve([])
    const seqs = msgs.map(() => this.sock.generateSeq())
    const parts: Buffer[] = []
    msgs.forEach((m, i) => {
      const len = NLMSG_HDRLEN + m.body.reduce((n, b) => n + b.length, 0)
      const hdr = Buffer.alloc(NLMSG_HDRLEN)
      hdr.writeUInt32LE(len, 0)
      hdr.writeUInt16LE(m.type, 4)
      hdr.writeUInt16LE(m.flags | NLM_F.REQUEST | NLM_F.ACK, 6)
      hdr.writeUInt32LE(seqs[i] as number, 8)
      hdr.writeUInt32LE(this.port, 12)
      parts.push(hdr, ...m.body)
      // The kernel steps from message to message by NLMSG_ALIGN(nlmsg_len).
      if (align4(len) > len) parts.push(Buffer.alloc(align4(len) - len))
    })
    return new Promise<NetlinkMessage[][]>((settleOk, settleFailed) => {
      const resolve = (replies: NetlinkMessage[][]): void => {
        w?.done(false)
        settleOk(replies)
      }
      const reject = (err: Error): void => {
        w?.done(true, err)
        settleFailed(err)
      }
      const errnos: number[] = new Array<number>(msgs.length).fill(0)
      const replies: NetlinkMessage[][] = msgs.map(() => [])
      let waiting = msgs.length
      let settled = false
      const finish = (): void => {
        settled = true
        clearTimeout(timer)
        for (const seq of seqs) this.inflight.delete(seq)
      }
      const fail = (err: Error): void => {
        if (settled) return
        finish()
        reject(err)
      }
      const timer = setTimeout(() => {
        fail(new KernelError('KERNEL', `${this.describe(msgs[0]?.what ?? 'request')}${msgs.length > 1 ? ` (and ${msgs.length - 1} more)` : ''}: no answer from the kernel within ${REQUEST_TIMEOUT_MS} ms`))
      }, REQUEST_TIMEOUT_MS)
      seqs.forEach((seq, i) => {
        this.inflight.set(seq, {
          replies: replies[i] as NetlinkMessage[],
          fail,
          done: (errno) => {
            errnos[i] = errno
            waiting -= 1
            if (waiting > 0 || settled) return
            finish()
            for (let k = 0; k < msgs.length; k++) {
              const e = errnos[k] as number
              if (e === 0) continue
              const err = fromErrno(e, this.describe((msgs[k] as RtnlMessage).what))
              if (!(msgs[k]?.tolerate ?? []).includes(err.code)) {
                reject(err)
                return
              }
            }
            resolve(replies)
          },
        })
      })
      const sendFailed = (err: Error): void => fail(new KernelError('KERNEL', `${this.describe(msgs[0]?.what ?? 'request')}: sendmsg failed (${err.message})`, { cause: err }))
      const aside = this.aside
      if (aside !== undefined && msgs.some(goesAside)) {
        const sent = aside
          .send(Buffer.concat(parts), (replies) => this.onMessages(replies))
          .catch((err: unknown) => sendFailed(err instanceof Error ? err : new Error(String(err))))
          .finally(() => this.asideInflight.delete(sent))
        this.asideInflight.add(sent)
        return
      }
      try {
        this.sock.socket.send(parts, { port: 0 }, (err) => {
          if (err !== undefined && err !== null) sendFailed(err)
        })
      } catch (err) {
        sendFailed(err instanceof Error ? err : new Error(String(err)))
      }
    })
  }

  /**
   * Runs a dump; retries when the kernel flags it interrupted (the table changed while dumping). Dumps on
   * one socket are queued, one at a time: callers (CHECKs of connections sharing a namespace) may ask
   * concurrently.
   */
  dump(type: number, body: Buffer[], what: string): Promise<NetlinkMessage[]> {
    // A dump sees the namespace after the deletions sent aside before it was asked for (not those after).
    const after = this.asideInflight.size === 0 ? Promise.resolve() : Promise.all(this.asideInflight).then(() => undefined)
    const go = (): Promise<NetlinkMessage[]> => after.then(() => this.dumpNow(type, body, what))
    const run = this.dumpTail.then(go, go)
    this.dumpTail = run.catch(() => undefined)
    return run
  }

  private async dumpNow(type: number, body: Buffer[], what: string): Promise<NetlinkMessage[]> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw this.closedError(what)
      const msgs = await this.dumpOnce(type, body, what)
      if (!msgs.some((m) => (m.flags & NLM_F.DUMP_INTR) !== 0)) return msgs.filter((m) => m.type === type - 2) // replies to GETx are NEWx
      this.dumpRetries += 1
      if (attempt >= DUMP_RETRIES) throw fromErrno(Errno.EINTR, `${this.describe(what)}: dump kept being interrupted`)
    }
  }

  /**
   * One dump: its request sent, its replies collected until NLMSG_DONE (or an NLMSG_ERROR), however many
   * datagrams they take. They are read from the socket's datagrams here, not through the package's request():
   * that one groups a dump's datagrams itself and fails the dump ("Multipart message not terminated properly")
   * when another message of the socket, the ACK of a batch running meanwhile, arrives between two of them.
   */
  private dumpOnce(type: number, body: Buffer[], what: string): Promise<NetlinkMessage[]> {
    return new Promise<NetlinkMessage[]>((resolve, reject) => {
      const seq = this.sock.generateSeq()
      const replies: NetlinkMessage[] = []
      const settle = (err: Error | undefined): void => {
        if (this.dumping?.seq !== seq) return
        this.dumping = undefined
        clearTimeout(timer)
        if (err === undefined) resolve(replies)
        else reject(err)
      }
      const timer = setTimeout(() => settle(new KernelError('KERNEL', `${this.describe(what)}: no answer from the kernel within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS)
      this.dumping = {
        seq,
        onMessage: (m) => {
          // A dump ends with NLMSG_DONE, whose payload is its error (0, or a negative errno); a request the
          // kernel refuses at once gets an NLMSG_ERROR instead.
          if (m.type === NLMSG_DONE || m.type === NLMSG_ERROR) {
            const errno = m.data.length >= 4 ? -m.data.readInt32LE(0) : 0
            replies.push(m) // its flags count too: the kernel marks DONE as well when the dump was interrupted
            settle(errno === 0 ? undefined : fromErrno(errno, this.describe(what)))
          } else replies.push(m)
        },
        fail: settle,
      }
      this.sock.send(type, body, { seq, flags: NLM_F.REQUEST | NLM_F.DUMP, localPort: this.port }, (err) => {
        if (err !== undefined && err !== null) settle(new KernelError('KERNEL', `${this.describe(what)}: sendmsg failed (${err.message})`, { cause: err }))
      })
    })
  }

  /** A datagram from the kernel: the messages of the dump in flight are handed to it (batches: onMessages). */
  private onDatagram(datagram: Buffer): void {
    const dump = this.dumping
    if (dump === undefined) return
    let msgs: NetlinkMessage[]
    try {
      msgs = parseMessages(datagram)
    } catch {
      return // not ours to judge: the package reports what it cannot parse
    }
    for (const m of msgs) if (m.seq === dump.seq && this.dumping === dump) dump.onMessage(m)
  }

  /** Exposed so that callers which need the reply body (single GET) can parse it. */
  async get(type: number, body: Buffer[], what: string): Promise<NetlinkMessage> {
    const [replies] = await this.batch([{ type, body, flags: 0, what }])
    const first = replies?.[0]
    if (first === undefined) throw new KernelError('KERNEL', `${this.describe(what)}: empty reply`)
    return first
  }

  /** ACKs (and replies) of our batches; anything else (a late ACK, a stray message) is ignored. */
  private onMessages(msgs: NetlinkMessage[]): void {
    for (const m of msgs) {
      const f = this.inflight.get(m.seq)
      if (f === undefined) continue
      if (m.type === NLMSG_ERROR) {
        this.inflight.delete(m.seq)
        f.done(-m.data.readInt32LE(0))
      } else {
        f.replies.push(m)
      }
    }
  }

  private closedError(what: string): KernelError {
    return new KernelError('BAD_NETNS', `${this.describe(what)}: the namespace's netlink socket is closed`)
  }

  describe(what: string): string {
    return this.netns === undefined ? what : `${what} (netns ${this.netns})`
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    const pending = [...new Set(this.inflight.values())]
    this.inflight.clear()
    for (const f of pending) f.fail(new KernelError('BAD_NETNS', this.describe("the namespace's netlink socket was closed while a request was in flight")))
    this.dumping?.fail(new KernelError('BAD_NETNS', this.describe("the namespace's netlink socket was closed while a dump was in flight")))
    this.sock.close()
    this.aside?.close()
  }

  get isClosed(): boolean {
    return this.closed
  }
}
