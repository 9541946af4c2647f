// The userspace forwarders of the MEMIF mechanism: each connection is a pair of DPDK ports cross-connected
// by a dpdk-testpmd in io mode (frames forwarded untouched, a transparent L2 cross-connect): a net_memif
// server port whose socket file is the pod's memif socket, and a net_af_packet port on a kernel interface
// in the agent's netns (a veth end the mechanism creates, its peer in the endpoint's netns). This module
// starts, adopts, supervises and reconfigures those processes; creating the veth, the socket directory and
// choosing paths is the mechanism's (./index.ts). The testpmd process and its prompt: ./testpmd.ts.
//
// Why one process for many connections (measured with Debian 12's DPDK 22.11 on a 2-CPU VM): testpmd busy-polls one CPU at 100% while forwarding, whatever the traffic,
// and has no sleep or rx-interrupt mode; one process per connection would cost a CPU per pod. One
// testpmd takes up to 32 ports (16 pairs) attached and detached at run time, so this is a pool: a pair
// goes into the first process with a free slot, a new process starts when all are full, a process left
// without pairs quits. The price: every add or remove pauses all pairs of that process for a moment
// (forwarding is stopped while the port list changes; `--no-flush-rx` keeps queued frames), and a crash
// of the memif PMD (22.11's sometimes segfaults when a peer disconnects under load: 2 in 51 client kills) takes every pair
// of the process down until the restart below.
//
// Idle CPU: forwarding runs only while at least one memif link is UP (a pod client is connected). memif
// raises no link events in testpmd, so each process's link states are polled over its prompt (`show port
// summary all`, every `pollMs`, 250 ms by default) and forwarding is started and stopped to match. With no
// client connected a forwarder uses next to no CPU; with one connected, one CPU.
//
// Memory: no hugepages (`--no-huge -m 32`, 2048 mbufs, `--no-mlockall`); 16 pairs attach at run time with
// -m 24 and fail at -m 20 (testpmd.ts has the numbers).
//
// Surviving the agent: processes are detached and do not depend on the agent's descriptors (testpmd.ts), so an
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
// they reopen the port (`port stop 0` / `port start 0` in testpmd; VPP's memif reconnects alone). A pod
// client's socket file is made 0666; the socket's directory (the mechanism's) must let the client in.
//
// Events: 'restarted' (ids: string[], reason: string), 'connected' (id), 'disconnected' (id).
import { EventEmitter } from 'node:events'
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { AgentError } from '../../errors.js'
import {
  checkIfaceName,
  checkSocketPath,
  findForwarderProcesses,
  lastOnlineCpu,
  MAX_PAIRS_PER_PROCESS,
  parseAttachedPort,
  parsePortStats,
  parsePortSummary,
  processStartTime,
  readForwarderStates,
  removeForwarderFiles,
  TestpmdProcess,
  type PairRecord,
  type PortCounters,
} from './testpmd.js'

export type { PortCounters } from './testpmd.js'

export interface MemifPort {
  /** The connection id. */
  id: string
  /** Absolute path of the memif socket file (served: a pod's DPDK or VPP client connects to it). */
  socket: string
  /** The kernel interface in the agent's netns the af_packet port sits on. */
  iface: string
}

export interface PortState {
  /** Attached, its socket file exists. */
  served: boolean
  /** The memif link is up: a client is connected. */
  connected: boolean
  pid: number
}

export interface ForwarderLog {
  info(msg: string, f?: object): void
  warn(msg: string, f?: object): void
  error(msg: string, f?: object): void
}

export interface ForwarderOptions {
  /** FIFOs, output and state files (the agent passes <state dir>/memif-fwd). */
  runDir: string
  /** Default 'dpdk-testpmd'. */
  testpmd?: string
  /** The CPU of both lcores; default the last online CPU. */
  cpu?: number
  /** Default 16 (testpmd's limit of 32 ports). */
  pairsPerProcess?: number
  /** Link-state poll period, default 250 ms. */
  pollMs?: number
  /** A process's output file is truncated between commands once it passes this size (default 1 MiB). */
  outputLimitBytes?: number
  log?: ForwarderLog
}

export interface ForwarderStats {
  memif: PortCounters
  kernel: PortCounters
}

export interface ProcessInfo {
  pid: number
  ports: number
  forwarding: boolean
}

