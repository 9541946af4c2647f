// Shared by the node agent's benchmarks (bench/agent.ts, bench/agent-table.ts): teardown lists, namespaces named
// for this run, an endpoint registered with the agent, the agent process's RSS and CPU time read from /proc, and
// the kernel reference (the same cross-connect built in-process by pkg/netlink, no agent).
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import type { AgentClient } from '../../agent/client/client'
import { buildCrossConnect, NetlinkSessions, removeCrossConnect } from '../../pkg/netlink'
import { CLK_TCK } from './report'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** Steps added with `teardown` (the shape startAgent takes), run last first by `run` (a benchmark's `finally`). */
export function teardownList(): Teardown & { run(): Promise<void> } {
  const steps: Array<() => void | Promise<void>> = []
  return {
    teardown: (fn) => void steps.push(fn),
    run: async () => {
      for (const fn of steps.reverse()) await fn()
    },
  }
}

/** This run's namespace prefix: a leftover names the benchmark process that leaked it. */
const P = `ba${process.pid % 1000}`
export const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' })
export const nsPath = (n: string): string => `/var/run/netns/${n}`

/** Deletes a namespace if it is there (its veths go with it). */
function delNetns(n: string): void {
  try {
    execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' })
  } catch {
    // not there
  }
}

/** A namespace `<prefix><name>` with lo up (a leftover of the same name is replaced), deleted at teardown. */
export function netns(t: Teardown, name: string): string {
  const n = `${P}${name}`
  delNetns(n)
  sh('ip', 'netns', 'add', n)
  sh('ip', '-n', n, 'link', 'set', 'lo', 'up')
  t.teardown(() => delNetns(n))
  return n
}

/** An endpoint of secure-intranet-connectivity (app=firewall) in namespace `ns`, allocating from `pools`. */
export async function registerEndpoint(client: AgentClient, name: string, ns: string, pools: string[]): Promise<void> {
  await client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
    endpoint: {
      name,
      networkServiceNames: ['secure-intranet-connectivity'],
      networkServiceLabels: { 'secure-intranet-connectivity': { labels: { app: 'firewall' } } },
      url: `file://${nsPath(ns)}`,
      expirationTime: { seconds: Math.floor(Date.now() / 1000) + 3600, nanos: 0 },
      initialRegistrationTime: undefined,
      pathIds: [],
    },
    extension: { endpointName: name, netnsPath: nsPath(ns), cidrPools: pools, routes: [], excludedPrefixes: [], nodeName: '' },
  })
}

/** Calls `work(0)` … `work(n - 1)`, `concurrency` at a time (each worker takes the next index as it finishes one). */
export async function pool(concurrency: number, n: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await work(next++)
    }),
  )
}

export const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024

/** A process's CPU time (user + sys, ms) so far: /proc/<pid>/stat utime + stime. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK
}

/** pkg/netlink's cross-connect from namespace `a` to `b` built and removed `n` times (after 10 unmeasured): build times. */
export async function inProcessReference(a: string, b: string, n: number): Promise<number[]> {
  const sessions = new NetlinkSessions()
  const spec = {
    client: { netns: nsPath(a), ifname: 'ref0', addresses: ['172.31.0.1/32'], routes: [{ dst: '172.31.0.0/32' }] },
    endpoint: { netns: nsPath(b), ifname: 'ref1', addresses: ['172.31.0.0/32'], routes: [{ dst: '172.31.0.1/32' }] },
  }
  const out: number[] = []
  for (let i = 0; i < n + 10; i++) {
    const t0 = performance.now()
    await buildCrossConnect(sessions, spec)
    if (i >= 10) out.push(performance.now() - t0)
    await removeCrossConnect(sessions, spec)
  }
  sessions.closeAll()
  return out
}
