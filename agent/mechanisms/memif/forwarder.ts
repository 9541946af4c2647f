// The userspace forwarders of the MEMIF mechanism: each connection is a pair of DPDK ports cross-connected
// by a dpdk-testpmd in io mode (frames forwarded untouched, a transparent L2 cross-connect): a net_memif
// server port whose socket file is the pod's memif socket, and a net_af_packet port on a kernel interface
// in the agent's netns (a veth end the mechanism creates, its peer in the endpoint's netns). This module
// is the connections' side: which process a pair goes into, attaching, detaching and re-attaching pairs,
// reconcile; creating the veth, the socket directory and choosing paths is the mechanism's (./index.ts).
// The processes themselves (started, adopted after an agent restart, restarted, their links polled):
// ./forwarder-pool.ts, which MemifForwarders extends; one process's pairs and their ports:
// ./forwarder-pairs.ts; the testpmd process and its prompt: ./testpmd.ts.
//
// Why one process for many connections (measured with Debian 12's DPDK 22.11 on a 2-CPU VM): testpmd busy-polls one CPU at 100% while forwarding, whatever the traffic,
// and has no sleep or rx-interrupt mode; one process per connection would cost a CPU per pod. One
// testpmd takes up to 32 ports (16 pairs) attached and detached at run time, so this is a pool: a pair
// goes into the first process with a free slot, a new process starts when all are full, a process left
// without pairs quits. The price: every add or remove pauses all pairs of that process for a moment
// (forwarding is stopped while the port list changes; `--no-flush-rx` keeps queued frames), and a crash
// of the memif PMD (22.11's sometimes segfaults when a peer disconnects under load: 2 in 51 client kills) takes every pair
// of the process down until it is restarted (./forwarder-pool.ts).
//
// Memory: no hugepages (`--no-huge -m 32`, 2048 mbufs, `--no-mlockall`); 16 pairs attach at run time with
// -m 24 and fail at -m 20 (./testpmd-args.ts has the numbers).
//
// Events: 'restarted' (ids: string[], reason: string), 'connected' (id), 'disconnected' (id).
import { AgentError } from '../../errors.js'
import { fanoutClash } from './forwarder-fanout.js'
import type { PairRecord } from './forwarder-identity.js'
import { failure, NOT_ATTACHED, oneLine, unlinkSocket, type Forwarder } from './forwarder-pairs.js'
import { ForwarderPool } from './forwarder-pool.js'
import type { ForwarderStats, MemifPort, PortState } from './forwarder-types.js'
import { checkIfaceName, checkSocketPath } from './testpmd-args.js'
import { parseAttachedPort, parsePortStats } from './testpmd-replies.js'

export class MemifForwarders extends ForwarderPool {
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
          await fwd.attachPair(rec, true)
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
        let fwd = attempt > 0 ? undefined : [...this.forwarders].find((f) => f.usable() && f.pairs.size < this.perProcess && !fanoutClash(this.forwarders, f, [p.iface]))
        const fresh = fwd === undefined
        if (fwd === undefined) fwd = await this.newForwarder([p.iface])
        rec.slot = fwd.freeSlot()
        fwd.pairs.set(p.id, rec)
        try {
          await fwd.attachPair(rec, true)
          return true
        } catch (err) {
          fwd.pairs.delete(p.id)
          if (fresh || fwd.pairs.size === 0) await this.retire(fwd)
          else await fwd.persist()
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
      if (proc === undefined || proc.hasExited || rec.memifPort === NOT_ATTACHED || fanoutClash(this.forwarders, fwd, [rec.iface])) return false
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
        await fwd.reconfigure()
        await fwd.persist()
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
        await fwd.reconfigure()
        await fwd.dropPorts(rec)
      } else {
        unlinkSocket(rec.socket)
      }
      await fwd.persist()
    } finally {
      fwd.changing -= 1
    }
    this.log.info('memif pair detached', { id: rec.id, pid: fwd.proc?.pid, ms: Date.now() - t0 })
  }
}

function checkPort(p: MemifPort): void {
  if (typeof p.id !== 'string' || p.id === '') throw AgentError.invalid('memif connection id', 'is empty')
  checkSocketPath(p.socket)
  checkIfaceName(p.iface)
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
