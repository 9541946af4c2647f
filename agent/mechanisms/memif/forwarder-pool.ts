// The processes behind the MEMIF forwarders: a pool of dpdk-testpmd processes, each serving a set of pairs
// (./forwarder-pairs.ts), started with af_packet fanout groups clear of the others' (./forwarder-fanout.ts),
// adopted after an agent restart, restarted when they die, their links polled, ended when left without
// pairs. ./forwarder.ts (MemifForwarders) extends this class with the connections: which pair goes where.
// It extends rather than holds it because both work on the same forwarders, under the same serial queue
// (every change to the pool, restarts too, runs in `serial`), and emit the same events.
//
// Idle CPU: forwarding runs only while at least one memif link is UP (a pod client is connected). memif
// raises no link events in testpmd, so each process's link states are polled over its prompt (`show port
// summary all`, every `pollMs`, 250 ms by default) and forwarding is started and stopped to match. With no
// client connected a forwarder uses next to no CPU; with one connected, one CPU.
//
// Surviving the agent: processes are detached and do not depend on the agent's descriptors (./testpmd.ts), so an
// agent restart (SIGKILL, upgrade) leaves every datapath forwarding. Not a restart that kills the agent's
// whole process group or cgroup: a container restart (its PID namespace ends) or systemd's default
// KillMode=control-group ends the forwarders too; the next agent then starts them again from the state
// files, and the pods' DPDK clients must reopen their port, as after a crash. Each process has a state file in
// `runDir` (pid, start time, file prefix, CPU, its pairs); `start()` adopts the processes those files name
// (verified: pid, start time, cmdline) and re-reads their ports, restarts the ones that are gone with
// their recorded pairs, and kills forwarders of this run directory that have no state file. `reconcile`
// then makes the pairs the agent's journal holds exactly the ones served.
//
// Supervision: a process that exits unexpectedly is started again with all its pairs (stale socket files
// unlinked first: a crashed server leaves them and a new one cannot bind), after a backoff when it keeps
// crashing (0, 100, 200, 400, 800, 1000 ms), and `restarted` is emitted with the connection ids. DPDK
// clients in pods do not reconnect by themselves: after a restart their link stays down until
// they reopen the port (`port stop 0` / `port start 0` in testpmd; VPP's memif reconnects alone).
import { EventEmitter } from 'node:events'
import { mkdirSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fanoutClash } from './forwarder-fanout.js'
import { findForwarderProcesses, processStartTime, readForwarderStates, removeForwarderFiles } from './forwarder-identity.js'
import { Forwarder, NOT_ATTACHED, unlinkSocket } from './forwarder-pairs.js'
import type { ForwarderLog, ForwarderOptions, ProcessInfo } from './forwarder-types.js'
import { TestpmdProcess } from './testpmd.js'
import { lastOnlineCpu, MAX_PAIRS_PER_PROCESS } from './testpmd-args.js'
import { parsePortSummary } from './testpmd-replies.js'

const RESTART_CAP_MS = 1000
/** A forwarder silent for UNANSWERED_POLLS link polls in a row, POLL_TIMEOUT_MS each, is killed (and restarted). */
const POLL_TIMEOUT_MS = 5000
const UNANSWERED_POLLS = 3
/** A process that ran this long before exiting starts its backoff anew. */
const STABLE_MS = 10_000

const silent: ForwarderLog = { info: () => undefined, warn: () => undefined, error: () => undefined }

export class ForwarderPool extends EventEmitter {
  private readonly runDir: string
  private readonly testpmd: string
  private readonly cpu: number
  protected readonly perProcess: number
  private readonly pollMs: number
  private readonly outputLimit: number | undefined
  protected readonly log: ForwarderLog
  protected readonly forwarders = new Set<Forwarder>()
  private tail: Promise<unknown> = Promise.resolve()
  private pollTimer: NodeJS.Timeout | undefined
  protected stopped = false

  constructor(opts: ForwarderOptions) {
    super()
    this.runDir = opts.runDir
    this.testpmd = opts.testpmd ?? 'dpdk-testpmd'
    this.cpu = opts.cpu ?? lastOnlineCpu()
    this.perProcess = Math.max(1, Math.min(opts.pairsPerProcess ?? MAX_PAIRS_PER_PROCESS, MAX_PAIRS_PER_PROCESS))
    this.pollMs = opts.pollMs ?? 250
    this.outputLimit = opts.outputLimitBytes
    this.log = opts.log ?? silent
  }