const NOT_ATTACHED = -1
const RESTART_CAP_MS = 1000
/** A forwarder silent for UNANSWERED_POLLS link polls in a row, POLL_TIMEOUT_MS each, is killed (and restarted). */
const POLL_TIMEOUT_MS = 5000
const UNANSWERED_POLLS = 3
/** A process that ran this long before exiting starts its backoff anew. */
const STABLE_MS = 10_000

/** One forwarder: a set of pairs and the process serving them (replaced by a new one after a crash). */
class Forwarder {
  proc: TestpmdProcess | undefined
  readonly pairs = new Map<string, PairRecord>()
  readonly connected = new Set<string>()
  /** undefined: not known (adopted), the next poll sends what the links ask for. */
  forwarding: boolean | undefined = false
  /** A membership change is running: polls leave forwarding alone. */
  changing = 0
  retiring = false
  restartTimer: NodeJS.Timeout | undefined
  streak = 0
  spawnedAt = Date.now()
  /** Files of processes that died, removed once a successor's state file is written. */
  readonly staleNames: string[] = []
  /** Consecutive link polls the process did not answer. */
  unanswered = 0
  polling = false

  usable(): boolean {
    return !this.retiring && this.proc !== undefined && !this.proc.hasExited
  }

  served(p: PairRecord): boolean {
    return this.proc !== undefined && !this.proc.hasExited && p.memifPort !== NOT_ATTACHED
  }

  freeSlot(): number {
    const used = new Set([...this.pairs.values()].map((p) => p.slot))
    let s = 0
    while (used.has(s)) s += 1
    return s
  }

  portlist(): number[] {
    return [...this.pairs.values()]
      .filter((p) => p.memifPort !== NOT_ATTACHED)
      .sort((a, b) => a.slot - b.slot)
      .flatMap((p) => [p.memifPort, p.kernelPort])
  }
}

const silent: ForwarderLog = { info: () => undefined, warn: () => undefined, error: () => undefined }

