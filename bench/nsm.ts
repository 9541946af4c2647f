// The nsm CNI plugin: ADD and DEL latency of the plugin exec'd as a runtime does (spawn, env,
// configuration on stdin, wait for exit) with the real agent building a KERNEL cross-connect to a local
// endpoint, in both forms it ships in: the JS bundle dist/nsm (exec'd through its `#!/usr/bin/env node`
// line) and the self-contained executable dist/sea/nsm that deploy/install-cni.sh installs; side by side
// in one run with Debian's reference ptp + host-local doing the same kind of job (a veth into the pod with
// an address) and `node -e 0` as the floor of any Node.js process; then throughput with 16 concurrent
// ADDs per round (ADD/s, errors, leaks after the DELs), per form.
// With BENCH_BEFORE=DIR (a dist/ of an earlier build: DIR/nsm, DIR/sea/nsm, DIR/nsm-agent, each plugin
// talking to its own agent) the earlier plugin is measured too, in the same rounds: before and after
// side by side. Targets: ADD p50 <= 1.1 x `node -e 0` p50, no slower than before; >= 50 ADD/s, 0 errors,
// 0 leaks.
//
//   npx tsx bench/nsm.ts        (root; BENCH_N samples, BENCH_ROUNDS rounds of BENCH_PAR parallel ADDs)
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'
import { startMesh, WEB, type Mesh } from '../test/integration/nsm-fixture'
import { ensureSea } from '../test/lib/sea'
import { childCpuMs, machine, ms, stats, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 60)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10)
const PAR = Number(process.env.BENCH_PAR ?? 16)

const cleanups: Array<() => void | Promise<void>> = []
const teardown = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
let cleaned = false
async function cleanup(): Promise<void> {
  if (cleaned) return
  cleaned = true
  for (const c of cleanups.splice(0).reverse()) await c()
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanup().then(() => process.exit(130)))

const tag = `bn${process.pid % 10000}`
const netnses: string[] = []
function netns(name: string): string {
  spawnSync('ip', ['netns', 'add', name])
  netnses.push(name)
  return `/var/run/netns/${name}`
}
cleanups.push(() => {
  for (const n of netnses) spawnSync('ip', ['netns', 'del', n])
})
const work = mkdtempSync(join(tmpdir(), 'nsm-bench-nsm-'))
cleanups.push(() => rmSync(work, { recursive: true, force: true }))

const BEFORE = process.env.BENCH_BEFORE
if (BEFORE !== undefined && !['nsm', 'sea/nsm', 'nsm-agent'].every((f) => existsSync(join(BEFORE, f)))) throw new Error(`BENCH_BEFORE=${BEFORE}: needs nsm, sea/nsm and nsm-agent`)
const epPath = netns(`${tag}ep`)
/** An agent (this build's, or the earlier one's) with the bench endpoint registered. */
async function meshWith(agentBundle?: string): Promise<Mesh> {
  const m = await startMesh(teardown, { network: 'bench', ...(agentBundle === undefined ? {} : { agentBundle }) })
  await m.endpoint({ name: 'bench-ep', netns: epPath, pools: [agentBundle === undefined ? '172.20.0.0/16' : '172.21.0.0/16'] })
  return m
}
/** A private copy of an executable (a build beside the benchmark may replace it). */
function privateCopy(src: string, name: string): string {
  const dst = join(work, name)
  copyFileSync(src, dst)
  chmodSync(dst, 0o755)
  return dst
}
interface Form {
  key: string
  label: string
  bin: string
  mesh: Mesh
  conf: string
}
const mesh = await meshWith()
const forms: Form[] = [
  { key: 'nsm', label: '`dist/nsm`', bin: mesh.binary, mesh, conf: '' },
  { key: 'sea', label: '`dist/sea/nsm`', bin: privateCopy(ensureSea('nsm'), 'nsm-sea'), mesh, conf: '' },
]
if (BEFORE !== undefined) {
  const old = await meshWith(join(BEFORE, 'nsm-agent'))
  forms.push({ key: 'before nsm', label: 'before: `dist/nsm`', bin: privateCopy(join(BEFORE, 'nsm'), 'nsm-before'), mesh: old, conf: '' })
  forms.push({ key: 'before sea', label: 'before: `dist/sea/nsm`', bin: privateCopy(join(BEFORE, 'sea/nsm'), 'nsm-sea-before'), mesh: old, conf: '' })
}
for (const f of forms) f.conf = JSON.stringify(f.mesh.conf({ cniVersion: '1.0.0', networkService: WEB }))
const PTP = '/usr/lib/cni/ptp'

