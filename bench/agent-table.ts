// Request time against the size of the connection table (issue 10): Request→UP and Close p50/p99 with
// BENCH_TABLE_SIZES (default 10,1000,10000) other connections open. The open connections are real ones,
// made through the same API (KERNEL veths, 16 in flight, from 50 client namespaces to one endpoint whose
// namespace holds them all): what the agent holds and watches for each is what it would hold for a pod. At
// each size the agent is left idle for 1 s, then BENCH_TABLE_IDLE_MS (default 3000) (its CPU time over that
// wait is reported: the periodic work the table costs), then BENCH_TABLE_N (default 200) Requests, each
// timed alone, then their Closes (the table is back at its size for the next step): once to an endpoint
// alone in its namespace (the agent's share), once to the endpoint holding every open connection (the
// kernel's share shows there: a veth pair costs more in a namespace holding 10,000), with pkg/netlink's
// in-process cross-connect into each namespace as the kernel reference. Teardown: the agent is stopped
// (SIGTERM) and the namespaces deleted, which takes the veths with them (closing 10,000 connections one by
// one would only measure the kernel's veth deletion).
// Run: npx tsx bench/agent-table.ts (root); bench/agent.ts runs it too, after its own section (BENCH_ONLY=table
// there runs only this one). BENCH_BEFORE=DIR also measures DIR/nsm-agent (an earlier build, e.g.
// `node build.mjs nsm-agent` in a git worktree of an earlier commit) in the same run: the two agents take
// turns, one whole ladder each (never both alive: one agent's periodic work would load the other's
// measurement on a small machine), BENCH_TABLE_ROUNDS times (default 1). BENCH_TABLE_BUDGET_S (default 120)
// caps the time one set of Requests may take (an agent needing seconds per call is sampled less).
// BENCH_PROF_DIR=DIR writes a V8 CPU profile of each agent this section runs into DIR.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NetworkServiceDefinition } from '../proto/gen/networkservice/networkservice'
import type { Connection } from '../proto/gen/networkservice/connection'
import { NetworkServiceRegistryDefinition } from '../proto/gen/registry/registry'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import { startAgent } from '../test/lib/agent'
import { kernelRequest, seedServices, serviceMessage } from '../test/lib/mesh'
import { cpuMs, inProcessReference, netns, nsPath, registerEndpoint, rssMiB, teardownList } from './lib/agent'
import { machine, ms, stats, writeSection, type Stats } from './lib/report'

const TABLE_SIZES = (process.env.BENCH_TABLE_SIZES ?? '10,1000,10000').split(',').map(Number)
const TABLE_N = Number(process.env.BENCH_TABLE_N ?? 200)
const TABLE_IDLE_MS = Number(process.env.BENCH_TABLE_IDLE_MS ?? 3000)
const TABLE_ROUNDS = Number(process.env.BENCH_TABLE_ROUNDS ?? 1)
const TABLE_BUDGET_S = Number(process.env.BENCH_TABLE_BUDGET_S ?? 120)
const BEFORE = process.env.BENCH_BEFORE
const PROF_DIR = process.env.BENCH_PROF_DIR
if (BEFORE !== undefined && !existsSync(join(BEFORE, 'nsm-agent'))) throw new Error(`BENCH_BEFORE=${BEFORE}: no nsm-agent there`)
if (TABLE_SIZES.some((n) => !Number.isInteger(n) || n < 0) || TABLE_SIZES.some((n, i) => i > 0 && n < (TABLE_SIZES[i - 1] as number))) {
  throw new Error(`BENCH_TABLE_SIZES=${process.env.BENCH_TABLE_SIZES}: ascending whole numbers, e.g. 10,1000,10000`)
}

/**
 * A script that runs `bundle` under V8's CPU profiler and writes the profile into BENCH_PROF_DIR when the
 * agent exits (Node 20 refuses --cpu-prof in NODE_OPTIONS, and startAgent runs `node <bundle>`).
 */
function profiled(bundle: string, label: string): string {
  const dir = PROF_DIR as string
  mkdirSync(dir, { recursive: true })
  const wrapper = join(dir, `profile-${label}.cjs`)
  const out = join(dir, `agent-${label}-${Date.now()}.cpuprofile`)
  writeFileSync(
    wrapper,
    `const inspector = require('node:inspector')
const fs = require('node:fs')
const session = new inspector.Session()
session.connect()
session.post('Profiler.enable')
session.post('Profiler.setSamplingInterval', { interval: 500 })
session.post('Profiler.start')
const exit = process.exit.bind(process)
process.exit = (code) => {
  // The main-thread session answers synchronously: the profile is on disk before the process ends.
  session.post('Profiler.stop', (err, res) => {
    if (!err) fs.writeFileSync(${JSON.stringify(out)}, JSON.stringify(res.profile))
    exit(code)
  })
}
require(${JSON.stringify(bundle)})
`,
  )
  return wrapper
}