export class MemifForwarders extends EventEmitter {
  private readonly runDir: string
  private readonly testpmd: string
  private readonly cpu: number
  private readonly perProcess: number
  private readonly pollMs: number
  private readonly outputLimit: number | undefined
  private readonly log: ForwarderLog
  private readonly forwarders = new Set<Forwarder>()
  private tail: Promise<unknown> = Promise.resolve()
  private pollTimer: NodeJS.Timeout | undefined
  private stopped = false

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
        const fwd = new Forwarder()
        for (const p of state.pairs) fwd.pairs.set(p.id, { ...p })
        this.forwarders.add(fwd)
        const proc = await TestpmdProcess.adopt(this.runDir, state)
        if (proc !== undefined) {
          running.delete(proc.pid)
          this.adopt(fwd, proc)
          await this.resync(fwd)
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
   * Serves `p`: its socket is bound (stale file unlinked first), 0666, and cross-connected to `p.iface` when
   * this resolves. Idempotent for the same id, socket and iface; a different socket or iface for a known id,
   * or a socket or iface another connection has, is refused.
   */
  async attach(p: MemifPort): Promise<void> {
    checkPort(p)
    const ready = await this.serial(async () => {
      this.checkRunning()
      const found = this.find(p.id)
      if (found !== undefined) {
        const [fwd, rec] = found
        if (rec.socket !== p.socket || rec.iface !== p.iface) {
          throw new AgentError('ALREADY_EXISTS', `memif connection ${p.id} is served on socket ${rec.socket} and iface ${rec.iface}, not ${p.socket} and ${p.iface}: detach it first`)
        }
        if (fwd.served(rec)) return true
        if (fwd.proc !== undefined && !fwd.proc.hasExited) {
          await this.attachPair(fwd, rec, true)
          return true
        }
        return false // its process is being restarted
      }
      for (const [, rec] of this.allPairs()) {
        if (rec.socket === p.socket) throw new AgentError('ALREADY_EXISTS', `memif socket ${p.socket} is served for connection ${rec.id}`)
        if (rec.iface === p.iface) throw new AgentError('ALREADY_EXISTS', `interface ${p.iface} is cross-connected for connection ${rec.id}`)
      }
      // Into the first process with a free slot whose af_packet fanout group would not clash (see fanoutClash);
      // a fanout clash with a socket this agent does not know of is retried once in a new process.
      const rec: PairRecord = { id: p.id, socket: p.socket, iface: p.iface, slot: 0, memifPort: NOT_ATTACHED, kernelPort: NOT_ATTACHED }
      for (let attempt = 0; ; attempt++) {
        let fwd = attempt > 0 ? undefined : [...this.forwarders].find((f) => f.usable() && f.pairs.size < this.perProcess && !this.fanoutClash(f, [p.iface]))
        const fresh = fwd === undefined
        if (fwd === undefined) fwd = await this.newForwarder([p.iface])
        rec.slot = fwd.freeSlot()
        fwd.pairs.set(p.id, rec)
        try {
          await this.attachPair(fwd, rec, true)
          return true
        } catch (err) {
          fwd.pairs.delete(p.id)
          if (fresh || fwd.pairs.size === 0) await this.retire(fwd)
          else await this.persist(fwd)
          if (attempt > 0 || !/PACKET_FANOUT/.test((err as Error).message)) throw err
          this.log.warn('memif pair: af_packet fanout clash, trying a new process', { id: p.id, iface: p.iface })
        }
      }
    })
    if (!ready) await this.waitServed(p.id, 15_000)
  }

  /**
   * The pair's kernel interface was made anew under the same name (its endpoint changed: a heal): its
   * af_packet port is attached again and the memif port is left alone, so the pod's client stays connected.
   * Resolves false when that cannot be done in place (no such pair, its process is being restarted, or the
   * new ifindex would clash with another process's af_packet fanout group): the caller detaches and attaches
   * the whole pair instead.
   */
  async rejoinKernel(id: string): Promise<boolean> {
    return this.serial(async () => {
      const found = this.find(id)
      if (found === undefined) return false
      const [fwd, rec] = found
      const proc = fwd.proc
      if (proc === undefined || proc.hasExited || rec.memifPort === NOT_ATTACHED || this.fanoutClash(fwd, [rec.iface])) return false
      const t0 = Date.now()
      fwd.changing += 1
      try {
        await proc.console.run('stop')
        fwd.forwarding = false
        if (rec.kernelPort !== NOT_ATTACHED) {
          await proc.console.run(`port stop ${rec.kernelPort}`)
          await proc.console.run(`port detach ${rec.kernelPort}`)
          rec.kernelPort = NOT_ATTACHED
        }
        const reply = await proc.console.run(`port attach net_af_packet${rec.slot},iface=${rec.iface}`)
        const kernelPort = parseAttachedPort(reply)
        if (kernelPort === undefined) throw failure(rec, `testpmd did not attach the af_packet port on ${rec.iface} again: ${oneLine(reply)}`)
        rec.kernelPort = kernelPort
        const started = await proc.console.run(`port start ${kernelPort}`)
        if (/fail|error|invalid/i.test(started)) throw failure(rec, `testpmd did not start port ${kernelPort}: ${oneLine(started)}`)
        await this.reconfigure(fwd)
        await this.persist(fwd)
        this.log.info('memif pair: its kernel port attached again (the memif stays connected)', { id, iface: rec.iface, pid: proc.pid, port: kernelPort, ms: Date.now() - t0 })
        return true
      } catch (err) {
        // The pair is whole or nothing: whatever is left of it goes, and the caller attaches it anew.
        await this.detachPair(fwd, rec).catch(() => undefined)
        this.log.warn('memif pair: attaching its kernel port again failed; the pair is made anew', { id, err })
        return false
      } finally {
        fwd.changing -= 1
      }
    })
  }

  /** Stops serving `id` (its socket file is removed); a process left without pairs quits. Idempotent. */
  async detach(id: string): Promise<void> {
    await this.serial(async () => {
      const found = this.find(id)
      if (found === undefined) return
      await this.detachPair(found[0], found[1])
    })
  }

  state(id: string): PortState | undefined {
    const found = this.find(id)
    if (found === undefined) return undefined
    const [fwd, rec] = found
    return { served: fwd.served(rec), connected: fwd.connected.has(id), pid: fwd.proc?.pid ?? 0 }
  }

  /** Counters of both ports (memif server counters read 0 while no client is connected). */
  async stats(id: string): Promise<ForwarderStats | undefined> {
    const found = this.find(id)
    if (found === undefined) return undefined
    const [fwd, rec] = found
    const proc = fwd.proc
    if (proc === undefined || !fwd.served(rec)) return undefined
    const memif = parsePortStats(await proc.console.run(`show port stats ${rec.memifPort}`))
    const kernel = parsePortStats(await proc.console.run(`show port stats ${rec.kernelPort}`))
    if (memif === undefined || kernel === undefined) return undefined
    return { memif, kernel }
  }

  ports(): MemifPort[] {
    return [...this.allPairs()].map(([, r]) => ({ id: r.id, socket: r.socket, iface: r.iface }))
  }

  /**
   * Makes the served pairs exactly `wanted` (the agent's journal after a restart): detaches the others
   * (and pairs whose socket or iface differ), attaches the missing and the unserved. Goes on past a
   * failing pair; those are in `failed`.
   */
  async reconcile(wanted: readonly MemifPort[]): Promise<{ attached: string[]; detached: string[]; failed: Array<{ id: string; error: Error }> }> {
    for (const p of wanted) checkPort(p)
    const want = new Map(wanted.map((p) => [p.id, p]))
    const detached: string[] = []
    const attached: string[] = []
    const failed: Array<{ id: string; error: Error }> = []
    for (const [fwd, rec] of [...this.allPairs()]) {
      const w = want.get(rec.id)
      if (w !== undefined && w.socket === rec.socket && w.iface === rec.iface && fwd.served(rec)) continue
      try {
        await this.serial(async () => {
          if (this.find(rec.id)?.[1] === rec) await this.detachPair(fwd, rec)
        })
        if (w === undefined) detached.push(rec.id)
      } catch (err) {
        failed.push({ id: rec.id, error: err as Error })
      }
    }
    for (const p of wanted) {
      if (this.find(p.id) !== undefined) continue
      try {
        await this.attach(p)
        attached.push(p.id)
      } catch (err) {
        failed.push({ id: p.id, error: err as Error })
      }
    }
    if (failed.length > 0) this.log.error('memif reconcile: pairs failed', { failed: failed.map((f) => ({ id: f.id, error: f.error.message })) })
    return { attached, detached, failed }
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

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn)
    this.tail = next.catch(() => undefined)
    return next
  }