  /** Adopts the forwarders a former agent left running (restarting the dead ones), then starts polling. */
  async start(): Promise<void> {
    await this.serial(async () => {
      mkdirSync(this.runDir, { recursive: true, mode: 0o700 })
      const { states, damaged } = readForwarderStates(this.runDir)
      for (const path of damaged) {
        this.log.error('memif forwarder: unreadable state file removed', { path })
        rmSync(path, { force: true })
      }
      const running = findForwarderProcesses(this.runDir)
      for (const state of states) {
        const fwd = new Forwarder(this.log)
        for (const p of state.pairs) fwd.pairs.set(p.id, { ...p })
        this.forwarders.add(fwd)
        const proc = await TestpmdProcess.adopt(this.runDir, state)
        if (proc !== undefined) {
          running.delete(proc.pid)
          this.adopt(fwd, proc)
          await fwd.resync()
          this.log.info('memif forwarder adopted', { pid: proc.pid, name: proc.name, pairs: [...fwd.pairs.keys()] })
          continue
        }
        // Gone, or there but not answering its prompt: end it, start anew with its pairs.
        if (running.get(state.pid) === state.name && processStartTime(state.pid) === state.startTime) {
          killPid(state.pid)
          running.delete(state.pid)
        }
        removeForwarderFiles(this.runDir, state.name)
        for (const p of fwd.pairs.values()) Object.assign(p, { memifPort: NOT_ATTACHED, kernelPort: NOT_ATTACHED })
        if (fwd.pairs.size === 0) {
          this.forwarders.delete(fwd)
          continue
        }
        const reason = 'the forwarder was not running when the agent started'
        this.log.warn('memif forwarder restarted', { pairs: [...fwd.pairs.keys()], reason })
        await this.respawn(fwd, reason)
      }
      // Forwarders of this run directory without a state file (killed before the first write) serve nothing known.
      for (const [pid, name] of running) {
        this.log.warn('memif forwarder without a state file ended', { pid, name })
        killPid(pid)
        removeForwarderFiles(this.runDir, name)
      }
      this.removeOrphanFiles()
    })
    this.pollTimer = setInterval(() => this.pollAll(), this.pollMs)
    this.pollTimer.unref()
  }

