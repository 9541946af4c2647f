// The driver of one dpdk-testpmd forwarder process (the MEMIF mechanism's userspace datapath, see
// ./forwarder.ts for why one testpmd serves many connections): how it is started so that it outlives the
// agent, how a later agent takes it over, its prompt and its files. Its command line and the checks on
// what reaches it: ./testpmd-args.ts; the prompt's reply framing: ./testpmd-console.ts; its replies read:
// ./testpmd-replies.ts; its identity on disk: ./forwarder-identity.ts. It knows nothing of connections.
//
// Outliving the agent (measured with Debian's DPDK 22.11): testpmd exits on stdin EOF and would die
// of SIGPIPE writing to a pipe whose reader is gone. So it is spawned detached (own session, unref'd), its
// stdin a FIFO it holds open read-write itself (it never sees EOF, whoever writes or dies), its stdout and
// stderr one file opened O_APPEND (so the reader may truncate it at any time: the next write lands at the
// new end), under `stdbuf -oL` so each line is written when printed. The agent writes commands into the
// FIFO through its own non-blocking read-write descriptor (a wedged testpmd fails a write with EAGAIN
// instead of blocking the event loop) and reads the output file from an offset.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, readSync, rmSync, truncateSync, writeSync } from 'node:fs'
import { writeFileAtomic } from '../../registry/atomic-file.js'
import {
  cmdline,
  forwarderFiles,
  hasFilePrefix,
  newForwarderName,
  processStartTime,
  removeForwarderFiles,
  STATE_VERSION,
  type ForwarderState,
  type PairRecord,
} from './forwarder-identity.js'
import { testpmdArgs } from './testpmd-args.js'
import { TestpmdConsole, TestpmdError } from './testpmd-console.js'

export interface SpawnOptions {
  runDir: string
  testpmd: string
  cpu: number
  /** A new one is made when absent. */
  name?: string
}

/** Output files past this size are truncated between commands (the link poll writes ~300 B per pair per second at 250 ms). */
const OUTPUT_LIMIT = 1 << 20

/**
 * One running testpmd: its prompt, its identity, its files. Created by `spawn` (a child of this process:
 * its exit is seen at once) or `adopt` (a process a former agent started: its exit is seen by `alive()`).
 */
export class TestpmdProcess {
  readonly console: TestpmdConsole
  private readonly fd: number
  private offset: number
  private exited = false
  private exitListeners: Array<(reason: string) => void> = []
  private child: ChildProcess | undefined

  private constructor(
    readonly name: string,
    readonly pid: number,
    readonly startTime: string,
    readonly cpu: number,
    readonly testpmd: string,
    readonly files: { fifo: string; out: string; state: string },
    offset: number,
  ) {
    this.fd = openSync(files.fifo, constants.O_RDWR | constants.O_NONBLOCK)
    this.offset = offset
    this.console = new TestpmdConsole({ write: (text) => this.write(text), poll: () => this.readOutput() })
  }

