// A bounded, deterministic fuzz of the two CNI binaries, exec'd as a runtime execs them (env + stdin):
// dist/nsm against a real agent (startMesh) with an endpoint in a test netns, and dist/nsm-ipam with a
// temp dataDir. A few hundred mutations of valid calls (every CNI_* variable missing, empty, overlong,
// with "/", "%", spaces or NUL-free junk; unknown commands; CNI_ARGS repeats, no "=", unknown keys, huge
// values; stdin truncated, of the wrong type in every field, deeply nested, 2 MiB of padding; CNI_NETNS a
// regular file, a directory, a FIFO) are generated from a seeded PRNG (NSM_FUZZ_SEED, printed). Valid
// ADD/CHECK/DEL sequences are mixed in and must succeed.
//
//   NSM_FUZZ_SEED=<n>          another seed (decimal or 0x hex)
//   NSM_FUZZ_ONLY=<id>[,<id>]  run only these steps (ids as printed with a failure or by NSM_FUZZ_LIST)
//   NSM_FUZZ_LIST=1            print every step's id and mutation, run none
//   NSM_FUZZ_VERBOSE=1         print every exec: time, exit code, stdout
//   NSM_FUZZ_STEPS=<n>         how many steps to run (default 56 of the ~360 generated: the 54 that always run and 2 more; NSM_FUZZ_STEPS=1000 runs all)
//
// Every answer: the process exits within PER_CALL_MS; exit 0 with a CNI result (for ADD: addresses and
// routes that parse, ip.interface indexes in range), or nothing for commands that print nothing, or
// non-zero with exactly {cniVersion, code, msg} and a known code; no stack trace; an input that is invalid
// for certain is refused; the agent answers every call (a dropped connection is 11, "try again", to an
// input that fails every time).
// An ADD a mutation did not make invalid is DEL'd again right away. After all calls: the host's links,
// addresses and routes are unchanged, the agent's connections and endpoints are what they were, the
// endpoint and pod netns hold only lo, nsm-ipam holds no reservation, and everything the test made is
// removed (also at teardown when the test fails).
//
// The steps are made in test/lib/fuzz-cases.ts (from fuzz-inputs.ts and fuzz-fields.ts), the files they point
// at in fuzz-paths.ts, the leak checks are in fuzz-leftovers.ts; this file runs the steps and judges the answers.
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stageNsmIpam } from '../conformance/exec'
import { fuzzSeed, judge, preview, Prng, rawExec, type RawOutcome } from '../lib/fuzz'
import { generateSteps, mayBlock, runQueue } from '../lib/fuzz-cases'
import { cniInputs, IPAM_SUBNET, VALID_NET, type Env, type FuzzCase, type Step, type Target, type ValidSeq } from '../lib/fuzz-inputs'
import { hostSnapshot, reservationRecords } from '../lib/fuzz-leftovers'
import { makeFuzzPaths } from '../lib/fuzz-paths'
import { linkNames, makeNetns, removeNetns, RUN } from '../lib/netns'
import { startMesh } from './nsm-fixture'

const SEED = fuzzSeed(0x5eed1)
const ONLY = new Set((process.env.NSM_FUZZ_ONLY ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''))
/** Per exec: a call that has not exited by then is killed and counted as a failure (a hang). */
const PER_CALL_MS = 10_000
/**
 * How many steps a run makes (NSM_FUZZ_STEPS overrides it): the calls at things that may block, the
 * mutations that found bugs before and the valid sequences always, then the others in the seed's order up
 * to this count, so the file stays within ~60 s on a 2-core machine (`npm test` runs it alone, after the
 * others: scripts/test.sh). Every step chosen runs; none is skipped.
 */
const STEPS = Number(process.env.NSM_FUZZ_STEPS ?? 56)
t.comment(`fuzz seed ${SEED} (0x${SEED.toString(16)}): NSM_FUZZ_SEED=${SEED} reproduces this run`)

// ---------------------------------------------------------------------------------------------------
// The world: agent, endpoint, pod netns, nsm-ipam's dirs, and the odd files CNI_NETNS may point at
// (test/lib/fuzz-paths.ts).

const mesh = await startMesh(t)
const ep = makeNetns(t, 'fe')
await mesh.endpoint({ name: 'fuzz-ep', netns: ep.path, pools: ['172.30.77.0/24'] })
const pod = makeNetns(t, 'fp')
mesh.pod('fuzz', 'fz', { labels: { app: 'fuzz' } })
const ipamBinDir = await stageNsmIpam(t)
const ipamBinary = join(ipamBinDir, 'nsm-ipam')
const paths = makeFuzzPaths(t)
const { ipamRoot, dataDir, runFile, runDir, runFifo, made, removeMade } = paths

