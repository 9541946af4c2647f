// What the `ip-address` library would cost the exec'd nsm-ipam plugin: dist/nsm-ipam is bundled twice,
// as shipped (ipam/range/ip.ts, the hand-written codec) and with ipam/range/ip.ts swapped for ipam/address.ts
// (the same API over ip-address, as the agent uses), each with its code cache trained as build.mjs does
// (scripts/code-cache.mjs). Then, interleaved in one loop so both see the same machine noise (the order of
// the two variants alternates): `node -e 0` (the floor), VERSION and ADD + DEL (the ranges of
// bench/ipam.ts: 10.216.0.0/16 + fd16::/64, a data dir per variant) of each variant.
//
//   npx tsx bench/ipam-codec.ts          (as root is not needed; BENCH_N sets the samples, default 300)
//
// Writes its section of BENCHMARKS.md (the choice it informs is also recorded in the header of
// ipam/range/ip.ts).
import * as esbuild from 'esbuild'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { compose, trainCache, wrapSource } from '../scripts/code-cache.mjs'
import { BUNDLE_OPTIONS } from '../scripts/bundle-options.mjs'
import { childCpuMs, machine, ms, percentile, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 300)
const ROOT = resolve(import.meta.dirname, '..')
const work = mkdtempSync(join(tmpdir(), 'nsm-bench-codec-'))
process.on('exit', () => rmSync(work, { recursive: true, force: true }))
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130))

/** Resolves every import of ipam/range/ip to `target` (the variant's codec). */
const swapCodec = (target: string | undefined): esbuild.Plugin => ({
  name: 'swap-codec',
  setup(build) {
    if (target === undefined) return
    build.onResolve({ filter: /(^|\/)ip(\.js)?$/ }, (args) => {
      const abs = resolve(args.resolveDir, args.path.replace(/\.js$/, ''))
      return abs === join(ROOT, 'ipam/range/ip') ? { path: target } : undefined
    })
  },
})

interface Variant {
  name: string
  bin: string
  sourceBytes: number
  fileBytes: number
  /** The bundle holds ip-address's Address6. */
  hasLibrary: boolean
}

/** Bundles cni/plugins/nsm-ipam.ts with build.mjs's options, trains its code cache, writes the loader file. */
async function buildVariant(name: string, codec: string | undefined): Promise<Variant> {
  const r = await esbuild.build({ ...BUNDLE_OPTIONS, write: false, entryPoints: [join(ROOT, 'cni/plugins/nsm-ipam.ts')], plugins: [swapCodec(codec)] })
  const source = wrapSource((r.outputFiles[0] as esbuild.OutputFile).text)
  const dir = join(work, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), '{ "type": "commonjs" }\n')
  const bin = join(dir, 'nsm-ipam')
  const cache = await trainCache('nsm-ipam', source, bin)
  if (cache === undefined) throw new Error(`${name}: code cache training failed`)
  const file = compose('nsm-ipam', source, cache)
  writeFileSync(bin, file, { mode: 0o755 })
  return { name, bin, sourceBytes: Buffer.byteLength(source), fileBytes: Buffer.byteLength(file), hasLibrary: source.includes('class _Address6') }
}

const variants = [await buildVariant('hand-written', undefined), await buildVariant('ip-address', join(ROOT, 'ipam/address.ts'))]
if (variants.map((v) => v.hasLibrary).join() !== 'false,true') throw new Error('the variants did not bundle the codec each was meant to')

const conf = (v: Variant): string =>
  JSON.stringify({
    cniVersion: '1.0.0',
    name: `codec-${v.name}`,
    type: 'ptp',
    ipam: { type: 'nsm-ipam', ranges: [[{ subnet: '10.216.0.0/16' }], [{ subnet: 'fd16::/64' }]], dataDir: join(work, `data-${v.name}`) },
  })
const env = (command: string, id: string) => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' })


