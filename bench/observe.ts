// What observability costs a Request (issue 14, ARCHITECTURE §13): NSM Request→UP and Close p50/p99 through
// the agent's socket (local endpoint, KERNEL, concurrency 1) with metrics (--metrics-address, scraped once a
// round) and tracing (OTEL_EXPORTER_OTLP_ENDPOINT, every span exported to an OTLP receiver in a process of its own)
// both on, against both off, and each alone, in one run, with a second agent with both off for the noise
// floor, and one with both on sampling 10 % of traces (OTEL_TRACES_SAMPLER). Six agents run side by side on the same
// namespaces; they take turns by rounds (BENCH_OBSERVE_ROUNDS, default 20, of BENCH_OBSERVE_N, default 40,
// Requests then their Closes each), the order rotating every round, so drift and noise spread over all of
// them alike. Before them BENCH_OBSERVE_WARMUP rounds (default 5) run the same way, unmeasured but for the
// agents' CPU: the code of OpenTelemetry's SDK and exporter is cold in a fresh agent (interpreted, then
// compiled), and costs several times its steady-state cost over the first few hundred calls; the warm-up
// column shows what that costs. Goal: both on within 5 % of both off.
// Run: npx tsx bench/observe.ts (root). On a loaded machine (check `uptime`) give it more rounds:
// BENCH_OBSERVE_ROUNDS=40.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { NetworkServiceDefinition } from '../proto/gen/networkservice/networkservice'
import type { Connection } from '../proto/gen/networkservice/connection'
import { NetworkServiceRegistryDefinition } from '../proto/gen/registry/registry'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import { startAgent, type RunningAgent } from '../test/lib/agent'
import { endpointRegistration, kernelRequest, seedServices, serviceMessage } from '../test/lib/mesh'
import { startOtlpReceiverIn } from '../test/lib/otlp'
import { CLK_TCK, machine, ms, stats, writeSection } from './lib/report'

const ROUNDS = Number(process.env.BENCH_OBSERVE_ROUNDS ?? 20)
const WARMUP = Number(process.env.BENCH_OBSERVE_WARMUP ?? 5)
const N = Number(process.env.BENCH_OBSERVE_N ?? 40)
const P = `bo${process.pid % 1000}`
const cleanups: Array<() => void | Promise<void>> = []
const td = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
const nsPath = (n: string): string => `/var/run/netns/${n}`

function netns(name: string): string {
  const n = `${P}${name}`
  try {
    execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' })
  } catch {
    // not there
  }
  execFileSync('ip', ['netns', 'add', n])
  execFileSync('ip', ['-n', n, 'link', 'set', 'lo', 'up'])
  cleanups.push(() => {
    execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' })
  })
  return n
}

interface Variant {
  label: string
  metrics: boolean
  tracing: boolean
  /** OTEL_TRACES_SAMPLER_ARG for parentbased_traceidratio; undefined: every trace. */
  sampled?: number
  agent?: RunningAgent
  metricsAddress?: string
  req: number[]
  close: number[]
  /** The agent's CPU time (user + system, ms) over its measured rounds. */
  cpuMs: number
  /** The same over the warm-up rounds. */
  warmCpuMs?: number
}