// The host snapshot leaves out other runs' links, addresses and routes (test/lib/fuzz-leftovers.ts).
const hostBefore = hostSnapshot()
const connsBefore = await mesh.connectionIds()
const endpointsBefore = await mesh.endpointNames()

// ---------------------------------------------------------------------------------------------------
// Cases (test/lib/fuzz-cases.ts), from the seed.

type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]

const world = { mesh, podNetns: pod.path, endpointNetns: ep.path, ipamBinDir, paths }
const inputs = cniInputs(world)
const { nsmConf, ipamConf, baseEnv, baseStdin } = inputs
const steps = generateSteps(world, inputs, new Prng(SEED))

// One queue, both targets interleaved, run by CONCURRENCY workers. The calls are independent of one
// another, so the order they happen to run in does not change what each one sees: every case has its own
// container id and interface name; the valid sequences use networks of their own (a fuzzed GC closes only
// its network's connections); a hang (a FIFO, /dev/zero) holds one worker only.
const CONCURRENCY = 4
const queue: Step[] = runQueue(steps, paths.blocking, STEPS)
// NSM_FUZZ_LIST=1: print every step (id and mutation) and run none.
if (process.env.NSM_FUZZ_LIST !== undefined) {
  for (const s of queue) t.comment(`${s.id} ${'valid' in s ? 'valid ADD, CHECK, DEL' : s.label}`)
  ONLY.add('(none)')
}

// ---------------------------------------------------------------------------------------------------
// Running.

const binaryOf = (target: Target): string => (target === 'nsm' ? mesh.binary : ipamBinary)
const execEnv = (env: Env): Env => ({ PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env })

interface Finding {
  id: string
  label: string
  why: string
  env: Env
  stdin: string
  exit: number | null
  signal: string | null
  ms: number
  stdout: string
  stderr: string
}

const findings: Finding[] = []
const accepted: string[] = []
const codes: Record<string, number> = {}
/** Codes worth a look whatever the input (transient, internal, agent unreachable): listed in the output. */
const RARE = new Set([5, 11, 100, 111])
const rare: string[] = []
let calls = 0
let slowest = { id: '', ms: 0 }

function envDiff(target: Target, id: string, env: Env): Env {
  const b = baseEnv(target, 'ADD', id)
  const d: Env = {}
  for (const k of new Set([...Object.keys(b), ...Object.keys(env)])) {
    if (k === 'CNI_CONTAINERID' && env[k] === b[k]) continue
    if (env[k] !== b[k]) d[k] = env[k] === undefined ? '<unset>' : preview(env[k] ?? '', 80)
  }
  return d
}

function record(c: { id: string; label: string; target: Target; env: Env; stdin: Buffer }, o: RawOutcome, why: string): void {
  findings.push({
    id: c.id,
    label: c.label,
    why,
    env: envDiff(c.target, c.id, c.env),
    stdin: preview(c.stdin, 200),
    exit: o.exitCode,
    signal: o.signal,
    ms: o.ms,
    stdout: preview(o.stdout, 400),
    stderr: preview(o.stderr, 600),
  })
}

async function run(c: FuzzCase): Promise<RawOutcome> {
  const o = await rawExec(binaryOf(c.target), execEnv(c.env), c.stdin, PER_CALL_MS)
  calls++
  if (o.ms > slowest.ms) slowest = { id: c.id, ms: o.ms }
  if (process.env.NSM_FUZZ_VERBOSE !== undefined) t.comment(`${c.id} ${o.ms} ms exit ${String(o.exitCode)} ${c.label.slice(0, 60)} -> ${preview(o.stdout, 300)}`)
  return o
}