interface TableStep {
  size: number
  /** Requests to an endpoint in a namespace of its own (the agent's share). */
  req: number[]
  close: number[]
  /** Requests to the endpoint whose namespace holds every open connection (the agent's and the kernel's). */
  shared: number[]
  sharedClose: number[]
  /** pkg/netlink in-process (no agent): the same cross-connect into each of those two namespaces. */
  kernelOwn: number[]
  kernelShared: number[]
  /** Agent CPU per second of idle wait at this size (ms/s). */
  idleCpu: number
  rss: number
  /** Measured Requests that failed (left out of the latencies), and background Requests retried. */
  failed: number
  retried: number
}

/** Service of the open (background) connections: one endpoint, every candidate (no matches). */
const BACKGROUND_SERVICE = 'bench-background'

/** One ladder: an agent (this build, or `bundle`), the table grown to each size in turn, measured at each. */
async function tableScaling(label: string, bundle: string | undefined): Promise<TableStep[]> {
  const local = teardownList()
  const tag = `t${label.slice(0, 1)}`
  const mk = (name: string): string => netns(local, `${tag}${name}`)
  const steps: TableStep[] = []
  try {
    const bgEp = mk('bg')
    const ownEp = mk('ep')
    const measured = mk('m')
    const bg = Array.from({ length: 50 }, (_, i) => mk(`b${i}`))
    const agent = await startAgent(local, PROF_DIR === undefined ? (bundle === undefined ? {} : { bundle }) : { bundle: profiled(bundle ?? join(import.meta.dirname, '../dist/nsm-agent'), label) })
    local.teardown(async () => {
      await agent.stop('SIGTERM')
    })
    const client = agent.client
    for (const s of seedServices()) await client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
    await client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: BACKGROUND_SERVICE, payload: 'ETHERNET', matches: [], pathIds: [] })
    // The measured Requests' endpoint, alone in its namespace (secure-intranet-connectivity, app=firewall).
    await registerEndpoint(client, 'fw-t', ownEp, ['10.200.0.0/16'])
    // The open connections' endpoint: a /14 holds 10,000 pairs and the measured ones.
    await client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
      endpoint: {
        name: 'bg',
        networkServiceNames: [BACKGROUND_SERVICE],
        networkServiceLabels: {},
        url: `file://${nsPath(bgEp)}`,
        expirationTime: { seconds: Math.floor(Date.now() / 1000) + 3600, nanos: 0 },
        initialRegistrationTime: undefined,
        pathIds: [],
      },
      extension: { endpointName: 'bg', netnsPath: nsPath(bgEp), cidrPools: ['10.64.0.0/14'], routes: [], excludedPrefixes: [], nodeName: '' },
    })
    const request = (id: string, ns: string, ifname: string, service?: string): Promise<Connection> =>
      client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, nsPath(ns), ifname, {}, service))
    /** TABLE_N Requests (after 10 unmeasured), one at a time, then their Closes, each timed alone. */
    // A Request or Close the agent fails (an agent overloaded by its own periodic work: its netlink answers
    // time out) is counted and left out of the latencies; a failed Request is closed (Close is idempotent).
    let failed = 0
    let retried = 0
    const measure = async (prefix: string, service: string | undefined): Promise<{ req: number[]; close: number[] }> => {
      const conns: Array<{ c: Connection; measured: boolean }> = []
      const req: number[] = []
      const close: number[] = []
      const t0 = performance.now()
      // An agent that takes seconds per call (the earlier build at 10,000) is sampled for TABLE_BUDGET_S only.
      for (let i = 0; i < TABLE_N + 10 && performance.now() - t0 < TABLE_BUDGET_S * 1000; i++) {
        const id = `${prefix}-${i}`
        const a = performance.now()
        try {
          conns.push({ c: await request(id, measured, `${prefix}${i}`, service), measured: i >= 10 })
          if (i >= 10) req.push(performance.now() - a)
        } catch {
          failed++
          conns.push({ c: { ...(kernelRequest(id, nsPath(measured), `${prefix}${i}`).connection as Connection) }, measured: false })
        }
      }
      for (const { c, measured: timed } of conns) {
        const a = performance.now()
        try {
          await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)
          if (timed) close.push(performance.now() - a)
        } catch {
          failed++ // its links go with the namespaces at teardown
        }
      }
      return { req, close }
    }
    const background = async (j: number): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await request(`bg-${j}`, bg[j % bg.length] as string, `b${Math.floor(j / bg.length)}`, BACKGROUND_SERVICE)
          return
        } catch (err) {
          if (attempt >= 5) throw err
          retried++
        }
      }
    }
    // Warm-up (not measured): a fresh agent's first hundred Requests are slower (JIT), which would flatter every
    // size after the first.
    await measure('w', undefined)
    await measure('v', BACKGROUND_SERVICE)
    failed = 0
    let open = 0
    for (const size of TABLE_SIZES) {
      // Grown 16 at a time (as pods arrive) up to `size` other connections.
      while (open < size) {
        const batch = Array.from({ length: Math.min(16, size - open) }, (_, k) => open + k)
        await Promise.all(batch.map(background))
        open += batch.length
      }
      await new Promise((r) => setTimeout(r, 1000)) // the last Requests' aftermath (journal, monitor) settles
      const cpu0 = cpuMs(agent.pid)
      const t0 = performance.now()
      await new Promise((r) => setTimeout(r, TABLE_IDLE_MS))
      const idleCpu = ((cpuMs(agent.pid) - cpu0) / (performance.now() - t0)) * 1000
      const rss = rssMiB(agent.pid)
      const own = await measure(`m${size}`, undefined)
      const shared = await measure(`s${size}`, BACKGROUND_SERVICE)
      const kernelOwn = await inProcessReference(measured, ownEp, Math.min(TABLE_N, 100))
      const kernelShared = await inProcessReference(measured, bgEp, Math.min(TABLE_N, 100))
      steps.push({ size, req: own.req, close: own.close, shared: shared.req, sharedClose: shared.close, kernelOwn, kernelShared, idleCpu, rss, failed, retried })
      const p = (xs: number[]): string => `${ms(stats(xs).p50)}/${ms(stats(xs).p99)}`
      process.stderr.write(
        `table ${label} ${size}: Request ${p(own.req)}, Close ${p(own.close)}; shared netns Request ${p(shared.req)}; kernel own ${p(kernelOwn)} shared ${p(kernelShared)}; idle CPU ${idleCpu.toFixed(0)} ms/s, RSS ${rss.toFixed(0)} MiB; failed ${failed}, background retried ${retried}\n`,
      )
    }
  } finally {
    await local.run()
  }
  return steps
}