/** Wall ms of one exec'd call; its CPU ms are added to `cpu` under `kind` (clock ticks, averaged over the samples). */
const cpu = new Map<string, number>()
function timed(args: string[], command: string, id: string, input: string, kind: string | undefined): number {
  const c0 = childCpuMs()
  const t0 = process.hrtime.bigint()
  const r = spawnSync(process.execPath, args, { env: env(command, id), input, stdio: ['pipe', 'pipe', 'pipe'] })
  const dt = Number(process.hrtime.bigint() - t0) / 1e6
  if (r.status !== 0) throw new Error(`${args.join(' ')} ${command} ${id}: exit ${r.status}: ${r.stdout.toString()} ${r.stderr.toString()}`)
  if (kind !== undefined) cpu.set(kind, (cpu.get(kind) ?? 0) + childCpuMs() - c0)
  return dt
}

const samples = new Map<string, number[]>()
const push = (k: string, x: number): void => {
  samples.set(k, [...(samples.get(k) ?? []), x])
}
for (let i = -10; i < N; i++) {
  const measured = i >= 0 // the first 10 rounds warm up (page cache, the stores' first creation)
  const floor = timed(['-e', '0'], 'VERSION', 'x', '', measured ? 'floor' : undefined)
  if (measured) push('floor', floor)
  const order = i % 2 === 0 ? variants : [...variants].reverse()
  for (const v of order) {
    for (const command of ['VERSION', 'ADD', 'DEL']) {
      const kind = `${command} ${v.name}`
      const dt = timed([v.bin], command, `c${i + 10}`, command === 'VERSION' ? '' : conf(v), measured ? kind : undefined)
      if (measured) push(kind, dt)
    }
  }
}

const sorted = (k: string): number[] => [...(samples.get(k) ?? [])].sort((a, b) => a - b)
const p = (k: string, q: number): number => percentile(sorted(k), q)
const floor50 = p('floor', 50)
const rows = ['floor', ...['VERSION', 'ADD', 'DEL'].flatMap((c) => variants.map((v) => `${c} ${v.name}`))]
const [a, b] = variants as [Variant, Variant]
const out: string[] = []
out.push(`## nsm-ipam: the hand-written address codec vs ip-address (\`bench/ipam-codec.ts\`)`, '')
out.push(`${new Date().toISOString().slice(0, 10)}, ${machine()}; N=${N} interleaved samples per row after 10 warm-up rounds. Command: \`npx tsx bench/ipam-codec.ts\` (as root; \`BENCH_N\`). nsm-ipam is bundled twice with build.mjs's settings and its own trained code cache: as shipped (\`ipam/range/ip.ts\`, the hand-written codec) and with \`ipam/address.ts\` (the ip-address library) in its place; the agent uses the library.`, '')
const cpuMs = (k: string): number => (cpu.get(k) ?? NaN) / (samples.get(k)?.length ?? NaN)
out.push('| call | p50 ms | p90 ms | mean ms | p50 above `node -e 0` | CPU ms per call (user+sys, mean) |')
out.push('|---|---|---|---|---|---|')
for (const k of rows) {
  const xs = sorted(k)
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length
  out.push(`| ${k === 'floor' ? '`node -e 0`' : k} | ${ms(p(k, 50))} | ${ms(p(k, 90))} | ${ms(mean)} | ${k === 'floor' ? '' : ms(p(k, 50) - floor50)} | ${ms(cpuMs(k))} |`)
}
out.push('')
for (const c of ['VERSION', 'ADD', 'DEL']) {
  const [ka, kb] = [`${c} ${a.name}`, `${c} ${b.name}`]
  const d = p(kb, 50) - p(ka, 50)
  const dc = cpuMs(kb) - cpuMs(ka)
  out.push(`- ${c}: ip-address − hand-written: p50 ${ms(d)} ms (${((100 * d) / p(ka, 50)).toFixed(1)} %), CPU ${ms(dc)} ms (${((100 * dc) / cpuMs(ka)).toFixed(1)} %)`)
}
out.push(`- bundle SOURCE: hand-written ${a.sourceBytes} B, ip-address ${b.sourceBytes} B; dist file (loader + SOURCE + CACHE): ${a.fileBytes} B vs ${b.fileBytes} B`)
out.push('', 'So the exec\'d nsm-ipam keeps the hand-written codec (`ipam/range/ip.ts`, its header gives the figure); the agent, which pays the load once, uses the library.')
writeSection('ipam-codec', out.join('\n'))
console.log(out.join('\n'))
