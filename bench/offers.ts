// Endpoint pods offering many services (issue 10 item 21): CNI ADD and DEL of one pod whose
// `endpoint.networkservicemesh.io` annotation offers 1, 100 and 1,000 services, through dist/nsm and a real
// agent with its file store. With BENCH_BEFORE=DIR (an earlier build's dist/: DIR/nsm and DIR/nsm-agent)
// the same calls run against that build in the same run, so the rows compare (BENCH_BEFORE_LABEL names it).
// Run: npx tsx bench/offers.ts (root). BENCH_ROUNDS sets the rounds per size (default 3).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { execFileSync } from 'node:child_process'
import { startAgent, type RunningAgent } from '../test/lib/agent'
import { execPlugin } from '../test/conformance/exec'
import { machine, ms, stats, writeSection } from './lib/report'

const ROOT = resolve(import.meta.dirname, '..')
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SIZES = [1, 100, 1000]
const BEFORE = process.env.BENCH_BEFORE
if (BEFORE !== undefined && !['nsm', 'nsm-agent'].every((f) => existsSync(join(BEFORE, f)))) throw new Error(`BENCH_BEFORE=${BEFORE}: needs nsm and nsm-agent`)

const cleanups: Array<() => void | Promise<void>> = []
const td = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
const netns = `bo${process.pid % 10000}`
execFileSync('ip', ['netns', 'add', netns])
cleanups.push(() => void execFileSync('ip', ['netns', 'del', netns]))

interface Build {
  label: string
  nsm: string
  agent: RunningAgent
  podInfo: string
}

async function build(label: string, dist: string, withPolicy: boolean): Promise<Build> {
  const podInfo = mkdtempSync(join(tmpdir(), 'bench-offers-pods-'))
  cleanups.push(() => rmSync(podInfo, { recursive: true, force: true }))
  const args = ['--pod-info-dir', podInfo]
  if (withPolicy) {
    const config = join(podInfo, '..', `${podInfo.split('/').pop() ?? 'x'}.yaml`)
    writeFileSync(config, "endpointPolicy:\n  - services: ['*']\n    namespaces: [bulk]\n")
    cleanups.push(() => rmSync(config, { force: true }))
    args.push('--config', config)
  }
  const agent = await startAgent(td, { args, bundle: join(dist, 'nsm-agent') })
  return { label, nsm: join(dist, 'nsm'), agent, podInfo }
}

async function round(b: Build, size: number, i: number): Promise<{ add: number; del: number }> {
  const name = `many-${size}-${i}`
  const services = Array.from({ length: size }, (_, k) => `bulk${k}-${i}?cidr=172.30.180.0/24`).join(',')
  writeFileSync(join(b.podInfo, `bulk_${name}.json`), JSON.stringify({ labels: {}, annotations: { 'endpoint.networkservicemesh.io': services } }))
  const conf = { cniVersion: '1.1.0', name: 'bench-offers', type: 'nsm', socket: b.agent.socket, prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } }
  const call = { containerId: `${name}-${b.label}`, netns: `/var/run/netns/${netns}`, ifname: 'eth0', args: `K8S_POD_NAMESPACE=bulk;K8S_POD_NAME=${name}`, path: ROOT }
  let t0 = performance.now()
  const add = await execPlugin(b.nsm, { ...call, command: 'ADD', stdin: conf })
  const addMs = performance.now() - t0
  if (add.exitCode !== 0) throw new Error(`${b.label} ADD ${size}: ${add.stdout}`)
  t0 = performance.now()
  const del = await execPlugin(b.nsm, { ...call, command: 'DEL', stdin: conf })
  const delMs = performance.now() - t0
  if (del.exitCode !== 0) throw new Error(`${b.label} DEL ${size}: ${del.stdout}`)
  return { add: addMs, del: delMs }
}

try {
  const builds = [await build('now', join(ROOT, 'dist'), true)]
  if (BEFORE !== undefined) builds.push(await build('before', BEFORE, false))
  const rows: string[] = []
  for (const size of SIZES) {
    const samples = new Map(builds.map((b) => [b.label, { add: [] as number[], del: [] as number[] }]))
    // Interleaved, so both builds see the same machine noise.
    for (let i = 0; i < ROUNDS; i++) {
      for (const b of builds) {
        const r = await round(b, size, i)
        samples.get(b.label)?.add.push(r.add)
        samples.get(b.label)?.del.push(r.del)
      }
    }
    for (const b of builds) {
      const s = samples.get(b.label) ?? { add: [], del: [] }
      rows.push(`| ${size} | ${b.label === 'now' ? 'this build' : `before (${process.env.BENCH_BEFORE_LABEL ?? BEFORE ?? ""})`} | ${ms(stats(s.add).p50)} | ${ms(stats(s.del).p50)} |`)
    }
    if (BEFORE !== undefined) {
      const now = samples.get('now')
      const before = samples.get('before')
      if (now !== undefined && before !== undefined) rows.push(`| ${size} | ratio now / before | ${(stats(now.add).p50 / stats(before.add).p50).toFixed(2)} | ${(stats(now.del).p50 / stats(before.del).p50).toFixed(2)} |`)
    }
  }
  const table = [
    `Machine: ${machine()}. ${ROUNDS} rounds per size, builds interleaved. Wall time of the whole CNI call (the runtime's view: exec of dist/nsm, the agent's work, the answer), median.`,
    '',
    '| services offered | build | ADD p50 ms | DEL p50 ms |',
    '|---|---|---|---|',
    ...rows,
  ].join('\n')
  console.log(table)
  writeSection('offers', `## Endpoint pods offering many services (\`bench/offers.ts\`)\n\n${table}`)
} finally {
  for (const fn of cleanups.reverse()) await fn()
}