async function fuzzCase(c: FuzzCase): Promise<void> {
  const command = c.env.CNI_COMMAND ?? ''
  const o = await run(c)
  const v = judge(command, o)
  if (!v.ok) {
    record(c, o, v.why)
  } else {
    const key = `${c.target} ${v.kind === 'error' ? `code ${String(v.code)}` : `exit 0 (${v.kind})`}`
    codes[key] = (codes[key] ?? 0) + 1
    if (v.kind === 'error' && RARE.has(v.code ?? 0)) rare.push(`${c.id} [${c.label}] -> ${String(v.code)}: ${(JSON.parse(o.stdout) as { msg: string }).msg.slice(0, 140)}`)
    if (v.kind !== 'error' && c.mustFail) record(c, o, `accepted an invalid input (exit 0)`)
    // The agent dropped the call (closed the connection without an answer, ECONNRESET/EPIPE): the shim can
    // only say 11, "try again", to an input that will fail every time; a plugin process answers it.
    if (v.kind === 'error' && v.code === 11 && /ECONNRESET|EPIPE|without an answer/.test(o.stdout)) record(c, o, 'the agent dropped the call without an answer: 11 (try again) for an input that fails every time')
  }
  // An ADD that succeeded (or timed out: it may have done its work) is DEL'd again with the same input.
  if (command === 'ADD' && (o.exitCode === 0 || o.timedOut)) {
    if (o.exitCode === 0) accepted.push(`${c.id} [${c.label}]`)
    const del = { ...c, id: `${c.id}/del`, label: `${c.label}: cleanup DEL`, env: { ...c.env, CNI_COMMAND: 'DEL' }, mustFail: false }
    const d = await run(del)
    const dv = judge('DEL', d)
    if (!dv.ok || d.exitCode !== 0) {
      record(del, d, dv.ok ? `cleanup DEL of an accepted ADD failed (code ${String(dv.code)})` : dv.why)
      // Fall back to the base configuration so that the later checks see only the real leak, if any.
      const b = baseStdin(c.target, 'DEL')
      await run({ ...del, id: `${c.id}/del2`, stdin: Buffer.from(JSON.stringify(b)) })
    }
  }
}