  /**
   * Agent shutdown. keepRunning (default true): the processes go on serving (a next agent adopts them);
   * false: they are ended and their sockets and files removed.
   */
  async stop(opts: { keepRunning?: boolean } = {}): Promise<void> {
    const keep = opts.keepRunning ?? true
    this.stopped = true
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer)
    await this.serial(async () => {
      for (const fwd of [...this.forwarders]) {
        if (fwd.restartTimer !== undefined) clearTimeout(fwd.restartTimer)
        if (keep) {
          fwd.proc?.forget()
          fwd.proc?.close()
        } else {
          await this.retire(fwd)
        }
      }
      this.forwarders.clear()
    })
  }

  processes(): ProcessInfo[] {
    const out: ProcessInfo[] = []
    for (const f of this.forwarders) {
      if (f.proc !== undefined && !f.proc.hasExited) out.push({ pid: f.proc.pid, ports: f.pairs.size, forwarding: f.forwarding === true })
    }
    return out
  }

  // -------------------------------------------------------------------------------------------------

  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn)
    this.tail = next.catch(() => undefined)
    return next
  }

  /** A new forwarder in the pool, its process's fanout groups for `ifaces` clear of the others'. */
  protected async newForwarder(ifaces: string[]): Promise<Forwarder> {
    const fwd = new Forwarder(this.log)
    this.forwarders.add(fwd)
    try {
      await this.spawnClear(fwd, ifaces)
    } catch (err) {
      this.forwarders.delete(fwd)
      throw err
    }
    return fwd
  }

  /** spawnInto, again (up to 5 times) while the new pid would put an af_packet port of `ifaces` into another process's fanout group. */
  private async spawnClear(fwd: Forwarder, ifaces: string[]): Promise<void> {
    for (let tries = 1; ; tries++) {
      await this.spawnInto(fwd)
      if (tries >= 5 || !fanoutClash(this.forwarders, fwd, ifaces)) return
      const proc = fwd.proc as TestpmdProcess
      fwd.proc = undefined
      this.log.info('memif forwarder: its pid gives an af_packet fanout group in use, starting another', { pid: proc.pid })
      await proc.quit()
      removeForwarderFiles(this.runDir, proc.name)
    }
  }

  /** A new process for `fwd` (none or a dead one before), its identity on disk before any port. */
  private async spawnInto(fwd: Forwarder): Promise<void> {
    const proc = await TestpmdProcess.spawn({ runDir: this.runDir, testpmd: this.testpmd, cpu: this.cpu })
    fwd.proc = proc
    fwd.forwarding = false
    fwd.spawnedAt = Date.now()
    proc.onceExit((reason) => this.onExit(fwd, proc, reason))
    try {
      await proc.writeState([])
    } catch (err) {
      fwd.proc = undefined
      await proc.quit()
      removeForwarderFiles(this.runDir, proc.name)
      throw err
    }
    this.log.info('memif forwarder started', { pid: proc.pid, name: proc.name, cpu: this.cpu })
  }

  private adopt(fwd: Forwarder, proc: TestpmdProcess): void {
    fwd.proc = proc
    fwd.forwarding = undefined
    fwd.spawnedAt = Date.now()
    proc.onceExit((reason) => this.onExit(fwd, proc, reason))
  }

  /** Ends fwd's process and removes its files and sockets; fwd leaves the pool. */
  protected async retire(fwd: Forwarder): Promise<void> {
    fwd.retiring = true
    this.forwarders.delete(fwd)
    if (fwd.restartTimer !== undefined) clearTimeout(fwd.restartTimer)
    const proc = fwd.proc
    if (proc !== undefined) {
      await proc.quit()
      removeForwarderFiles(this.runDir, proc.name)
      this.log.info('memif forwarder ended', { pid: proc.pid, name: proc.name })
    }
    this.removeStale(fwd)
    for (const rec of fwd.pairs.values()) unlinkSocket(rec.socket)
    for (const id of fwd.connected) this.emit('disconnected', id)
    fwd.connected.clear()
  }

  private onExit(fwd: Forwarder, proc: TestpmdProcess, reason: string): void {
    if (fwd.proc !== proc || fwd.retiring || this.stopped) return
    fwd.proc = undefined
    fwd.forwarding = false
    for (const id of fwd.connected) this.emit('disconnected', id)
    fwd.connected.clear()
    for (const rec of fwd.pairs.values()) Object.assign(rec, { memifPort: NOT_ATTACHED, kernelPort: NOT_ATTACHED })
    this.log.error('memif forwarder exited', { pid: proc.pid, name: proc.name, reason, pairs: [...fwd.pairs.keys()], output: proc.tailOutput() })
    proc.close()
    fwd.staleNames.push(proc.name)
    fwd.streak = Date.now() - fwd.spawnedAt > STABLE_MS ? 1 : fwd.streak + 1
    this.scheduleRestart(fwd, reason)
  }

  private scheduleRestart(fwd: Forwarder, reason: string): void {
    const delay = fwd.streak <= 1 ? 0 : Math.min(RESTART_CAP_MS, 100 * 2 ** (fwd.streak - 2))
    fwd.restartTimer = setTimeout(() => {
      fwd.restartTimer = undefined
      this.serial(async () => {
        if (this.stopped || fwd.retiring || fwd.proc !== undefined) return
        if (fwd.pairs.size === 0) {
          this.forwarders.delete(fwd)
          this.removeStale(fwd)
          return
        }
        await this.respawn(fwd, reason)
      }).catch((err: unknown) => {
        this.log.error('memif forwarder restart failed', { pairs: [...fwd.pairs.keys()], error: (err as Error).message })
        fwd.streak += 1
        if (!this.stopped && !fwd.retiring && fwd.proc === undefined) this.scheduleRestart(fwd, reason)
      })
    }, delay)
  }

  /** A new process for fwd's pairs (sockets unlinked first); emits `restarted`. */
  private async respawn(fwd: Forwarder, reason: string): Promise<void> {
    await this.spawnClear(fwd, [...fwd.pairs.values()].map((r) => r.iface))
    const proc = fwd.proc
    const served: string[] = []
    fwd.changing += 1
    try {
      for (const rec of [...fwd.pairs.values()].sort((a, b) => a.slot - b.slot)) {
        if (fwd.proc !== proc) break
        try {
          await fwd.attachPair(rec, false)
          served.push(rec.id)
        } catch (err) {
          this.log.error('memif pair not served after the restart', { id: rec.id, error: (err as Error).message })
        }
      }
      // Died again meanwhile: its exit has scheduled the next attempt.
      if (fwd.proc !== proc) return
      await fwd.reconfigure()
      await fwd.persist()
    } finally {
      fwd.changing -= 1
    }
    this.removeStale(fwd)
    this.log.warn('memif forwarder restarted: DPDK clients must reopen their port', { pid: proc?.pid, served, reason })
    this.emit('restarted', [...fwd.pairs.keys()], reason)
  }

  private removeStale(fwd: Forwarder): void {
    for (const name of fwd.staleNames.splice(0)) removeForwarderFiles(this.runDir, name)
  }

  private pollAll(): void {
    if (this.stopped) return
    for (const fwd of this.forwarders) {
      if (fwd.polling || fwd.proc === undefined) continue
      fwd.polling = true
      this.poll(fwd)
        .then(() => {
          fwd.unanswered = 0
        })
        .catch((err: unknown) => {
          const proc = fwd.proc
          if (proc === undefined || !proc.alive()) return // onExit restarts it
          // A process starved of CPU (every CPU busy polling) can be silent for seconds: only one that
          // stays silent is taken for wedged and replaced.
          fwd.unanswered += 1
          this.log.warn('memif forwarder did not answer a link poll', { pid: proc.pid, times: fwd.unanswered, error: (err as Error).message })
          if (fwd.unanswered < UNANSWERED_POLLS) return
          this.log.error('memif forwarder does not answer: killed', { pid: proc.pid })
          proc.kill()
        })
        .finally(() => {
          fwd.polling = false
        })
    }
  }

  /** Link states: connected/disconnected events; forwarding started while a link is up, stopped while none is. */
  private async poll(fwd: Forwarder): Promise<void> {
    const proc = fwd.proc
    if (proc === undefined || !proc.alive()) return
    const summary = parsePortSummary(await proc.console.run('show port summary all', POLL_TIMEOUT_MS))
    if (fwd.proc !== proc) return
    const up = new Set(summary.filter((s) => s.up).map((s) => s.port))
    for (const rec of fwd.pairs.values()) {
      const now = rec.memifPort !== NOT_ATTACHED && up.has(rec.memifPort)
      if (now && !fwd.connected.has(rec.id)) {
        fwd.connected.add(rec.id)
        this.emit('connected', rec.id)
      } else if (!now && fwd.connected.delete(rec.id)) {
        this.emit('disconnected', rec.id)
      }
    }
    if (fwd.changing === 0) {
      const want = fwd.connected.size > 0
      if (want !== fwd.forwarding) {
        await proc.console.run(want ? 'start' : 'stop')
        fwd.forwarding = want
        this.log.info(want ? 'memif forwarding started: a client is connected' : 'memif forwarding stopped: no client connected', { pid: proc.pid })
      }
    }
    await proc.trimOutput(this.outputLimit)
  }

  /** FIFOs and output files in runDir whose process has no state file (a crash between spawn and first write). */
  private removeOrphanFiles(): void {
    const names = new Set<string>()
    for (const f of safeReaddir(this.runDir)) {
      const m = /^(nsmfwd-[0-9a-f]+-[0-9a-f]+)\.(in|out)$/.exec(f)
      if (m !== null) names.add(m[1] as string)
    }
    const live = new Set([...this.forwarders].map((f) => f.proc?.name))
    for (const name of names) if (!live.has(name)) removeForwarderFiles(this.runDir, name)
  }
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // gone
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

// Exported for tests that look into the run directory.
export function stateFilesIn(runDir: string): string[] {
  return safeReaddir(runDir).filter((f) => f.endsWith('.json')).map((f) => join(runDir, f))
}