  private checkRunning(): void {
    if (this.stopped) throw new AgentError('UNAVAILABLE', 'the memif forwarders are stopped')
  }

  private find(id: string): [Forwarder, PairRecord] | undefined {
    for (const f of this.forwarders) {
      const r = f.pairs.get(id)
      if (r !== undefined) return [f, r]
    }
    return undefined
  }

  private *allPairs(): Generator<[Forwarder, PairRecord]> {
    for (const f of this.forwarders) for (const r of f.pairs.values()) yield [f, r]
  }

  private async waitServed(id: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms
    for (;;) {
      const found = this.find(id)
      if (found === undefined) throw new AgentError('NOT_FOUND', `memif connection ${id} was detached while its forwarder restarted`)
      if (found[0].served(found[1])) return
      if (Date.now() > deadline) throw new AgentError('UNAVAILABLE', `memif connection ${id}: its forwarder is restarting and did not serve it within ${ms} ms`)
      await sleep(50)
    }
  }

  /** A new forwarder in the pool, its process's fanout groups for `ifaces` clear of the others'. */
  private async newForwarder(ifaces: string[]): Promise<Forwarder> {
    const fwd = new Forwarder()
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
      if (tries >= 5 || !this.fanoutClash(fwd, ifaces)) return
      const proc = fwd.proc as TestpmdProcess
      fwd.proc = undefined
      this.log.info('memif forwarder: its pid gives an af_packet fanout group in use, starting another', { pid: proc.pid })
      await proc.quit()
      removeForwarderFiles(this.runDir, proc.name)
    }
  }

  /**
   * DPDK 22.11's af_packet port joins the fanout group (pid ^ ifindex) & 0xffff, and fanout groups are per
   * netns: when that id is another process's group on another interface, the attach fails with EINVAL
   * ("could not set PACKET_FANOUT"). Neighbouring pids and ifindexes make that likely, so a pair goes only
   * where its id is free. True when an af_packet port of `ifaces` in fwd's process would clash.
   */
  private fanoutClash(fwd: Forwarder, ifaces: string[]): boolean {
    const pid = fwd.proc?.pid
    if (pid === undefined) return false
    const mine = new Set<number>()
    for (const i of ifaces) {
      const ix = ifindexOf(i)
      if (ix !== undefined) mine.add((pid ^ ix) & 0xffff)
    }
    for (const f of this.forwarders) {
      if (f === fwd || f.proc === undefined || f.proc.hasExited) continue
      for (const r of f.pairs.values()) {
        const ix = r.kernelPort === NOT_ATTACHED ? undefined : ifindexOf(r.iface)
        if (ix !== undefined && mine.has((f.proc.pid ^ ix) & 0xffff)) return true
      }
    }
    return false
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

  /** Attaches both ports of `rec` into fwd's process, starts them and (reconfigure) adds them to the port list. */
  private async attachPair(fwd: Forwarder, rec: PairRecord, reconfigure: boolean): Promise<void> {
    const proc = fwd.proc
    if (proc === undefined) throw new AgentError('UNAVAILABLE', `memif connection ${rec.id}: no forwarder process`)
    const t0 = Date.now()
    fwd.changing += 1
    try {
      prepareSocket(rec.socket)
      const memifArg = `net_memif${rec.slot},role=server,socket=${rec.socket},socket-abstract=no`
      const memifReply = await proc.console.run(`port attach ${memifArg}`)
      const memifPort = parseAttachedPort(memifReply)
      if (memifPort === undefined) throw failure(rec, `testpmd did not attach the memif port: ${oneLine(memifReply)}`)
      rec.memifPort = memifPort
      const kernelReply = await proc.console.run(`port attach net_af_packet${rec.slot},iface=${rec.iface}`)
      const kernelPort = parseAttachedPort(kernelReply)
      if (kernelPort === undefined) throw failure(rec, `testpmd did not attach the af_packet port on ${rec.iface}: ${oneLine(kernelReply)}`)
      rec.kernelPort = kernelPort
      for (const port of [memifPort, kernelPort]) {
        const reply = await proc.console.run(`port start ${port}`)
        if (/fail|error|invalid/i.test(reply)) throw failure(rec, `testpmd did not start port ${port}: ${oneLine(reply)}`)
      }
      // testpmd drops a vdev that failed to bind (a stale socket: EADDRINUSE) and goes on: the file must be there.
      if (!isSocket(rec.socket)) throw failure(rec, `the memif socket ${rec.socket} did not appear`)
      chmodSync(rec.socket, 0o666)
      if (reconfigure) await this.reconfigure(fwd)
      await this.persist(fwd)
      this.log.info('memif pair attached', { id: rec.id, socket: rec.socket, iface: rec.iface, pid: proc.pid, ports: [memifPort, kernelPort], ms: Date.now() - t0 })
    } catch (err) {
      await this.dropPorts(fwd, rec).catch(() => undefined)
      throw err
    } finally {
      fwd.changing -= 1
    }
  }

  /** Detaches whatever ports of `rec` are attached and removes its socket file. */
  private async dropPorts(fwd: Forwarder, rec: PairRecord): Promise<void> {
    const proc = fwd.proc
    const ports = [rec.memifPort, rec.kernelPort].filter((p) => p !== NOT_ATTACHED)
    rec.memifPort = NOT_ATTACHED
    rec.kernelPort = NOT_ATTACHED
    if (proc !== undefined && !proc.hasExited) {
      for (const port of ports) await proc.console.run(`port stop ${port}`)
      for (const port of ports) await proc.console.run(`port detach ${port}`)
    }
    unlinkSocket(rec.socket)
  }

  private async detachPair(fwd: Forwarder, rec: PairRecord): Promise<void> {
    fwd.pairs.delete(rec.id)
    if (fwd.connected.delete(rec.id)) this.emit('disconnected', rec.id)
    if (fwd.pairs.size === 0) {
      await this.retire(fwd)
      unlinkSocket(rec.socket)
      this.log.info('memif pair detached, its forwarder ended', { id: rec.id })
      return
    }
    const t0 = Date.now()
    fwd.changing += 1
    try {
      if (fwd.proc !== undefined && !fwd.proc.hasExited) {
        // Out of the port list first (the other pairs forward again at once), then stopped and detached.
        await this.reconfigure(fwd)
        await this.dropPorts(fwd, rec)
      } else {
        unlinkSocket(rec.socket)
      }
      await this.persist(fwd)
    } finally {
      fwd.changing -= 1
    }
    this.log.info('memif pair detached', { id: rec.id, pid: fwd.proc?.pid, ms: Date.now() - t0 })
  }

  /** Sets the port list to fwd's attached pairs; forwarding is stopped meanwhile (the pause of every pair). */
  private async reconfigure(fwd: Forwarder): Promise<void> {
    const proc = fwd.proc
    if (proc === undefined) return
    const list = fwd.portlist()
    const t0 = process.hrtime.bigint()
    await proc.console.run('stop')
    fwd.forwarding = false
    if (list.length > 0) {
      const reply = await proc.console.run(`set portlist ${list.join(',')}`)
      if (/invalid|error|please/i.test(reply)) throw new AgentError('INTERNAL', `testpmd refused the port list ${list.join(',')}: ${oneLine(reply)}`)
      if (fwd.connected.size > 0) {
        await proc.console.run('start')
        fwd.forwarding = true
      }
    }
    this.log.info('memif forwarder reconfigured', { pid: proc.pid, ports: list.length, pauseMs: Number(process.hrtime.bigint() - t0) / 1e6 })
  }

  /** After adoption: the recorded pairs against the process's ports; missing ones attached again, unknown ones detached. */
  private async resync(fwd: Forwarder): Promise<void> {
    const proc = fwd.proc
    if (proc === undefined) return
    const summary = parsePortSummary(await proc.console.run('show port summary all'))
    const byPort = new Map(summary.map((s) => [s.port, s]))
    const known = new Set<number>()
    const missing: PairRecord[] = []
    for (const rec of fwd.pairs.values()) {
      const m = byPort.get(rec.memifPort)
      const k = byPort.get(rec.kernelPort)
      if (m?.name === `net_memif${rec.slot}` && k?.name === `net_af_packet${rec.slot}` && isSocket(rec.socket)) {
        known.add(rec.memifPort)
        known.add(rec.kernelPort)
        if (m.up) fwd.connected.add(rec.id)
      } else {
        missing.push(rec)
      }
    }
    const strays = summary.filter((s) => !known.has(s.port)).map((s) => s.port)
    if (strays.length === 0 && missing.length === 0) return
    this.log.warn('memif forwarder adopted with ports out of step', { pid: proc.pid, strays, missing: missing.map((r) => r.id) })
    fwd.changing += 1
    try {
      await proc.console.run('stop')
      fwd.forwarding = false
      for (const port of strays) await proc.console.run(`port stop ${port}`)
      for (const port of strays) await proc.console.run(`port detach ${port}`)
      for (const rec of missing) {
        rec.memifPort = NOT_ATTACHED
        rec.kernelPort = NOT_ATTACHED
        try {
          await this.attachPair(fwd, rec, false)
        } catch (err) {
          this.log.error('memif pair not served again after adoption', { id: rec.id, error: (err as Error).message })
        }
      }
      await this.reconfigure(fwd)
      await this.persist(fwd)
    } finally {
      fwd.changing -= 1
    }
  }

  private async persist(fwd: Forwarder): Promise<void> {
    const proc = fwd.proc
    if (proc === undefined || proc.hasExited) return
    await proc.writeState([...fwd.pairs.values()])
  }

  /** Ends fwd's process and removes its files and sockets; fwd leaves the pool. */
  private async retire(fwd: Forwarder): Promise<void> {
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
          await this.attachPair(fwd, rec, false)
          served.push(rec.id)
        } catch (err) {
          this.log.error('memif pair not served after the restart', { id: rec.id, error: (err as Error).message })
        }
      }
      // Died again meanwhile: its exit has scheduled the next attempt.
      if (fwd.proc !== proc) return
      await this.reconfigure(fwd)
      await this.persist(fwd)
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