/** ADD, CHECK with the ADD's result, DEL: each must succeed, and the datapath/reservation is there and gone. */
async function validSeq(s: ValidSeq, tt: TapTest): Promise<void> {
  const ifname = s.target === 'nsm' ? `v${s.n}` : `eth${s.n}`
  const env: Env = { ...baseEnv(s.target, 'ADD', s.id), CNI_IFNAME: ifname, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=fz' }
  const net = `${VALID_NET[s.target]}${s.n}`
  const conf = s.target === 'nsm' ? nsmConf({ name: net }) : ipamConf({}, { name: net })
  const c: FuzzCase = { id: s.id, target: s.target, label: `valid ADD ${s.n}`, env, stdin: Buffer.from(JSON.stringify(conf)), mustFail: false }
  const bad = (step: string, o: RawOutcome, why: string): void => {
    record({ ...c, label: `valid ${step} ${s.n}` }, o, why)
    tt.fail(`${s.id}: the valid ${step} failed: ${why}`, { stdout: o.stdout, stderr: o.stderr })
  }
  const a = await run(c)
  const av = judge('ADD', a)
  if (!av.ok || a.exitCode !== 0) return bad('ADD', a, av.ok ? `exit ${String(a.exitCode)}` : av.why)
  const result = JSON.parse(a.stdout) as { ips?: Array<{ address: string }>; interfaces?: Array<{ name: string; sandbox?: string }> }
  if (s.target === 'nsm') {
    if (!(result.interfaces ?? []).some((i) => i.name === ifname && i.sandbox === pod.path)) bad('ADD', a, 'result lacks the pod interface')
    if (!linkNames(pod.name).includes(ifname)) bad('ADD', a, `${ifname} not in the pod netns`)
  } else {
    const addr = result.ips?.[0]?.address ?? ''
    if (!addr.startsWith('10.213.0.')) bad('ADD', a, `address ${addr} not from ${IPAM_SUBNET}`)
    if (reservations(net).length !== 1) bad('ADD', a, `expected one reservation, found ${reservations(net).length}`)
  }
  const ch = await run({ ...c, env: { ...env, CNI_COMMAND: 'CHECK' }, stdin: Buffer.from(JSON.stringify({ ...conf, prevResult: result })) })
  const chv = judge('CHECK', ch)
  if (!chv.ok || ch.exitCode !== 0) bad('CHECK', ch, chv.ok ? `exit ${String(ch.exitCode)}` : chv.why)
  const d = await run({ ...c, env: { ...env, CNI_COMMAND: 'DEL' } })
  const dv = judge('DEL', d)
  if (!dv.ok || d.exitCode !== 0) bad('DEL', d, dv.ok ? `exit ${String(d.exitCode)}` : dv.why)
  if (s.target === 'nsm' && linkNames(pod.name).includes(ifname)) bad('DEL', d, `${ifname} still in the pod netns`)
  if (s.target === 'ipam' && reservations(net).length !== 0) bad('DEL', d, 'a reservation remains')
  codes[`${s.target} valid sequences`] = (codes[`${s.target} valid sequences`] ?? 0) + 1
}

/** Every reservation record under the nsm-ipam root (dataDir and anywhere a mutated dataDir led). */
function reservations(network?: string): string[] {
  return reservationRecords(network === undefined ? ipamRoot : join(dataDir, network))
}

const total = steps.nsm.length + steps.ipam.length
t.comment(`${steps.nsm.length} nsm steps, ${steps.ipam.length} nsm-ipam steps (${total}), ${CONCURRENCY} at a time; ${PER_CALL_MS} ms per call; ${queue.length} steps run (NSM_FUZZ_STEPS)`)

t.test('fuzz: every answer exits, has the CNI shape and a known code, and no stack trace', async (tt) => {
  const started = Date.now()
  const runAll = async (steps: Step[]): Promise<void> => {
    let next = 0
    const worker = async (): Promise<void> => {
      for (;;) {
        const s = steps[next++]
        if (s === undefined) return
        if (ONLY.size > 0 && !ONLY.has(s.id)) continue
        if ('valid' in s) await validSeq(s, tt)
        else await fuzzCase(s)
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  }
  // The steps naming a path that may block or an entry this file put under /var/run/netns run first; then
  // those entries go at once, not at teardown: iproute2 opens every entry there to name a link's peer netns
  // (`ip link show`), and would wait on the FIFO for ever if a kill left it behind.
  const runEntries = [runFile, runDir, runFifo]
  const usesRunEntries = (s: Step): boolean => !('valid' in s) && (Object.values(s.env).some((v) => runEntries.includes(v)) || runEntries.some((p) => s.stdin.includes(p)))
  const first = new Set(queue.filter((s) => mayBlock(s, paths.blocking) || usesRunEntries(s)))
  await runAll([...first])
  for (const p of runEntries) rmSync(p, { recursive: true, force: true })
  await runAll(queue.filter((s) => !first.has(s)))
  const ms = Date.now() - started
  tt.comment(`${calls} execs in ${ms} ms (slowest ${slowest.id}: ${slowest.ms} ms)`)
  for (const [k, n] of Object.entries(codes).sort()) tt.comment(`  ${k}: ${n}`)
  tt.comment(`${accepted.length} mutated ADDs were accepted (and DEL'd): ${accepted.slice(0, 40).join('; ')}${accepted.length > 40 ? ' ...' : ''}`)
  for (const r of rare.sort()) tt.comment(`  ${r}`)
  for (const f of findings) {
    tt.fail(`${f.id} [${f.label}]: ${f.why}`, { repro: `NSM_FUZZ_SEED=${SEED} NSM_FUZZ_ONLY=${f.id.replace(/\/.*/, '')} npx tap test/integration/hardening-fuzz.test.ts`, ...f })
  }
  tt.equal(findings.length, 0, 'no findings')
})

t.test('afterwards: nothing leaked on the host, in the agent, in the namespaces or in nsm-ipam\'s store', async (tt) => {
  const host = hostSnapshot()
  tt.same(host.links, hostBefore.links, 'host links unchanged')
  tt.same(host.addrs, hostBefore.addrs, 'host addresses unchanged')
  tt.same(host.routes, hostBefore.routes, 'host routes unchanged')
  tt.same(await mesh.connectionIds(), connsBefore, 'the agent\'s connections are what they were')
  tt.same(await mesh.endpointNames(), endpointsBefore, 'the agent\'s endpoints are what they were')
  tt.same(linkNames(ep.name), ['lo'], 'the endpoint netns holds only lo')
  tt.same(linkNames(pod.name), ['lo'], 'the pod netns holds only lo')
  tt.same(reservations(), [], 'nsm-ipam holds no reservation')
  let alive = true
  try {
    process.kill(mesh.agent.pid, 0)
  } catch {
    alive = false
  }
  tt.ok(alive, 'the agent is still running')
  // The agent still serves a valid call after all of it.
  const s = await rawExec(mesh.binary, execEnv({ CNI_COMMAND: 'STATUS', CNI_PATH: mesh.binDir }), Buffer.from(JSON.stringify(nsmConf())), PER_CALL_MS)
  tt.equal(s.exitCode, 0, `STATUS after the fuzz: ${s.stdout}`)
})

t.test('everything the test made is removed', async (tt) => {
  removeMade()
  removeNetns(pod.name)
  removeNetns(ep.name)
  for (const p of [...made, pod.path, ep.path]) tt.notOk(existsSync(p), `${p} removed`)
  // A netns this run made under another name (none expected) would carry the run prefix.
  const left = readdirSync('/var/run/netns').filter((n) => n.startsWith(`t${RUN}f`))
  tt.same(left, [], 'no netns of this run remains')
})