const ptpConf = JSON.stringify({ cniVersion: '1.0.0', name: 'bench-ptp', type: 'ptp', ipam: { type: 'host-local', subnet: '10.217.0.0/16', dataDir: join(work, 'host-local') } })
const env = (command: string, id: string, ns: string) => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  CNI_COMMAND: command,
  CNI_CONTAINERID: id,
  CNI_NETNS: ns,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/usr/lib/cni',
})

const cpu = new Map<string, number>()

function timed(bin: string, args: string[], command: string, id: string, ns: string, input: string, kind: string | undefined): number {
  const c0 = childCpuMs()
  const t0 = process.hrtime.bigint()
  const r = spawnSync(bin, args, { env: env(command, id, ns), input, stdio: ['pipe', 'pipe', 'pipe'] })
  const dt = Number(process.hrtime.bigint() - t0) / 1e6
  if (r.status !== 0) throw new Error(`${bin} ${command} ${id}: exit ${r.status}: ${r.stdout.toString()} ${r.stderr.toString()}`)
  if (kind !== undefined) cpu.set(kind, (cpu.get(kind) ?? 0) + childCpuMs() - c0)
  return dt
}

// --- latency, interleaved ---------------------------------------------------------------------------
const pod = netns(`${tag}lat`)
const KINDS = ['floor', ...forms.flatMap((f) => [`${f.key} VERSION`, `${f.key} ADD`, `${f.key} DEL`]), 'ptp ADD', 'ptp DEL']
const lat: Record<string, number[]> = Object.fromEntries(KINDS.map((k) => [k, []]))
const load0 = loadavg()[0] as number
for (let i = -5; i < N; i++) {
  const keep = i >= 0
  const k = (name: string): string | undefined => (keep ? name : undefined)
  const s: Record<string, number> = {}
  s.floor = timed(process.execPath, ['-e', '0'], 'VERSION', 'x', '', '', k('floor'))
  for (const f of forms) {
    const id = `lat-${f.key.replace(' ', '-')}-${i + 5}`
    s[`${f.key} VERSION`] = timed(f.bin, [], 'VERSION', 'x', '', '{"cniVersion":"1.0.0"}', k(`${f.key} VERSION`))
    s[`${f.key} ADD`] = timed(f.bin, [], 'ADD', id, pod, f.conf, k(`${f.key} ADD`))
    s[`${f.key} DEL`] = timed(f.bin, [], 'DEL', id, pod, f.conf, k(`${f.key} DEL`))
  }
  s['ptp ADD'] = timed(PTP, [], 'ADD', `lat-${i + 5}`, pod, ptpConf, k('ptp ADD'))
  s['ptp DEL'] = timed(PTP, [], 'DEL', `lat-${i + 5}`, pod, ptpConf, k('ptp DEL'))
  if (keep) for (const [name, v] of Object.entries(s)) lat[name]?.push(v)
}

// --- throughput: PAR concurrent ADDs, then their DELs, per form -----------------------------------
function call(bin: string, command: string, id: string, ns: string, conf: string): Promise<{ code: number; out: string }> {
  return new Promise((res, rej) => {
    const c = spawn(bin, [], { env: env(command, id, ns), stdio: ['pipe', 'pipe', 'ignore'] })
    let out = ''
    c.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    c.on('error', rej)
    c.on('close', (code) => res({ code: code ?? -1, out }))
    c.stdin.end(conf)
  })
}
const pods = Array.from({ length: PAR }, (_, i) => netns(`${tag}p${i}`))
const links = (ns: string): number => (JSON.parse(spawnSync('ip', ['-n', ns, '-j', 'link', 'show']).stdout.toString()) as unknown[]).length - 1
interface Throughput {
  seconds: number[]
  addErrors: number
  delErrors: number
  firstError: string
}
async function throughput(f: Form): Promise<Throughput> {
  const r: Throughput = { seconds: [], addErrors: 0, delErrors: 0, firstError: '' }
  for (let round = 0; round < ROUNDS; round++) {
    const ids = pods.map((_, i) => `par-${f.key.replace(' ', '-')}-${round}-${i}`)
    const t0 = process.hrtime.bigint()
    const adds = await Promise.all(ids.map((id, i) => call(f.bin, 'ADD', id, pods[i] as string, f.conf)))
    r.seconds.push(Number(process.hrtime.bigint() - t0) / 1e9)
    r.addErrors += adds.filter((o) => o.code !== 0).length
    r.firstError ||= adds.find((o) => o.code !== 0)?.out ?? ''
    const dels = await Promise.all(ids.map((id, i) => call(f.bin, 'DEL', id, pods[i] as string, f.conf)))
    r.delErrors += dels.filter((o) => o.code !== 0).length
  }
  return r
}
const tput: Record<string, Throughput> = {}
for (const f of forms) tput[f.key] = await throughput(f)
let leakedConnections = 0
for (const m of new Set(forms.map((f) => f.mesh))) leakedConnections += (await m.agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})).connections
const leakedLinks = links(`${tag}ep`) + pods.reduce((a, _, i) => a + links(`${tag}p${i}`), 0) + links(`${tag}lat`)
const hostLocalLeft = (() => {
  try {
    return readdirSync(join(work, 'host-local', 'bench-ptp')).filter((f) => /^\d/.test(f)).length
  } catch {
    return 0
  }
})()
const load1 = loadavg()[0] as number

