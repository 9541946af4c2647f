// A bench for the MEMIF mechanism's userspace forwarders (agent/mechanisms/memif/forwarder.ts) with real DPDK
// and a real kernel, shared by test/integration/memif-forwarder-pairs.test.ts and
// memif-forwarder-recovery.test.ts: a run directory (forwarders found by their DPDK file prefix, which names
// it), a MemifForwarders supervisor on it, veths whose agent-side end (in this process's netns) carries the
// af_packet port, an "endpoint" netns with an address on the other end, and ping and kernel counters from
// there. The pod side is test/lib/memif-peer.ts.
//
// Every netns, link, process and file made here is removed at teardown, also on failure.
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { MemifForwarders } from '../../agent/mechanisms/memif/forwarder'
import { findForwarderProcesses, runDirTag } from '../../agent/mechanisms/memif/forwarder-identity'
import type { ForwarderLog } from '../../agent/mechanisms/memif/forwarder-types'
import { ip, makeNetns, RUN, sh, uniqueName } from './netns'
import { pollUntil } from './wait'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
  comment(...args: unknown[]): void
}

const run = promisify(execFile)
/** The supervisors' link poll interval. */
export const POLL_MS = 100

/** Polls `cond` every 25 ms until it holds; throws naming `what` after `ms`. */
export const waitFor = (what: string, cond: () => boolean | Promise<boolean>, ms = 8000): Promise<number> => pollUntil(what, cond, ms, 25)

/** A run directory (with a `sock` directory for the sockets); its forwarders are SIGKILLed and it is removed at teardown. */
export function makeRunDir(t: Teardown): string {
  const dir = mkdtempSync(join(tmpdir(), `nsm-memif-${RUN}-`))
  mkdirSync(join(dir, 'sock'), { mode: 0o755 })
  t.teardown(async () => {
    for (const pid of findForwarderProcesses(dir).keys()) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
    await waitFor('the run directory forwarders to exit', () => findForwarderProcesses(dir).size === 0, 3000).catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
    // DPDK's (empty, --no-shconf) runtime directories of forwarders that were killed.
    for (const d of readdirSync('/var/run/dpdk')) if (d.startsWith(`nsmfwd-${runDirTag(dir)}-`)) rmSync(join('/var/run/dpdk', d), { recursive: true, force: true })
  })
  return dir
}

export function forwarderFileNames(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.startsWith('nsmfwd-'))
}

function testLog(t: Teardown): ForwarderLog & { lines: string[] } {
  const lines: string[] = []
  const at = (level: string) => (msg: string, f?: object) => {
    lines.push(`${level} ${msg} ${JSON.stringify(f ?? {})}`)
    if (level !== 'info') t.comment(`${level} ${msg} ${JSON.stringify(f ?? {})}`)
  }
  return { lines, info: at('info'), warn: at('warn'), error: at('error') }
}

/** A supervisor on `runDir` polling every POLL_MS, logging warnings and errors as test comments; stopped (forwarders too) at teardown. */
export function makeForwarders(t: Teardown, runDir: string, opts: { pairsPerProcess?: number; outputLimitBytes?: number } = {}): MemifForwarders {
  const fw = new MemifForwarders({ runDir, pollMs: POLL_MS, log: testLog(t), ...opts })
  t.teardown(() => fw.stop({ keepRunning: false }))
  return fw
}

/** A veth in this netns (ifindex `index` when given): the end returned takes the af_packet port; for tests that send nothing. */
export function makeVeth(t: Teardown, index?: number): string {
  const iface = uniqueName('fa')
  const peer = uniqueName('fp')
  ip(undefined, 'link', 'add', iface, ...(index === undefined ? [] : ['index', String(index)]), 'type', 'veth', 'peer', 'name', peer)
  t.teardown(() => removeLink(iface))
  ip(undefined, 'link', 'set', iface, 'up')
  ip(undefined, 'link', 'set', peer, 'up')
  return iface
}

export function ifindex(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim())
}

function removeLink(name: string): void {
  try {
    sh('ip', ['link', 'del', name])
  } catch {
    // gone with its netns
  }
}

export interface Endpoint {
  ns: string
  /** The agent-side veth end (af_packet port). */
  iface: string
  /** The endpoint-side end, in `ns`, 10.251.<n>.1/24. */
  inner: string
  /** An address in the subnet the icmpecho client answers for. */
  target: string
}

let endpoints = 0
export function makeEndpoint(t: Teardown): Endpoint {
  endpoints += 1
  const n = endpoints
  const ns = makeNetns(t, 'ep')
  const iface = uniqueName('fa')
  const inner = uniqueName('fe')
  ip(undefined, 'link', 'add', iface, 'type', 'veth', 'peer', 'name', inner, 'netns', ns.name)
  t.teardown(() => removeLink(iface))
  ip(undefined, 'link', 'set', iface, 'up')
  ip(ns.name, 'addr', 'add', `10.251.${n}.1/24`, 'dev', inner)
  ip(ns.name, 'link', 'set', inner, 'up')
  return { ns: ns.name, iface, inner, target: `10.251.${n}.2` }
}

/**
 * Pings from the endpoint netns until `count` replies came or `deadlineS` passed (`-c -w`: a late reply is not
 * a lost one, on a busy machine). `sent - received` is what was lost.
 */
export async function ping(ep: Endpoint, count: number, intervalS = 0.2, deadlineS = Math.ceil(count * intervalS) + 10): Promise<{ sent: number; received: number }> {
  const r = await run('ip', ['netns', 'exec', ep.ns, 'ping', '-n', '-q', '-c', String(count), '-i', String(intervalS), '-w', String(deadlineS), ep.target]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }))
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout)
  return { sent: Number(m?.[1] ?? 0), received: Number(m?.[2] ?? 0) }
}

export function kernelCounters(ep: Endpoint): { rx: number; tx: number } {
  const j = JSON.parse(ip(ep.ns, '-s', '-j', 'link', 'show', 'dev', ep.inner)) as Array<{ stats64: { rx: { packets: number }; tx: { packets: number } } }>
  const s = (j[0] as (typeof j)[0]).stats64
  return { rx: s.rx.packets, tx: s.tx.packets }
}
