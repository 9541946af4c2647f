// Shared by the benchmarks: percentiles, machine description, and writing one section of
// BENCHMARKS.md (between `<!-- bench:NAME -->` markers) without touching the other sections.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] as number
}

export interface Stats {
  n: number
  p50: number
  p99: number
  mean: number
}
export function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b)
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length) }
}

export const ms = (x: number): string => x.toFixed(2)

/** The middle sample (the upper one of an even count). */
export const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] as number

/** A Markdown table of latency samples (ms): a row per label with n, p50, p99 and mean. */
export function latencyTable(rows: ReadonlyArray<readonly [label: string, samples: number[]]>): string {
  const lines = rows.map(([label, xs]) => {
    const s = stats(xs)
    return `| ${label} | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.mean)} |`
  })
  return ['| call | n | p50 | p99 | mean |', '|---|---|---|---|---|', ...lines].join('\n')
}

export function machine(): string {
  let kernel = ''
  try {
    kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()
  } catch {
    kernel = 'unknown'
  }
  return `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${kernel}, Node ${process.version}`
}

/** Replaces (or appends) the section NAME of BENCHMARKS.md, atomically. */
export function writeSection(name: string, markdown: string, file = 'BENCHMARKS.md'): void {
  const begin = `<!-- bench:${name} -->`
  const end = `<!-- /bench:${name} -->`
  const block = `${begin}\n${markdown.trim()}\n${end}`
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n\nWritten by `npm run bench` (each section by its own script under `bench/`). Numbers from one noisy 2-core VM: compare the rows of one section (same run), not across sections.\n'
  const a = text.indexOf(begin)
  const b = text.indexOf(end)
  text = a >= 0 && b > a ? `${text.slice(0, a)}${block}${text.slice(b + end.length)}` : `${text.trimEnd()}\n\n${block}\n`
  writeFileSync(`${file}.tmp`, text)
  renameSync(`${file}.tmp`, file)
}

/** Clock ticks per second (the unit of /proc/<pid>/stat's times). */
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100)

/** CPU time (user + sys, ms) of this process's waited-for children so far: /proc/self/stat cutime + cstime. */
export function childCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK
}