// --- what the plugin loads ----------------------------------------------------------------------------
const fileKiB = statSync(mesh.binary).size / 1024
const builtins = [...new Set([...readFileSync(mesh.binary, 'utf8').matchAll(/require\("(node:[a-z0-9_/]+)"\)/g)].map((m) => m[1]))].sort()
await cleanup()

// --- report ---------------------------------------------------------------------------------------------
const p90 = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)] as number
}
const LABEL: Record<string, string> = {
  floor: '`node -e 0` (floor)',
  'ptp ADD': 'ptp + host-local ADD',
  'ptp DEL': 'ptp + host-local DEL',
}
const formOf = (name: string): Form | undefined => forms.find((f) => name.startsWith(`${f.key} `))
const label = (name: string): string => LABEL[name] ?? `${formOf(name)?.label ?? name} ${name.slice((formOf(name)?.key.length ?? 0) + 1)}`
const floor50 = stats(lat.floor ?? []).p50
const p50 = (name: string): number => stats(lat[name] ?? []).p50
const ratio = (name: string): string => (p50(name) / floor50).toFixed(2)
const row = (name: string): string => {
  const x = stats(lat[name] ?? [])
  return `| ${label(name)} | ${x.n} | ${ms(x.p50)} | ${ms(p90(lat[name] ?? []))} | ${ms(x.p99)} | ${ratio(name)} | ${ms((cpu.get(name) ?? NaN) / x.n)} |`
}
const verdict = (name: string): string => `${p50(name) <= 1.1 * floor50 ? '**met**' : '**missed**'} (${ms(p50(name))} ms, ${ratio(name)} ×)`
const cpuAbove = (name: string): string => ms(((cpu.get(name) ?? NaN) - (cpu.get('floor') ?? NaN)) / N)
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
const rate = (f: Form): number => PAR / median(tput[f.key]?.seconds ?? [])
const tputRow = (f: Form): string => {
  const t = tput[f.key] as Throughput
  const sorted = [...t.seconds].sort((a, b) => a - b)
  return `| ${f.label} | ${ROUNDS * PAR} | ${median(t.seconds).toFixed(2)} (${(sorted[0] as number).toFixed(2)}–${(sorted[sorted.length - 1] as number).toFixed(2)}) | ${rate(f).toFixed(1)} | ${t.addErrors} | ${t.delErrors} |`
}
const now = forms.filter((f) => !f.key.startsWith('before'))
const errors = forms.reduce((a, f) => a + (tput[f.key]?.addErrors ?? 0) + (tput[f.key]?.delErrors ?? 0), 0)
const firstError = forms.map((f) => tput[f.key]?.firstError ?? '').find((e) => e !== '') ?? ''
const beforeLine =
  BEFORE === undefined
    ? 'No earlier build was measured in this run (BENCH_BEFORE unset).'
    : `Before and after, same run: ADD p50 ${ratio('before sea ADD')} × → ${ratio('sea ADD')} × (executable), ${ratio('before nsm ADD')} × → ${ratio('nsm ADD')} × (JS file); 16-way throughput ${rate(forms[2] as Form).toFixed(1)} → ${rate(forms[0] as Form).toFixed(1)} ADD/s (JS file), ${rate(forms[3] as Form).toFixed(1)} → ${rate(forms[1] as Form).toFixed(1)} ADD/s (executable). No slower than before: ${p50('sea ADD') / floor50 <= p50('before sea ADD') / floor50 && p50('nsm ADD') / floor50 <= p50('before nsm ADD') / floor50 ? 'met' : '**missed**'}.`