/** Every agent (BENCH_BEFORE's, then this build) up the ladder BENCH_TABLE_ROUNDS times; writes the section agent-table. */
export async function tableSection(): Promise<void> {
  const agents: Array<{ label: string; bundle: string | undefined }> = [
    ...(BEFORE === undefined ? [] : [{ label: 'before', bundle: join(BEFORE, 'nsm-agent') }]),
    { label: 'after', bundle: undefined },
  ]
  const runs = new Map<string, TableStep[][]>()
  for (let round = 0; round < TABLE_ROUNDS; round++) {
    for (const a of agents) runs.set(a.label, [...(runs.get(a.label) ?? []), await tableScaling(a.label, a.bundle)])
  }
  /** Every round's samples of one size pooled. */
  const at = (label: string, size: number) => {
    const steps = (runs.get(label) ?? []).map((r) => r.find((s) => s.size === size) as TableStep)
    const pool = (f: (s: TableStep) => number[]): Stats => stats(steps.flatMap(f))
    return {
      req: pool((s) => s.req),
      close: pool((s) => s.close),
      shared: pool((s) => s.shared),
      sharedClose: pool((s) => s.sharedClose),
      kernelOwn: pool((s) => s.kernelOwn),
      kernelShared: pool((s) => s.kernelShared),
      idleCpu: Math.max(...steps.map((s) => s.idleCpu)),
      rss: Math.max(...steps.map((s) => s.rss)),
      failed: steps.reduce((n, s) => n + s.failed, 0),
      retried: steps.reduce((n, s) => n + s.retried, 0),
    }
  }
  const first = TABLE_SIZES[0] as number
  const name = (label: string): string => (label === 'after' ? 'this build' : 'before')
  const vs = (size: number, v: number, b: number): string => (size === first ? '' : ` (×${(v / b).toFixed(2)})`)
  const ownRows = agents.flatMap((a) =>
    TABLE_SIZES.map((size) => {
      const x = at(a.label, size)
      const b = at(a.label, first)
      return `| ${name(a.label)} | ${size.toLocaleString('en-US')} | ${x.req.n} | ${ms(x.req.p50)}${vs(size, x.req.p50, b.req.p50)} | ${ms(x.req.p99)}${vs(size, x.req.p99, b.req.p99)} | ${ms(x.close.p50)} | ${ms(x.close.p99)} | ${ms(x.kernelOwn.p50)} | ${x.idleCpu.toFixed(0)} | ${x.rss.toFixed(0)} | ${x.failed} / ${x.retried} |`
    }),
  )
  const sharedRows = agents.flatMap((a) =>
    TABLE_SIZES.map((size) => {
      const x = at(a.label, size)
      const b = at(a.label, first)
      return `| ${name(a.label)} | ${size.toLocaleString('en-US')} | ${x.shared.n} | ${ms(x.shared.p50)}${vs(size, x.shared.p50, b.shared.p50)} | ${ms(x.shared.p99)}${vs(size, x.shared.p99, b.shared.p99)} | ${ms(x.sharedClose.p50)} | ${ms(x.kernelShared.p50)}${vs(size, x.kernelShared.p50, b.kernelShared.p50)} |`
    }),
  )
  const ratios =
    BEFORE === undefined
      ? ''
      : `\n\nThis build against the earlier one at the same size (< 1: less now):\n\n| open connections | Request p50 | Request p99 | Close p50 | shared-netns Request p50 | shared-netns Request p99 | idle CPU |\n|---|---|---|---|---|---|---|\n${TABLE_SIZES.map((size) => {
          const b = at('before', size)
          const n = at('after', size)
          const r = (x: number, y: number): string => `×${(x / y).toFixed(2)}`
          return `| ${size.toLocaleString('en-US')} | ${r(n.req.p50, b.req.p50)} | ${r(n.req.p99, b.req.p99)} | ${r(n.close.p50, b.close.p50)} | ${r(n.shared.p50, b.shared.p50)} | ${r(n.shared.p99, b.shared.p99)} | ${r(n.idleCpu, Math.max(1, b.idleCpu))} |`
        }).join('\n')}`
  const md = `## Node agent: Request time against the connection table (issue 10)

${new Date().toISOString().slice(0, 10)}, ${machine()}. Command: \`npx tsx bench/agent-table.ts\` (root; \`BENCH_TABLE_SIZES\`=${TABLE_SIZES.join(',')}, \`BENCH_TABLE_N\`=${TABLE_N}, \`BENCH_TABLE_ROUNDS\`=${TABLE_ROUNDS}${BEFORE === undefined ? '' : `, \`BENCH_BEFORE\`=${BEFORE}`}). Load average (1 min) ${loadavg()[0]?.toFixed(1)} at the end.
The agent as a real process, calls through its socket as in the section above. The open connections are real: KERNEL veths
made through the API, 16 in flight, from 50 client namespaces to one endpoint (service \`${BACKGROUND_SERVICE}\`) whose namespace
holds them all. At each size the agent idles 1 + ${TABLE_IDLE_MS / 1000} s (its CPU time over the last ${TABLE_IDLE_MS / 1000} s: "idle CPU"), then ${TABLE_N} Requests one
at a time (fewer when an agent needs more than ${TABLE_BUDGET_S} s for them: "Requests" is the count measured) from another client namespace, each timed alone, then their Closes; once to an endpoint alone in its namespace (the agent's
share: what the table costs it), once to the endpoint holding every open connection (the seed scenario: one firewall for every
client). "kernel": the same cross-connect built in-process by pkg/netlink, no agent, into that namespace. (×n): against the same
agent with ${first.toLocaleString('en-US')} open. "failed / retried": measured Requests and Closes the agent failed (so far in the
ladder; left out of the latencies), background Requests that had to be retried.${BEFORE === undefined ? ' No earlier build was measured in this run (BENCH_BEFORE unset).' : ' The two agents ran one after the other, one whole ladder each, never both alive.'}

Requests to an endpoint alone in its namespace:

| agent | open connections | Requests | Request p50 ms | Request p99 ms | Close p50 ms | Close p99 ms | kernel p50 ms | idle CPU ms/s | RSS MiB | failed / retried |
|---|---|---|---|---|---|---|---|---|---|---|
${ownRows.join('\n')}

Requests to the endpoint whose namespace holds every open connection:

| agent | open connections | Requests | Request p50 ms | Request p99 ms | Close p50 ms | kernel p50 ms |
|---|---|---|---|---|---|---|
${sharedRows.join('\n')}${ratios}`
  writeSection('agent-table', md)
  process.stdout.write(`${md}\n`)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await tableSection()
