// Kernel layer: build and tear down one veth cross-connect between two namespaces (veth with each end
// in its namespace, a /32 on each end, link up, a /32 route on each side), in-process through
// pkg/netlink, side by side in the same run with the same work done by `ip` commands (one process per
// command, the way shell-based plugins and scripts do it). Target: p50 build <= 3 ms.
import { execFileSync } from 'node:child_process'
import { buildCrossConnect, NetlinkSessions, removeCrossConnect } from '../pkg/netlink'
import { machine, ms, stats, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 500)
const N_IP = Number(process.env.BENCH_N_IP ?? 100)
const A = `bkA${process.pid % 10000}`
const B = `bkB${process.pid % 10000}`
const ip = (...args: string[]): void => {
  execFileSync('ip', args, { stdio: 'ignore' })
}

function setupNamespaces(): void {
  for (const n of [A, B]) ip('netns', 'add', n)
}
function removeNamespaces(): void {
  for (const n of [A, B]) {
    try {
      ip('netns', 'del', n)
    } catch {
      // not there
    }
  }
}

async function ours(): Promise<{ build: number[]; teardown: number[] }> {
  const sessions = new NetlinkSessions()
  const spec = {
    client: { netns: `/var/run/netns/${A}`, ifname: 'nsm-1', addresses: ['172.16.9.3/32'], routes: [{ dst: '172.16.9.2/32' }] },
    endpoint: { netns: `/var/run/netns/${B}`, ifname: 'nsm-b', addresses: ['172.16.9.2/32'], routes: [{ dst: '172.16.9.3/32' }] },
  }
  const build: number[] = []
  const teardown: number[] = []
  try {
    // warm-up: first socket per namespace, koffi load, JIT
    for (let i = 0; i < 20; i++) {
      await buildCrossConnect(sessions, spec)
      await removeCrossConnect(sessions, spec)
    }
    for (let i = 0; i < N; i++) {
      const t0 = performance.now()
      await buildCrossConnect(sessions, spec)
      const t1 = performance.now()
      await removeCrossConnect(sessions, spec)
      const t2 = performance.now()
      build.push(t1 - t0)
      teardown.push(t2 - t1)
    }
  } finally {
    sessions.closeAll()
  }
  return { build, teardown }
}

function withIp(): { build: number[]; teardown: number[] } {
  const build: number[] = []
  const teardown: number[] = []
  for (let i = 0; i < N_IP; i++) {
    const t0 = performance.now()
    ip('link', 'add', 'nsm-1', 'netns', A, 'type', 'veth', 'peer', 'name', 'nsm-b', 'netns', B)
    ip('-n', A, 'addr', 'add', '172.16.9.3/32', 'dev', 'nsm-1')
    ip('-n', B, 'addr', 'add', '172.16.9.2/32', 'dev', 'nsm-b')
    ip('-n', A, 'link', 'set', 'nsm-1', 'up')
    ip('-n', B, 'link', 'set', 'nsm-b', 'up')
    ip('-n', A, 'route', 'add', '172.16.9.2/32', 'dev', 'nsm-1')
    ip('-n', B, 'route', 'add', '172.16.9.3/32', 'dev', 'nsm-b')
    const t1 = performance.now()
    ip('-n', A, 'link', 'del', 'nsm-1')
    const t2 = performance.now()
    build.push(t1 - t0)
    teardown.push(t2 - t1)
  }
  return { build, teardown }
}

removeNamespaces()
setupNamespaces()
try {
  const a = await ours()
  const b = withIp()
  const sa = stats(a.build)
  const sat = stats(a.teardown)
  const sb = stats(b.build)
  const sbt = stats(b.teardown)
  const row = (name: string, n: number, s: ReturnType<typeof stats>, d: ReturnType<typeof stats>): string =>
    `| ${name} | ${n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(d.p50)} | ${ms(d.p99)} |`
  const md = `## Kernel layer: one veth cross-connect (issue 2)

${new Date().toISOString().slice(0, 10)}, ${machine()}. Command: \`npx tsx bench/kernel.ts\` (as root; \`BENCH_N\`, \`BENCH_N_IP\` set the iterations).
Work per iteration: a veth pair with each end created directly in its namespace, a /32 on each end, both
links up, a /32 route on each side; teardown deletes the pair. Target: build p50 ≤ 3 ms.

| how | iterations | build p50 ms | build p99 ms | teardown p50 ms | teardown p99 ms |
|---|---|---|---|---|---|
${row('pkg/netlink, in-process', N, sa, sat)}
${row('`ip` commands (7 processes to build, 1 to tear down)', N_IP, sb, sbt)}

Build p50 target ≤ 3 ms: ${sa.p50 <= 3 ? 'met' : 'NOT met'} (${ms(sa.p50)} ms).`
  writeSection('kernel', md)
  process.stdout.write(`${md}\n`)
} finally {
  removeNamespaces()
}
