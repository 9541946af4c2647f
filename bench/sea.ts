// The self-contained CNI plugins (Node single executable applications, scripts/sea.mjs) against the JS
// bundles run by node, with `node -e 0` as the floor of any Node.js process: start-up (CNI VERSION, spawn to
// exit) and one real nsm-ipam ADD and DEL, interleaved so that every variant sees the same machine noise.
// Also the build time and size of an executable, and what the SEA's own code cache of its main script
// (useCodeCache, the default of scripts/sea.mjs) gains: since the main script is a small loader and the
// plugin's trained code cache is an asset in both variants (scripts/code-cache.mjs), little. The executables are built fresh into a private temp dir (builds running beside the
// benchmark rewrite dist/); so is the bundle copy. Run: npx tsx bench/sea.ts (root: ADD needs a netns).
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { childCpuMs, machine, ms, stats, type Stats, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 60)
const ROOT = resolve(import.meta.dirname, '..')
for (const f of ['dist/nsm-ipam', 'node_modules/postject']) if (!existsSync(join(ROOT, f))) throw new Error(`${f} missing: run npm run setup`)
const withNsm = existsSync(join(ROOT, 'dist/nsm'))
const plugins = ['nsm-ipam', ...(withNsm ? ['nsm'] : [])]

const work = mkdtempSync(join(tmpdir(), 'nsm-bench-sea-'))
const netns = `bsea${process.pid % 100000}`
spawnSync('ip', ['netns', 'add', netns])
process.on('exit', () => {
  spawnSync('ip', ['netns', 'del', netns])
  rmSync(work, { recursive: true, force: true })
})

// Private copies of the bundles (dist/package.json makes them CommonJS).
const bundles = join(work, 'bundles')
mkdirSync(bundles)
writeFileSync(join(bundles, 'package.json'), '{ "type": "commonjs" }\n')
for (const p of plugins) copyFileSync(join(ROOT, 'dist', p), join(bundles, p))

/** A forced build through scripts/sea.mjs into dir; returns its wall time in seconds. */
function build(dir: string, extra: string[]): number {
  const t0 = process.hrtime.bigint()
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts/sea.mjs'), '--force', `--from=${bundles}`, `--out=${dir}`, ...extra, ...plugins], { cwd: ROOT, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`scripts/sea.mjs: ${r.stderr}`)
  return Number(process.hrtime.bigint() - t0) / 1e9
}
const plainDir = join(work, 'sea')
const noCacheDir = join(work, 'sea-no-code-cache')
const buildPlain = build(plainDir, [])
const buildNoCache = build(noCacheDir, ['--no-code-cache'])
// The incremental path a second `npm test` or `npm run build:sea` takes.
const t0 = process.hrtime.bigint()
const again = spawnSync(process.execPath, [join(ROOT, 'scripts/sea.mjs'), `--from=${bundles}`, `--out=${plainDir}`, ...plugins], { cwd: ROOT, encoding: 'utf8' })
const upToDate = Number(process.hrtime.bigint() - t0) / 1e9
if (again.status !== 0 || again.stderr.includes('built')) throw new Error(`scripts/sea.mjs rebuilt unchanged bundles: ${again.stderr}`)

const dataDir = join(work, 'data')
const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'bench-sea', type: 'ptp', ipam: { type: 'nsm-ipam', subnet: '10.217.0.0/16', dataDir } })
const version = JSON.stringify({ cniVersion: '1.1.0' })

/** CPU time (user + sys, ms) of this process's waited-for children so far: /proc/self/stat cutime + cstime. */

function timed(cmd: string, args: string[], env: Record<string, string>, input: string): number {
  const s = process.hrtime.bigint()
  const r = spawnSync(cmd, args, { env, input, stdio: ['pipe', 'pipe', 'pipe'] })
  const dt = Number(process.hrtime.bigint() - s) / 1e6
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stdout.toString()}${r.stderr.toString()}`)
  return dt
}

interface Variant { label: string; cmd: string; args: string[]; env: Record<string, string>; ipam: boolean }
const NO_NODE = { PATH: '/nonexistent' }
const variants: Variant[] = [{ label: '`node -e 0` (floor)', cmd: process.execPath, args: ['-e', '0'], env: NO_NODE, ipam: false }]
for (const p of plugins) {
  variants.push({ label: `\`node ${p}\` (JS bundle)`, cmd: process.execPath, args: [join(bundles, p)], env: NO_NODE, ipam: p === 'nsm-ipam' })
  variants.push({ label: `\`sea/${p}\``, cmd: join(plainDir, p), args: [], env: NO_NODE, ipam: p === 'nsm-ipam' })
  variants.push({ label: `\`sea/${p}\` without the SEA's code cache of its loader`, cmd: join(noCacheDir, p), args: [], env: NO_NODE, ipam: p === 'nsm-ipam' })
}

