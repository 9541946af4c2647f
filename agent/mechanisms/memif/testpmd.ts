// The driver of one dpdk-testpmd forwarder process (the MEMIF mechanism's userspace datapath, see
// ./forwarder.ts for why one testpmd serves many connections): how it is started so that it outlives the
// agent, how a later agent finds it again, and how commands are sent to its interactive prompt and their
// replies read back. It knows testpmd's command syntax and output; it knows nothing of connections.
//
// Outliving the agent (measured with Debian's DPDK 22.11): testpmd exits on stdin EOF and would die
// of SIGPIPE writing to a pipe whose reader is gone. So it is spawned detached (own session, unref'd), its
// stdin a FIFO it holds open read-write itself (it never sees EOF, whoever writes or dies), its stdout and
// stderr one file opened O_APPEND (so the reader may truncate it at any time: the next write lands at the
// new end), under `stdbuf -oL` so each line is written when printed. The agent writes commands into the
// FIFO through its own non-blocking read-write descriptor (a wedged testpmd fails a write with EAGAIN
// instead of blocking the event loop) and reads the output file from an offset.
//
// Reply framing: testpmd's cmdline echoes every line it reads after its prompt, and a line starting with
// '#' is a comment that prints nothing. Each command is followed by a unique `#nsm-<n>-<nonce>` line; the
// reply is what lies between the echo of the command and the echo of that marker. Output printed
// between commands (the memif PMD logs a client connecting) is dropped at the start of the next command.
//
// Identity: a state file per process (pid, start time from /proc/<pid>/stat field 22, file prefix, CPU,
// pairs) written atomically. A process is adopted only when the pid is alive (not a zombie), its start
// time is the recorded one (defends against pid reuse) and its cmdline carries the recorded
// `--file-prefix`. The file prefix starts with a hash of the run directory, so processes of this run
// directory that lost their state file (killed between spawn and the first write) are recognisable.
//
// Input that reaches testpmd: socket paths and interface names are part of devargs
// (`key=value,key=value`) and of a command line split on blanks; they are checked against a strict
// allowlist (checkSocketPath, checkIfaceName). Processes are spawned from argv arrays, never a shell.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, readSync, readdirSync, rmSync, truncateSync, writeSync } from 'node:fs'
import { isAbsolute, join, normalize } from 'node:path'
import { AgentError } from '../../errors.js'
import { writeFileAtomic } from '../../registry/atomic-file.js'

/** EAL memory (`-m`, MiB, no hugepages) and mbufs: 16 pairs attached at run time need -m 24 with 2048 mbufs; 32 gives room. */
export const FORWARDER_MEMORY_MB = 32
export const FORWARDER_MBUFS = 2048
/** testpmd's RTE_MAX_ETHPORTS in Debian's build is 32: 16 pairs. */
export const MAX_PAIRS_PER_PROCESS = 16

const STATE_VERSION = 1

// ---------------------------------------------------------------------------------------------------
// Input checks

// Devargs are split on ',' and '='; the command line on blanks; '#' starts a comment, '?' and TAB ask
// cmdline for help/completion. An allowlist is the only safe answer.
const SOCKET_PATH = /^\/[A-Za-z0-9._/@+-]+$/
const IFACE_NAME = /^[A-Za-z0-9._@-]{1,15}$/
/** sun_path is 108 bytes with its NUL. */
const SUN_PATH_MAX = 107

/** Throws INVALID_ARGUMENT naming the value unless `path` is an absolute, normalised path testpmd can take. */
export function checkSocketPath(path: string): void {
  const bad = (why: string): never => {
    throw AgentError.invalid('memif socket', `${JSON.stringify(path)} ${why}`)
  }
  if (!isAbsolute(path)) bad('is not an absolute path')
  if (!SOCKET_PATH.test(path)) bad('may contain only letters, digits and . _ / @ + - (no comma, blank or control character: it is passed in testpmd devargs)')
  if (normalize(path) !== path || path.endsWith('/')) bad('is not a normalised file path')
  if (Buffer.byteLength(path) > SUN_PATH_MAX) bad(`is longer than ${SUN_PATH_MAX} bytes (a unix socket path)`)
}

/** Throws INVALID_ARGUMENT naming the value unless `name` is an interface name testpmd can take. */
export function checkIfaceName(name: string): void {
  if (!IFACE_NAME.test(name) || name === '.' || name === '..') {
    throw AgentError.invalid('memif iface', `${JSON.stringify(name)} is not an interface name testpmd can take (1-15 of letters, digits, . _ @ -)`)
  }
}

// ---------------------------------------------------------------------------------------------------
// Output parsing

/** `port attach` answered "Port N is attached": N, else undefined (testpmd drops a failed vdev and goes on). */
export function parseAttachedPort(reply: string): number | undefined {
  const m = /Port (\d+) is attached/.exec(reply)
  return m === null ? undefined : Number(m[1])
}

export interface PortSummary {
  port: number
  name: string
  driver: string
  up: boolean
}

/** `show port summary all`. */
export function parsePortSummary(reply: string): PortSummary[] {
  const out: PortSummary[] = []
  for (const line of reply.split('\n')) {
    const m = /^(\d+)\s+[0-9A-Fa-f:]{17}\s+(\S+)\s+(\S+)\s+(up|down)\b/.exec(line.trim())
    if (m !== null) out.push({ port: Number(m[1]), name: m[2] as string, driver: m[3] as string, up: m[4] === 'up' })
  }
  return out
}