  /** Starts a forwarder with no ports and waits for its prompt. */
  static async spawn(opts: SpawnOptions): Promise<TestpmdProcess> {
    const name = opts.name ?? newForwarderName(opts.runDir)
    const files = forwarderFiles(opts.runDir, name)
    rmSync(files.fifo, { force: true })
    execFileSync('mkfifo', ['-m', '0600', files.fifo])
    const stdin = openSync(files.fifo, 'r+')
    const out = openSync(files.out, 'a', 0o600)
    let child: ChildProcess
    try {
      child = spawn('stdbuf', ['-oL', '-eL', opts.testpmd, ...testpmdArgs(name, opts.cpu)], { detached: true, stdio: [stdin, out, out] })
    } finally {
      closeSync(stdin)
      closeSync(out)
    }
    const pid = child.pid
    if (pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve))
      removeForwarderFiles(opts.runDir, name)
      throw new TestpmdError(`cannot start ${opts.testpmd}: ${err.message}`, { cause: err })
    }
    child.unref()
    const startTime = processStartTime(pid) ?? ''
    const proc = new TestpmdProcess(name, pid, startTime, opts.cpu, opts.testpmd, files, 0)
    proc.child = child
    child.once('exit', (code, signal) => proc.onExit(signal !== null ? `killed by ${signal}` : `exited with code ${String(code)}`))
    try {
      await proc.console.run('', 15_000)
    } catch (err) {
      proc.kill()
      await proc.waitExit(2000)
      throw new TestpmdError(`${opts.testpmd} did not come up: ${(err as Error).message}; its output: ${proc.tailOutput()}`, { cause: err })
    }
    return proc
  }

  /** Takes over a process a former agent started, if it is still the one `state` names; else undefined. */
  static async adopt(runDir: string, state: ForwarderState): Promise<TestpmdProcess | undefined> {
    if (processStartTime(state.pid) !== state.startTime || !hasFilePrefix(cmdline(state.pid), state.name)) return undefined
    const files = forwarderFiles(runDir, state.name)
    if (!existsSync(files.fifo) || !existsSync(files.out)) return undefined
    let size = 0
    try {
      const fd = openSync(files.out, 'r')
      size = fstatSync(fd).size
      closeSync(fd)
    } catch {
      return undefined
    }
    const proc = new TestpmdProcess(state.name, state.pid, state.startTime, state.cpu, state.testpmd, files, size)
    try {
      await proc.console.run('', 5000)
    } catch {
      proc.close()
      return undefined
    }
    return proc
  }

  /** Still running (and still the same process)? Adopted processes are watched through this. */
  alive(): boolean {
    if (this.exited) return false
    if (this.child !== undefined) return true
    if (processStartTime(this.pid) !== this.startTime) {
      this.onExit('the process is gone')
      return false
    }
    return true
  }

  get hasExited(): boolean {
    return this.exited
  }

  onceExit(fn: (reason: string) => void): void {
    if (this.exited) fn('exited')
    else this.exitListeners.push(fn)
  }

  /** Drops exit listeners (the agent stops and leaves the process running). */
  forget(): void {
    this.exitListeners = []
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.exited) return
    try {
      if (processStartTime(this.pid) === this.startTime) process.kill(this.pid, signal)
    } catch {
      // gone already
    }
  }

  /** Waits up to `ms` for the process to exit; true when it did. */
  async waitExit(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms
    while (this.alive()) {
      if (Date.now() > deadline) return false
      await new Promise((r) => setTimeout(r, 20))
    }
    return true
  }

  /** Ends it: `quit` (testpmd closes its ports and removes their sockets), SIGKILL when that does not work. */
  async quit(): Promise<void> {
    if (this.alive()) {
      try {
        this.write('quit\n')
      } catch {
        // the kill below
      }
      if (!(await this.waitExit(3000))) {
        this.kill()
        await this.waitExit(2000)
      }
    }
    this.close()
  }

  /** Closes this agent's descriptor on the FIFO (the process keeps its own). */
  close(): void {
    try {
      closeSync(this.fd)
    } catch {
      // closed
    }
  }

  state(pairs: PairRecord[]): ForwarderState {
    return { version: STATE_VERSION, name: this.name, pid: this.pid, startTime: this.startTime, cpu: this.cpu, testpmd: this.testpmd, pairs }
  }

  async writeState(pairs: PairRecord[]): Promise<void> {
    await writeFileAtomic(this.files.state, JSON.stringify(this.state(pairs)), 0o600)
  }

  /** Truncates the output file when it has grown past the limit (between commands). */
  async trimOutput(limit = OUTPUT_LIMIT): Promise<void> {
    if (this.offset < limit) return
    await this.console.exclusive(() => {
      if (this.offset < limit) return
      this.console.feed(this.readOutput())
      truncateSync(this.files.out, 0)
      this.offset = 0
      this.console.clear()
    })
  }

  /** The last lines of its output (for error messages). */
  tailOutput(bytes = 600): string {
    try {
      const text = readFileSync(this.files.out, 'utf8')
      return JSON.stringify(text.slice(-bytes))
    } catch {
      return '(none)'
    }
  }

  private write(text: string): void {
    if (this.exited) throw new TestpmdError(`forwarder ${this.name} (pid ${this.pid}) has exited`)
    const data = Buffer.from(text)
    let done = 0
    while (done < data.length) done += writeSync(this.fd, data, done)
  }

  private readOutput(): string {
    let fd: number
    try {
      fd = openSync(this.files.out, 'r')
    } catch {
      return ''
    }
    try {
      const size = fstatSync(fd).size
      if (size < this.offset) this.offset = 0
      if (size === this.offset) return ''
      const buf = Buffer.alloc(size - this.offset)
      const n = readSync(fd, buf, 0, buf.length, this.offset)
      this.offset += n
      return buf.subarray(0, n).toString('utf8')
    } finally {
      closeSync(fd)
    }
  }

  private onExit(reason: string): void {
    if (this.exited) return
    this.exited = true
    this.console.fail(new TestpmdError(`forwarder ${this.name} (pid ${this.pid}) ${reason}`))
    const listeners = this.exitListeners
    this.exitListeners = []
    for (const fn of listeners) fn(reason)
  }
}