const start = variants.map(() => [] as number[])
const startCpu = variants.map(() => 0)
const add = variants.map(() => [] as number[])
const del = variants.map(() => [] as number[])
const load0 = loadavg()[0] as number
for (let i = -5; i < N; i++) {
  variants.forEach((v, k) => {
    const c0 = childCpuMs()
    const s = timed(v.cmd, v.args, { ...v.env, CNI_COMMAND: 'VERSION' }, version)
    if (i >= 0) {
      start[k]?.push(s)
      startCpu[k] = (startCpu[k] ?? 0) + childCpuMs() - c0
    }
    if (!v.ipam) return
    const call = (command: string): Record<string, string> => ({ ...v.env, CNI_COMMAND: command, CNI_CONTAINERID: `b${k}-${i + 5}`, CNI_NETNS: `/var/run/netns/${netns}`, CNI_IFNAME: 'eth0' })
    const a = timed(v.cmd, v.args, call('ADD'), conf)
    const d = timed(v.cmd, v.args, call('DEL'), conf)
    if (i >= 0) {
      add[k]?.push(a)
      del[k]?.push(d)
    }
  })
}
const load1 = loadavg()[0] as number

const cell = (s: Stats | undefined): string => (s === undefined ? '–' : `${ms(s.p50)} / ${ms(s.p99)}`)
const rows = variants.map((v, k) => `| ${v.label} | ${cell(stats(start[k] ?? []))} | ${ms((startCpu[k] ?? NaN) / N)} | ${v.ipam ? cell(stats(add[k] ?? [])) : '–'} | ${v.ipam ? cell(stats(del[k] ?? [])) : '–'} |`)
const mib = (f: string): string => (statSync(f).size / 2 ** 20).toFixed(1)
const floor = stats(start[0] ?? []).p50
const seaIdx = variants.findIndex((v) => v.label === '`sea/nsm-ipam`')
const jsIdx = variants.findIndex((v) => v.label === '`node nsm-ipam` (JS bundle)')
const seaP50 = stats(start[seaIdx] ?? []).p50
const jsP50 = stats(start[jsIdx] ?? []).p50

const md = `## Self-contained CNI plugins (\`bench/sea.ts\`)

${machine()}; ${N} interleaved samples per row after 5 warm-up rounds; load average ${load0.toFixed(2)} → ${load1.toFixed(2)}.
Every call exec'd as a runtime does (spawn to exit, ms, p50 / p99), with \`PATH=/nonexistent\` and only the CNI
variables: VERSION is the start-up; ADD and DEL are real nsm-ipam calls on a file store. VERSION CPU ms is the mean
user + sys time per call (children's \`cutime + cstime\`): it depends much less on the machine's load than wall time.
Every variant runs the plugin with its trained V8 code cache (\`scripts/code-cache.mjs\`); "without the SEA's code cache" drops only
the SEA's cache of its main script, the small loader.${withNsm ? '' : ' (dist/nsm not built: nsm-ipam only.)'}

| variant | VERSION | VERSION CPU ms | ADD | DEL |
|---|---|---|---|---|
${rows.join('\n')}

Start-up (nsm-ipam VERSION): the executable p50 is ${ms(seaP50)} ms against ${ms(jsP50)} ms for \`node\` + bundle (${((seaP50 / jsP50 - 1) * 100).toFixed(0)} %) and
${ms(floor)} ms for \`node -e 0\`; in CPU per call ${ms((startCpu[seaIdx] ?? NaN) / N)} ms against ${ms((startCpu[jsIdx] ?? NaN) / N)} ms and ${ms((startCpu[0] ?? NaN) / N)} ms.

Size: ${plugins.map((p) => `\`sea/${p}\` ${mib(join(plainDir, p))} MiB (bundle ${(statSync(join(bundles, p)).size / 1024).toFixed(0)} KiB)`).join(', ')}; the \`node\`
binary they are made of is ${mib(process.execPath)} MiB (${process.execPath}). Build (\`node scripts/sea.mjs --force\`, ${plugins.length} executable(s)
in parallel, mostly postject): ${buildPlain.toFixed(1)} s (${buildNoCache.toFixed(1)} s without the loader's code cache); when the bundles are unchanged
(what a second \`npm test\` pays): ${upToDate.toFixed(2)} s.
`
writeSection('sea', md)
process.stdout.write(md)