export interface PortCounters {
  rxPackets: number
  txPackets: number
  rxBytes: number
  txBytes: number
}

/** `show port stats N`; undefined when the reply has no counters (an invalid port). */
export function parsePortStats(reply: string): PortCounters | undefined {
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(reply)
    return m === null ? undefined : Number(m[1])
  }
  const rxPackets = num(/RX-packets:\s*(\d+)/)
  const rxBytes = num(/RX-bytes:\s*(\d+)/)
  const txPackets = num(/TX-packets:\s*(\d+)/)
  const txBytes = num(/TX-bytes:\s*(\d+)/)
  if (rxPackets === undefined || rxBytes === undefined || txPackets === undefined || txBytes === undefined) return undefined
  return { rxPackets, txPackets, rxBytes, txBytes }
}

// ---------------------------------------------------------------------------------------------------
// The prompt

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

// ---------------------------------------------------------------------------------------------------
// Processes and their files

/** One pair of ports: the memif server (the pod's socket) and the af_packet port on a kernel interface. */
export interface PairRecord {
  id: string
  socket: string
  iface: string
  /** Vdev names are net_memif<slot> and net_af_packet<slot> (unique within the process, reusable). */
  slot: number
  memifPort: number
  kernelPort: number
}

export interface ForwarderState {
  version: number
  name: string
  pid: number
  /** /proc/<pid>/stat field 22 (clock ticks since boot): with the pid, the process's identity. */
  startTime: string
  cpu: number
  testpmd: string
  pairs: PairRecord[]
}

export function runDirTag(runDir: string): string {
  return createHash('sha256').update(normalize(runDir)).digest('hex').slice(0, 6)
}

/** A new process name (its DPDK file prefix): nsmfwd-<run dir tag>-<random>. */
export function newForwarderName(runDir: string): string {
  return `nsmfwd-${runDirTag(runDir)}-${randomBytes(3).toString('hex')}`
}

export function forwarderFiles(runDir: string, name: string): { fifo: string; out: string; state: string } {
  return { fifo: join(runDir, `${name}.in`), out: join(runDir, `${name}.out`), state: join(runDir, `${name}.json`) }
}

/** Start time (field 22 of /proc/<pid>/stat), or undefined when the process is gone or a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // comm (field 2) may contain blanks and parentheses: the fields after it follow the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const state = rest[0]
  if (state === 'Z' || state === 'X' || state === 'x') return undefined
  return rest[19]
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  } catch {
    return []
  }
}

function hasFilePrefix(argv: string[], name: string): boolean {
  const at = argv.indexOf('--file-prefix')
  return at >= 0 && argv[at + 1] === name
}

/** Running processes whose DPDK file prefix marks them as forwarders of `runDir`: pid -> name. */
export function findForwarderProcesses(runDir: string): Map<number, string> {
  const prefix = `nsmfwd-${runDirTag(runDir)}-`
  const found = new Map<number, string>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const argv = cmdline(Number(entry))
    const at = argv.indexOf('--file-prefix')
    const name = at >= 0 ? argv[at + 1] : undefined
    if (name?.startsWith(prefix) === true && processStartTime(Number(entry)) !== undefined) found.set(Number(entry), name)
  }
  return found
}

export function readForwarderStates(runDir: string): { states: ForwarderState[]; damaged: string[] } {
  const states: ForwarderState[] = []
  const damaged: string[] = []
  let entries: string[]
  try {
    entries = readdirSync(runDir)
  } catch {
    return { states, damaged }
  }
  for (const f of entries) {
    if (!/^nsmfwd-[0-9a-f]+-[0-9a-f]+\.json$/.test(f)) continue
    try {
      const s = JSON.parse(readFileSync(join(runDir, f), 'utf8')) as ForwarderState
      if (s.version !== STATE_VERSION || typeof s.pid !== 'number' || !Array.isArray(s.pairs) || `${s.name}.json` !== f) throw new Error('unexpected content')
      states.push(s)
    } catch {
      damaged.push(join(runDir, f))
    }
  }
  return { states, damaged }
}

export interface SpawnOptions {
  runDir: string
  testpmd: string
  cpu: number
  /** A new one is made when absent. */
  name?: string
}

/** The last CPU in /sys/devices/system/cpu/online. */
export function lastOnlineCpu(): number {
  try {
    const online = readFileSync('/sys/devices/system/cpu/online', 'utf8').trim()
    const nums = online.split(/[,-]/).map(Number).filter((n) => Number.isInteger(n))
    return nums.length === 0 ? 0 : Math.max(...nums)
  } catch {
    return 0
  }
}

export function testpmdArgs(name: string, cpu: number): string[] {
  return [
    '--no-huge', '-m', String(FORWARDER_MEMORY_MB), '--no-pci', '--no-shconf', '--file-prefix', name, '--lcores', `(0,1)@${cpu}`,
    '--', '-i', '--forward-mode=io', '--port-topology=paired', `--total-num-mbufs=${FORWARDER_MBUFS}`, '--no-mlockall', '--no-flush-rx', '--disable-link-check',
  ]
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

/** Removes a process's FIFO, output and state files and its (empty) DPDK runtime directory. */
export function removeForwarderFiles(runDir: string, name: string): void {
  const f = forwarderFiles(runDir, name)
  for (const p of [f.fifo, f.out, f.state]) rmSync(p, { force: true })
  try {
    rmSync(`/var/run/dpdk/${name}`, { recursive: true, force: true })
  } catch {
    // not ours to worry about
  }
}