function checkPort(p: MemifPort): void {
  if (typeof p.id !== 'string' || p.id === '') throw AgentError.invalid('memif connection id', 'is empty')
  checkSocketPath(p.socket)
  checkIfaceName(p.iface)
}

/** Before binding: a stale socket file (a crashed forwarder's) is removed; anything else there is refused. */
function prepareSocket(path: string): void {
  try {
    const st = lstatSync(path)
    if (!st.isSocket()) throw new AgentError('FAILED_PRECONDITION', `memif socket path ${path} exists and is not a socket`)
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  try {
    if (!statSync(dirname(path)).isDirectory()) throw new Error('not a directory')
  } catch {
    throw new AgentError('FAILED_PRECONDITION', `memif socket directory ${dirname(path)} does not exist`)
  }
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket()
  } catch {
    return false
  }
}

function unlinkSocket(path: string): void {
  if (isSocket(path)) rmSync(path, { force: true })
}

function ifindexOf(iface: string): number | undefined {
  try {
    const n = Number(readFileSync(`/sys/class/net/${iface}/ifindex`, 'utf8').trim())
    return Number.isInteger(n) ? n : undefined
  } catch {
    return undefined
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

function failure(rec: PairRecord, msg: string): AgentError {
  return new AgentError('INTERNAL', `memif connection ${rec.id}: ${msg}`)
}

function oneLine(text: string): string {
  return JSON.stringify(text.trim().split('\n').slice(-4).join(' | '))
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

// Exported for tests that look into the run directory.
export function stateFilesIn(runDir: string): string[] {
  return safeReaddir(runDir).filter((f) => f.endsWith('.json')).map((f) => join(runDir, f))
}
