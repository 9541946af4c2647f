// Test helpers for real network namespaces. Tests may use the `ip` command (the product never does).
//
// Every namespace gets the per-run prefix, so parallel runs never collide and a leftover names the run
// that leaked it; each is removed in t.teardown, also when the test fails.
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'

/** Short per-process prefix: 4 hex chars, so prefix + 10 more characters still fit IFNAMSIZ (15). */
export const RUN = process.env.NSM_TEST_RUN ?? randomBytes(2).toString('hex')

let counter = 0
/** A unique name with the run prefix, at most 15 characters (usable as a link or netns name). */
export function uniqueName(kind: string): string {
  counter += 1
  const name = `t${RUN}${kind}${counter}`
  if (name.length > 15) throw new Error(`test name ${name} is longer than 15 characters`)
  return name
}

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** Runs a command for a test and returns its stdout; throws with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...opts })
}

/** Runs `ip` inside a namespace (or in the root one when ns is undefined). */
export function ip(ns: string | undefined, ...args: string[]): string {
  return ns === undefined ? sh('ip', args) : sh('ip', ['-n', ns, ...args])
}

export interface TestNetns {
  name: string
  /** Path as runtimes pass it in CNI_NETNS. */
  path: string
}

/** Creates a named netns (`ip netns add`) with lo up, removed at teardown. */
export function makeNetns(t: Teardown, kind = 'ns'): TestNetns {
  const name = uniqueName(kind)
  sh('ip', ['netns', 'add', name])
  t.teardown(() => removeNetns(name))
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
  return { name, path: `/var/run/netns/${name}` }
}

/**
 * A `sleep` child, in the root netns or (through `ip netns exec`) in a test netns: a process holding that
 * netns. Its pid once it is sleep; `kill` (also at teardown) SIGKILLs it and resolves once it has exited.
 */
export async function sleeper(t: Teardown, netns?: string): Promise<{ pid: number; kill(): Promise<void> }> {
  const proc = netns === undefined ? spawn('sleep', ['60'], { stdio: 'ignore' }) : spawn('ip', ['netns', 'exec', netns, 'sleep', '60'], { stdio: 'ignore' })
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  const kill = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
    await exited
  }
  t.teardown(kill)
  const pid = proc.pid
  if (pid === undefined) throw new Error('spawn failed')
  // `ip netns exec` switches, then execs sleep under the same pid: wait until it has.
  const deadline = Date.now() + 5000
  while (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'sleep') {
    if (Date.now() > deadline) throw new Error(`child ${pid} did not become sleep`)
    await new Promise((r) => setTimeout(r, 10))
  }
  return { pid, kill }
}

export function removeNetns(name: string): void {
  if (existsSync(`/var/run/netns/${name}`)) {
    try {
      sh('ip', ['netns', 'del', name])
    } catch {
      // already gone
    }
  }
}

/** What `ip -j -d link show` says of a link (the fields the tests read). */
export interface IpLink {
  ifindex: number
  ifname: string
  mtu: number
  address: string
  flags: string[]
  operstate?: string
  num_tx_queues?: number
  num_rx_queues?: number
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown> }
}

/** One link of a namespace, as the kernel reports it through `ip -j -d link show`. */
export function showLink(ns: string, name: string): IpLink {
  return (JSON.parse(ip(ns, '-j', '-d', 'link', 'show', 'dev', name)) as IpLink[])[0] as IpLink
}

/** Names of links in a namespace (root when ns is undefined). */
export function linkNames(ns?: string): string[] {
  const out = JSON.parse(ip(ns, '-j', 'link', 'show')) as Array<{ ifname: string }>
  return out.map((l) => l.ifname)
}

/** Addresses (address/prefixlen) on a link in a namespace. */
export function linkAddresses(ns: string | undefined, ifname: string): string[] {
  const out = JSON.parse(ip(ns, '-j', 'addr', 'show', 'dev', ifname)) as Array<{
    addr_info: Array<{ local: string; prefixlen: number }>
  }>
  return (out[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`)
}