/** CPU time (user + system, ms) of process `pid` so far. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK
}

async function main(): Promise<void> {
  const load = loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')
  // The receiver in a process of its own: decoding every span costs the benchmark's event loop nothing.
  const otlp = await startOtlpReceiverIn(td, undefined, '127.0.0.1', true)
  const ep = netns('ep')
  const clients = Array.from({ length: 10 }, (_, i) => netns(`c${i}`))
  const variants: Variant[] = [
    { label: 'both off', metrics: false, tracing: false, req: [], close: [], cpuMs: 0 },
    // The same agent again: how far two agents doing the same work differ in this run (the noise floor).
    { label: 'both off (a second agent)', metrics: false, tracing: false, req: [], close: [], cpuMs: 0 },
    { label: 'metrics on', metrics: true, tracing: false, req: [], close: [], cpuMs: 0 },
    { label: 'tracing on', metrics: false, tracing: true, req: [], close: [], cpuMs: 0 },
    { label: 'metrics and tracing on', metrics: true, tracing: true, req: [], close: [], cpuMs: 0 },
    { label: 'metrics and tracing on, 10 % of traces sampled', metrics: true, tracing: true, sampled: 0.1, req: [], close: [], cpuMs: 0 },
  ]
  for (const v of variants) {
    v.agent = await startAgent(td, {
      args: v.metrics ? ['--metrics-address', '127.0.0.1:0'] : [],
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: v.tracing ? otlp.endpoint : '', ...(v.sampled === undefined ? {} : { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: String(v.sampled) }) },
    })
    const ready = v.agent.logs.find((l) => l.msg === 'ready')
    if (v.metrics) v.metricsAddress = String(ready?.metrics)
    for (const s of seedServices()) await v.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
    await v.agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name: 'fw-1', netns: nsPath(ep), labels: { app: 'firewall' }, pools: ['10.201.0.0/16'] }))
  }
  const round = async (v: Variant, r: number, keep: boolean): Promise<void> => {
    const agent = v.agent as RunningAgent
    const client = agent.client
    const cpu0 = cpuMs(agent.pid)
    const conns: Connection[] = []
    for (let i = 0; i < N; i++) {
      const req = kernelRequest(`ob-${v.label.length}-${v.metrics}-${v.tracing}-${r}-${i}`, nsPath(clients[i % clients.length] as string), `nsm${Math.floor(i / clients.length)}`)
      const a = performance.now()
      conns.push(await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, req))
      if (keep) v.req.push(performance.now() - a)
    }
    for (const c of conns) {
      const a = performance.now()
      await client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)
      if (keep) v.close.push(performance.now() - a)
    }
    if (keep) v.cpuMs += cpuMs(agent.pid) - cpu0
    else v.warmCpuMs = (v.warmCpuMs ?? 0) + cpuMs(agent.pid) - cpu0
    if (v.metricsAddress !== undefined) await (await fetch(`http://${v.metricsAddress}/metrics`)).text()
  }
  for (let r = 0; r < WARMUP; r++) {
    for (let k = 0; k < variants.length; k++) await round(variants[(r + k) % variants.length] as Variant, -1 - r, false)
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (let k = 0; k < variants.length; k++) await round(variants[(r + k) % variants.length] as Variant, r, true)
  }
  await new Promise((res) => setTimeout(res, 6000)) // the last batch of spans (the exporter's default 5 s delay)
  const spans = otlp.requests

  const base = variants[0] as Variant
  const b = { req: stats(base.req), close: stats(base.close) }
  const pct = (x: number, y: number): string => `${x >= y ? '+' : ''}${(((x - y) / y) * 100).toFixed(1)} %`
  const rows = variants.map((v) => {
    const s = stats(v.req)
    const c = stats(v.close)
    const vs = v === base ? '' : ` (${pct(s.p50, b.req.p50)} / ${pct(s.p99, b.req.p99)})`
    const cpu = v.cpuMs / s.n
    const warm = (v.warmCpuMs ?? 0) / (WARMUP * N)
    const baseWarm = (base.warmCpuMs ?? 0) / (WARMUP * N)
    return `| ${v.label} | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(c.p50)} | ${ms(c.p99)} |${vs === '' ? ' baseline' : vs} | ${ms(cpu)}${v === base ? '' : ` (${pct(cpu, base.cpuMs / b.req.n)})`} | ${ms(warm)}${v === base ? '' : ` (${pct(warm, baseWarm)})`} |`
  })
  const bothOn = variants.find((v) => v.metrics && v.tracing && v.sampled === undefined) as Variant
  const both = stats(bothOn.req)
  const floor = stats((variants[1] as Variant).req)
  const within = (x: number, y: number): boolean => (x - y) / y <= 0.05
  const verdict = [
    `p50 ${within(both.p50, b.req.p50) ? 'met' : 'missed'}`,
    `p99 ${within(both.p99, b.req.p99) ? 'met' : 'missed'}`,
    `CPU ${within(bothOn.cpuMs / both.n, base.cpuMs / b.req.n) ? 'met' : 'missed'}`,
  ].join(', ')
  // Spans per Request + Close of an agent tracing every call (two such agents, and the sampled one's ~10 %).
  const tracedPairs = (WARMUP + ROUNDS) * N * (variants.filter((v) => v.tracing && v.sampled === undefined).length + 0.1)
  const md = `## Observability overhead (bench/observe.ts)

${machine()}. NSM Request→UP and Close through the agent's socket (local endpoint, KERNEL veth, concurrency 1),
six agents side by side (both off twice: the second row is the noise floor) taking turns by rounds (${WARMUP} warm-up rounds, then ${ROUNDS} rounds × ${N} Requests then their Closes each, the order
rotating every round): metrics on = \`--metrics-address\` (scraped once a round), tracing on =
\`OTEL_EXPORTER_OTLP_ENDPOINT\` to an OTLP/HTTP receiver (test/lib/otlp.ts, a process of its own) that decodes every span
(${spans.toLocaleString('en-US')} spans received, ≈ ${(spans / tracedPairs).toFixed(1)} per Request + Close: the Request, one span per element that works in it, its kernel batches; the Close, the ipam and mechanism
elements' spans and its kernel batches).

| agent | Requests | Request p50 ms | Request p99 ms | Close p50 ms | Close p99 ms | Request vs both off (p50 / p99) | agent CPU ms per Request + Close | the same in the ${WARMUP * N} warm-up ones (cold code) |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Both on against both off: Request p50 ${pct(both.p50, b.req.p50)}, p99 ${pct(both.p99, b.req.p99)}, agent CPU per Request + Close
${pct(bothOn.cpuMs / both.n, base.cpuMs / b.req.n)} (goal ≤ 5 %: ${verdict}). The two agents with both off differ by ${pct(floor.p50, b.req.p50)} at p50
and ${pct(floor.p99, b.req.p99)} at p99 in this run: a latency difference within that is noise (\`uptime\` at the start: load ${load}). The agent's CPU time
per Request and its Close (from /proc: all its threads, the span exporter's included) is the steadier measure of what the work costs;
latency rows differ by a few percent between agents that do the same work. The sampled row is the knob an operator
has (\`OTEL_TRACES_SAMPLER=parentbased_traceidratio\`, \`OTEL_TRACES_SAMPLER_ARG=0.1\`): a trace a runtime or a peer
started keeps its own sampling decision.

What was cut since the first run (both on: p50 +10.8 %, p99 +23.4 %, CPU +16.5 %; tracing alone p50 +21 %; ~21 spans per
Request + Close, every element's span whether it worked or only handed the call on): an element whose call only hands it on
gets no span and no timing (\`Element.observed\` in agent/pipeline/chain.ts: validate, path, select and persist on Close, nse for
an endpoint without the NSM API), element span names and attributes are made once, a span's child context once; the spans are
serialized and sent on a worker thread (agent/tracing/worker-exporter.ts), so a batch's export no longer holds up the Request
that runs meanwhile; the metrics' and traces' element hooks nest once per call instead of through a list built per call.
Where that leaves it: the sampled row costs the agent nearly as much CPU as tracing every call, so most of what is left is not
the spans' recording and export but what runs for every call whether or not its trace is sampled (the hooks around each
element and kernel batch, OpenTelemetry's span start and end), much of it code that is still cold in an agent this young (the
warm-up column).`
  process.stdout.write(`${md}\n`)
  writeSection('observe', md)
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  })
  .finally(async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c()
      } catch {
        // best effort
      }
    }
  })
