// Which MEMIF forwarder process a pair's af_packet port may go into: the af_packet PMD's fanout group must
// not clash with another process's. ./forwarder.ts places pairs and ./forwarder-pool.ts starts processes
// by it.
import { readFileSync } from 'node:fs'
import { NOT_ATTACHED, type Forwarder } from './forwarder-pairs.js'

/**
 * DPDK 22.11's af_packet port joins the fanout group (pid ^ ifindex) & 0xffff, and fanout groups are per
 * netns: when that id is another process's group on another interface, the attach fails with EINVAL
 * ("could not set PACKET_FANOUT"). Neighbouring pids and ifindexes make that likely, so a pair goes only
 * where its id is free. True when an af_packet port of `ifaces` in fwd's process would clash with another
 * process of `forwarders`.
 */
export function fanoutClash(forwarders: Iterable<Forwarder>, fwd: Forwarder, ifaces: string[]): boolean {
  const pid = fwd.proc?.pid
  if (pid === undefined) return false
  const mine = new Set<number>()
  for (const i of ifaces) {
    const ix = ifindexOf(i)
    if (ix !== undefined) mine.add((pid ^ ix) & 0xffff)
  }
  for (const f of forwarders) {
    if (f === fwd || f.proc === undefined || f.proc.hasExited) continue
    for (const r of f.pairs.values()) {
      const ix = r.kernelPort === NOT_ATTACHED ? undefined : ifindexOf(r.iface)
      if (ix !== undefined && mine.has((f.proc.pid ^ ix) & 0xffff)) return true
    }
  }
  return false
}

function ifindexOf(iface: string): number | undefined {
  try {
    const n = Number(readFileSync(`/sys/class/net/${iface}/ifindex`, 'utf8').trim())
    return Number.isInteger(n) ? n : undefined
  } catch {
    return undefined
  }
}
