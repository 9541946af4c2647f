// One forwarder of the MEMIF pool (./forwarder-pool.ts): the pairs it serves, the testpmd process serving
// them, and the work on their ports in that process: a pair's memif server port and af_packet port
// attached and started, the port list set (forwarding is stopped meanwhile: the pause every pair of the
// process sees), ports stopped and detached, an adopted process's ports checked against its record. The
// pool and ./forwarder.ts call these inside their serial queue.
//
// Socket files: a stale one (a crashed server's) is removed before binding, a served one is made 0666 (a
// pod client's socket; the socket's directory, the mechanism's, must let the client in), and it goes with
// its pair.
import { chmodSync, lstatSync, rmSync, statSync, unlinkSync } from 'node:fs'
import { dirname } from 'node:path'
import { AgentError } from '../../errors.js'
import type { PairRecord } from './forwarder-identity.js'
import type { ForwarderLog } from './forwarder-types.js'
import type { TestpmdProcess } from './testpmd.js'
import { parseAttachedPort, parsePortSummary } from './testpmd-replies.js'

export const NOT_ATTACHED = -1

/** One forwarder: a set of pairs and the process serving them (replaced by a new one after a crash). */
export class Forwarder {
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

  constructor(readonly log: ForwarderLog) {}

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

  /** Attaches both ports of `rec` into this forwarder's process, starts them and (reconfigure) adds them to the port list. */
  async attachPair(rec: PairRecord, reconfigure: boolean): Promise<void> {
    const proc = this.proc
    if (proc === undefined) throw new AgentError('UNAVAILABLE', `memif connection ${rec.id}: no forwarder process`)
    const t0 = Date.now()
    this.changing += 1
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
      if (reconfigure) await this.reconfigure()
      await this.persist()
      this.log.info('memif pair attached', { id: rec.id, socket: rec.socket, iface: rec.iface, pid: proc.pid, ports: [memifPort, kernelPort], ms: Date.now() - t0 })
    } catch (err) {
      await this.dropPorts(rec).catch(() => undefined)
      throw err
    } finally {
      this.changing -= 1
    }
  }

  /** Detaches whatever ports of `rec` are attached and removes its socket file. */
  async dropPorts(rec: PairRecord): Promise<void> {
    const proc = this.proc
    const ports = [rec.memifPort, rec.kernelPort].filter((p) => p !== NOT_ATTACHED)
    rec.memifPort = NOT_ATTACHED
    rec.kernelPort = NOT_ATTACHED
    if (proc !== undefined && !proc.hasExited) {
      for (const port of ports) await proc.console.run(`port stop ${port}`)
      for (const port of ports) await proc.console.run(`port detach ${port}`)
    }
    unlinkSocket(rec.socket)
  }

  /** Sets the port list to this forwarder's attached pairs; forwarding is stopped meanwhile (the pause of every pair). */
  async reconfigure(): Promise<void> {
    const proc = this.proc
    if (proc === undefined) return
    const list = this.portlist()
    const t0 = process.hrtime.bigint()
    await proc.console.run('stop')
    this.forwarding = false
    if (list.length > 0) {
      const reply = await proc.console.run(`set portlist ${list.join(',')}`)
      if (/invalid|error|please/i.test(reply)) throw new AgentError('INTERNAL', `testpmd refused the port list ${list.join(',')}: ${oneLine(reply)}`)
      if (this.connected.size > 0) {
        await proc.console.run('start')
        this.forwarding = true
      }
    }
    this.log.info('memif forwarder reconfigured', { pid: proc.pid, ports: list.length, pauseMs: Number(process.hrtime.bigint() - t0) / 1e6 })
  }

  /** After adoption: the recorded pairs against the process's ports; missing ones attached again, unknown ones detached. */
  async resync(): Promise<void> {
    const proc = this.proc
    if (proc === undefined) return
    const summary = parsePortSummary(await proc.console.run('show port summary all'))
    const byPort = new Map(summary.map((s) => [s.port, s]))
    const known = new Set<number>()
    const missing: PairRecord[] = []
    for (const rec of this.pairs.values()) {
      const m = byPort.get(rec.memifPort)
      const k = byPort.get(rec.kernelPort)
      if (m?.name === `net_memif${rec.slot}` && k?.name === `net_af_packet${rec.slot}` && isSocket(rec.socket)) {
        known.add(rec.memifPort)
        known.add(rec.kernelPort)
        if (m.up) this.connected.add(rec.id)
      } else {
        missing.push(rec)
      }
    }
    const strays = summary.filter((s) => !known.has(s.port)).map((s) => s.port)
    if (strays.length === 0 && missing.length === 0) return
    this.log.warn('memif forwarder adopted with ports out of step', { pid: proc.pid, strays, missing: missing.map((r) => r.id) })
    this.changing += 1
    try {
      await proc.console.run('stop')
      this.forwarding = false
      for (const port of strays) await proc.console.run(`port stop ${port}`)
      for (const port of strays) await proc.console.run(`port detach ${port}`)
      for (const rec of missing) {
        rec.memifPort = NOT_ATTACHED
        rec.kernelPort = NOT_ATTACHED
        try {
          await this.attachPair(rec, false)
        } catch (err) {
          this.log.error('memif pair not served again after adoption', { id: rec.id, error: (err as Error).message })
        }
      }
      await this.reconfigure()
      await this.persist()
    } finally {
      this.changing -= 1
    }
  }

  async persist(): Promise<void> {
    const proc = this.proc
    if (proc === undefined || proc.hasExited) return
    await proc.writeState([...this.pairs.values()])
  }
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

export function unlinkSocket(path: string): void {
  if (isSocket(path)) rmSync(path, { force: true })
}

export function failure(rec: PairRecord, msg: string): AgentError {
  return new AgentError('INTERNAL', `memif connection ${rec.id}: ${msg}`)
}

export function oneLine(text: string): string {
  return JSON.stringify(text.trim().split('\n').slice(-4).join(' | '))
}
