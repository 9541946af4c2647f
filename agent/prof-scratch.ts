import { PerformanceObserver, performance } from 'node:perf_hooks'
export const PROF = { hook: 0, hooks: 0, by: {} as Record<string, [number, number]>, gc: [0, 0, 0, 0, 0, 0, 0, 0, 0] as number[], gcs: 0 }
export function timeHook<T>(key: string, f: () => T): T {
  const t = performance.now()
  try { return f() } finally { const d = performance.now() - t; PROF.hook += d; PROF.hooks++; const b = (PROF.by[key] ??= [0, 0]); b[0] += d; b[1]++ }
}
if (process.env.NSM_PROF === '1') {
  const o = new PerformanceObserver((l) => { for (const e of l.getEntries()) { const k = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0; PROF.gc[k] = (PROF.gc[k] ?? 0) + e.duration; PROF.gcs++ } })
  o.observe({ entryTypes: ['gc'] })
  process.on('SIGUSR2', () => { process.stderr.write(`PROF ${JSON.stringify({ ...PROF, heap: process.memoryUsage() })}\n`) })
}
