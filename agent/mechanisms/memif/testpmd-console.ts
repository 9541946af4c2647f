// The interactive prompt of one dpdk-testpmd (./testpmd.ts connects it to the process's FIFO and output
// file): commands sent one at a time, each reply read back.
//
// Reply framing: testpmd's cmdline echoes every line it reads after its prompt, and a line starting with
// '#' is a comment that prints nothing. Each command is followed by a unique `#nsm-<n>-<nonce>` line; the
// reply is what lies between the echo of the command and the echo of that marker. Output printed
// between commands (the memif PMD logs a client connecting) is dropped at the start of the next command.
import { randomBytes } from 'node:crypto'

export class TestpmdError extends Error {
  override readonly name = 'TestpmdError'
}

interface Pending {
  marker: string
  command: string
  resolve: (reply: string) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Commands to one testpmd prompt, one at a time. The transport writes text to its stdin; its output is
 * fed in (`feed`), or read by `poll` while a reply is awaited (a file being appended to).
 */
export class TestpmdConsole {
  private buf = ''
  private seq = 0
  private tail: Promise<unknown> = Promise.resolve()
  private pending: Pending | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private failure: Error | undefined
  private readonly nonce = randomBytes(3).toString('hex')

  constructor(
    private readonly io: { write(text: string): void; poll?(): string },
    private readonly timeoutMs = 10_000,
  ) {}

  /** Output from testpmd. */
  feed(text: string): void {
    if (text === '') return
    this.buf += text
    this.settle()
  }

  /** Runs `command` after the ones queued before it; resolves with its reply (echo and prompt removed). */
  run(command: string, timeoutMs = this.timeoutMs): Promise<string> {
    return this.exclusive(() => this.send(command, timeoutMs))
  }

  /** Runs `fn` with the prompt to itself (no command is in flight meanwhile). */
  exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const next = this.tail.then(async () => {
      if (this.failure !== undefined) throw this.failure
      return await fn()
    })
    this.tail = next.catch(() => undefined)
    return next
  }

  /** Fails the command in flight and every later one (the process is gone). */
  fail(err: Error): void {
    this.failure ??= err
    const p = this.pending
    if (p !== undefined) this.finish(p, undefined, err)
  }

  get failed(): Error | undefined {
    return this.failure
  }

  /** Forgets buffered output (the reader moved: the file was truncated). */
  clear(): void {
    this.buf = ''
  }

  private send(command: string, timeoutMs: number): Promise<string> {
    if (/[\r\n]/.test(command)) throw new TestpmdError(`command ${JSON.stringify(command)} spans lines`)
    this.seq += 1
    const marker = `#nsm-${this.seq}-${this.nonce}`
    // What was printed since the last reply is no part of this one.
    this.drain()
    this.buf = ''
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = this.pending
        if (p !== undefined && p.marker === marker) this.finish(p, undefined, new TestpmdError(`testpmd did not answer ${JSON.stringify(command)} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending = { marker, command, resolve, reject, timer }
      try {
        this.io.write(command === '' ? `${marker}\n` : `${command}\n${marker}\n`)
      } catch (err) {
        this.finish(this.pending, undefined, new TestpmdError(`cannot write ${JSON.stringify(command)} to testpmd: ${(err as Error).message}`, { cause: err }))
        return
      }
      if (this.io.poll !== undefined) this.pollTimer = setInterval(() => this.drain(), 2)
      this.settle()
    })
  }

  private drain(): void {
    if (this.io.poll === undefined) return
    const text = this.io.poll()
    if (text !== '') {
      this.buf += text
      this.settle()
    }
  }

  private settle(): void {
    const p = this.pending
    if (p === undefined) return
    const at = this.buf.indexOf(p.marker)
    if (at < 0) return
    const end = this.buf.indexOf('\n', at)
    if (end < 0) return
    let text = this.buf.slice(0, at)
    this.buf = this.buf.slice(end + 1)
    if (p.command !== '') {
      const echo = text.indexOf(p.command)
      if (echo >= 0) {
        const nl = text.indexOf('\n', echo)
        text = nl < 0 ? '' : text.slice(nl + 1)
      }
    }
    text = text.replace(/testpmd> $/, '').replace(/\r/g, '')
    this.finish(p, text, undefined)
  }

  private finish(p: Pending, reply: string | undefined, err: Error | undefined): void {
    if (this.pending !== p) return
    this.pending = undefined
    clearTimeout(p.timer)
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer)
    this.pollTimer = undefined
    if (err !== undefined) p.reject(err)
    else p.resolve(reply ?? '')
  }
}