const date = new Date().toISOString().slice(0, 10)
const md = `## nsm CNI plugin: ADD / DEL latency and throughput

${date}, ${machine()}. Command: \`npx tsx bench/nsm.ts\` (as root; \`BENCH_N\`=${N}, \`BENCH_ROUNDS\`=${ROUNDS}, \`BENCH_PAR\`=${PAR}${BEFORE === undefined ? '' : `, \`BENCH_BEFORE\`=${BEFORE}`}). Load average (1 min) ${load0.toFixed(1)} at the start, ${load1.toFixed(1)} at the end.
Every call is exec'd as a runtime does (spawn, CNI_* environment, configuration on stdin, wait for exit), \`cniVersion\` 1.0.0, interleaved in each round (floor, then VERSION, ADD, DEL of each form, then ptp ADD, DEL) so all see the same noise; ${N} rounds after 5 warm-up rounds. Forms: \`dist/nsm\`, the JS file, exec'd directly (its \`#!/usr/bin/env node\` line runs the machine's node), and \`dist/sea/nsm\`, the self-contained executable that \`deploy/install-cni.sh\` installs${BEFORE === undefined ? '' : '; "before" rows are the earlier build (its own plugin and agent, in the same rounds)'}. nsm ADD: an attachment with \`networkService\` in the netconf; the agent (a real process) selects the local endpoint, allocates a /32 pair and builds a veth cross-connect into the pod netns. ptp ADD: Debian's Go ptp, which execs host-local and builds a veth to the host.

| call | n | p50 ms | p90 ms | p99 ms | p50 / floor p50 | CPU ms per call (user+sys, mean) |
|---|---|---|---|---|---|---|
${KINDS.map(row).join('\n')}

Target ADD p50 ≤ 1.1 × \`node -e 0\` p50 = ${ms(1.1 * floor50)} ms: \`dist/sea/nsm\` (what is installed) ${verdict('sea ADD')}; \`dist/nsm\` run by node ${verdict('nsm ADD')}. ${beforeLine} The CPU column counts the plugin process only (the agent's work is in another process): an ADD costs ${cpuAbove('sea ADD')} ms (executable) / ${cpuAbove('nsm ADD')} ms (JS file) of CPU above \`node -e 0\`.

Throughput: ${ROUNDS} rounds of ${PAR} concurrent ADDs (each into its own pod netns, all to the same endpoint), each round followed by the ${PAR} DELs, also concurrent.

| plugin | ADDs | wall s per round p50 (min–max) | ADD/s (p50 round) | failed ADDs | failed DELs |
|---|---|---|---|---|---|
${forms.map(tputRow).join('\n')}

Left after every DEL of every form: ${leakedConnections} connections in the agents, ${leakedLinks} links in the pods and the endpoint, ${hostLocalLeft} host-local reservations. Targets: ≥ 50 ADD/s (${now.every((f) => rate(f) >= 50) ? 'met' : '**missed**'}), 0 errors (${errors === 0 ? 'met' : `**missed**: ${firstError.trim().slice(0, 200)}`}), 0 leaks (${leakedConnections + leakedLinks === 0 ? 'met' : '**missed**'}).

What a call costs above \`node -e 0\`:
- \`dist/nsm\` is a ${fileKiB.toFixed(0)} KiB bundle (\`cni/nsm/shim.ts\`, \`cni/nsm/frame.ts\`) that requires ${builtins.map((b) => `\`${b}\``).join(', ')} and nothing else; it sends the whole call as one frame over the agent's unix socket and waits for one answer. Everything else (configuration, plan, pipeline, result) runs in the agent, already compiled and warm.
- Plugins before issue 9 carried their own HTTP/2, HPACK and protobuf code and a trained V8 code cache to keep that cost down, and needed one or more gRPC round trips per call; set BENCH_BEFORE to an earlier build's dist/ to compare with any of them.
- Most of a DEL's time is the agent waiting for the kernel to delete the veth pair (an RCU grace period; ptp's DEL waits for the same).
- The reference Go plugin does its whole ADD in ${ms(p50('ptp ADD'))} ms.
`
writeSection('nsm', md)
process.stdout.write(md)
process.exit(0)
