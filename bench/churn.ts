// Requests while other connections close (pods starting while others go away): the agent with link deletions
// sent from a libuv pool thread (pkg/netlink/aside.ts, the default) against the same agent with them sent
// from its main thread (NSM_AGENT_NETLINK_ASIDE=off, as before), side by side in one run, rounds alternating.
// A round, for each agent in turn: 20 Requests alone (concurrency 1); then 32 connections made, and while
// they are closed 4 at a time, Requests one after the other until the last Close answered.
// Run: npx tsx bench/churn.ts (root). BENCH_CHURN_ROUNDS (default 8) sets the rounds.
import { NetworkServiceDefinition } from '../proto/gen/networkservice/networkservice'
import type { Connection } from '../proto/gen/networkservice/connection'
import { NetworkServiceRegistryDefinition } from '../proto/gen/registry/registry'
import type { AgentClient } from '../agent/client/client'
import { startAgent } from '../test/lib/agent'
import { kernelRequest, seedServices, serviceMessage } from '../test/lib/mesh'
import { netns as benchNetns, nsPath, pool, registerEndpoint, teardownList } from './lib/agent'
import { machine, median, ms, stats, writeSection } from './lib/report'

const ROUNDS = Number(process.env.BENCH_CHURN_ROUNDS ?? 8)
const ALONE = 20
const CLOSING = 32
const CLOSE_CONCURRENCY = 4
const cleanups = teardownList()

interface Subject {
  label: string
  client: AgentClient
  clients: string[]
  next: number
  alone: number[]
  during: number[]
  close: number[]
  closeWall: number[]
}

async function subject(label: string, env: Record<string, string>, key: string): Promise<Subject> {
  const ep = benchNetns(cleanups, `${key}ep`)
  const clients = Array.from({ length: 8 }, (_, i) => benchNetns(cleanups, `${key}c${i}`))
  const agent = await startAgent(cleanups, { env })
  for (const s of seedServices()) await agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
  await registerEndpoint(agent.client, `fw-${key}`, ep, ['10.200.0.0/16'])
  return { label, client: agent.client, clients, next: 0, alone: [], during: [], close: [], closeWall: [] }
}

function request(s: Subject): Promise<Connection> {
  const i = s.next++
  return s.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`ch-${i}`, nsPath(s.clients[i % s.clients.length] as string), `nsm${i}`))
}

const close = (s: Subject, c: Connection): Promise<unknown> => s.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, c)

async function timed<T>(out: number[] | undefined, call: () => Promise<T>): Promise<T> {
  const t0 = performance.now()
  const r = await call()
  out?.push(performance.now() - t0)
  return r
}

/** One round of one agent; `record` false for warm-up. */
async function round(s: Subject, record: boolean): Promise<void> {
  const alone: Connection[] = []
  for (let i = 0; i < ALONE; i++) alone.push(await timed(record ? s.alone : undefined, () => request(s)))
  for (const c of alone) await close(s, c)

  const doomed: Connection[] = []
  for (let i = 0; i < CLOSING; i += 4) doomed.push(...(await Promise.all([0, 1, 2, 3].map(() => request(s)))))
  let closing = true
  const t0 = performance.now()
  const closes = (async () => {
    await pool(CLOSE_CONCURRENCY, doomed.length, async (i) => {
      await timed(record ? s.close : undefined, () => close(s, doomed[i] as Connection))
    })
    if (record) s.closeWall.push(performance.now() - t0)
    closing = false
  })()
  const made: Connection[] = []
  while (closing) {
    const t1 = performance.now()
    const c = await request(s)
    // Only Requests that started and ended while Closes ran count.
    if (record && closing) s.during.push(performance.now() - t1)
    made.push(c)
  }
  await closes
  for (const c of made) await close(s, c)
}

async function main(): Promise<void> {
  const subjects = [await subject('link deletions from a pool thread (default)', {}, 'ca'), await subject('link deletions from the main thread (NSM_AGENT_NETLINK_ASIDE=off)', { NSM_AGENT_NETLINK_ASIDE: 'off' }, 'cm')]
  for (const s of subjects) await round(s, false)
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of r % 2 === 0 ? subjects : [...subjects].reverse()) await round(s, true)
  }
  const rows = subjects.map((s) => {
    const a = stats(s.alone)
    const d = stats(s.during)
    const c = stats(s.close)
    return `| ${s.label} | ${ms(a.p50)} / ${ms(a.p99)} | ${d.n} | ${ms(d.p50)} / ${ms(d.p99)} | ${ms(c.p50)} / ${ms(c.p99)} | ${ms(median(s.closeWall))} |`
  })
  const [on, off] = subjects as [Subject, Subject]
  const md = `## Requests while connections close (bench/churn.ts)

${new Date().toISOString().slice(0, 10)}, ${machine()}. Command: \`npx tsx bench/churn.ts\` (root; \`BENCH_CHURN_ROUNDS\`=${ROUNDS}).
Two agents (\`dist/nsm-agent\`, each with its own endpoint and client namespaces), local endpoint, KERNEL veth, rounds alternating
between them (one warm-up round each). A round: ${ALONE} Requests alone, one after the other; then ${CLOSING} connections made and
closed ${CLOSE_CONCURRENCY} at a time, while Requests go one after the other until the last Close answered (only those that started
and ended during the Closes count). Both agents are the same build: the second sends link deletions from its main thread, as the
agent did before pkg/netlink/aside.ts, where the kernel's ~15–20 ms inside each deletion's sendmsg held its event loop.

| agent | Request alone p50 / p99 ms | Requests during the Closes | during: p50 / p99 ms | Close p50 / p99 ms | ${CLOSING} Closes, wall ms (median of rounds) |
|---|---|---|---|---|---|
${rows.join('\n')}

During the Closes the Request p50 is ${ms(stats(on.during).p50)} ms with deletions from a pool thread against ${ms(stats(off.during).p50)} ms from the main
thread; ${ms(median(on.closeWall))} against ${ms(median(off.closeWall))} ms for the ${CLOSING} Closes.`
  writeSection('churn', md)
  process.stdout.write(`${md}\n`)
}

try {
  await main()
} finally {
  await cleanups.run()
}
