// A CNI conformance suite for any plugin binary. Every check execs the plugin through the real protocol
// (environment + stdin, nothing in-process) in real network namespaces, and reports pass, fail or n/a
// (not applicable: e.g. GC for a plugin that does not speak 1.1.0). Checks name their level: MUST and
// SHOULD are the spec's words (SPEC.md 1.1.0); ROBUST marks what the spec leaves open but a plugin
// exec'd as root by a runtime ought to do (refuse 10 MB of stdin).
//
// Two kinds of target: a main plugin with an IPAM plugin (`ptp` + `host-local`), and an IPAM plugin
// exec'd directly as a main plugin would (`nsm-ipam`). The suite writes the configuration itself
// (`ipam: {type, subnet, dataDir}`, which host-local and nsm-ipam share) on a subnet of its own, and
// judges "nothing changed" from the IPAM data dir, the container netns, and the host's addresses and
// routes inside that subnet (other tests may run beside it, so the host is never compared as a whole).
//
// run.ts holds the machinery of one run, checks.ts the checks; this file runs them and formats the table.
import { CHECKS } from './checks'
import { ConformanceRun, NotApplicable, OUR_VERSIONS, type CheckResult, type Status, type Target } from './run'

export type { CheckResult, Level, Status, Target } from './run'
export { CHECKS } from './checks'
export { ConformanceRun } from './run'

/** Runs every check; never throws for a plugin's misbehaviour. */
export async function runConformance(target: Target, subnetThirdOctet: number, only?: (id: string) => boolean): Promise<CheckResult[]> {
  const run = new ConformanceRun(target, subnetThirdOctet)
  const results: CheckResult[] = []
  try {
    const v = await run.call({ command: 'VERSION', stdin: { cniVersion: '1.0.0' } })
    run.supported = Array.isArray(v.json?.supportedVersions) ? (v.json.supportedVersions as string[]) : []
    const common = OUR_VERSIONS.filter((x) => run.supported.includes(x))
    run.version = common[common.length - 1] ?? '1.0.0'
    for (const c of CHECKS) {
      if (only !== undefined && !only(c.id)) continue
      let status: Status = 'pass'
      let detail: string
      try {
        detail = await c.run(run)
      } catch (err) {
        if (err instanceof NotApplicable) status = 'n/a'
        else status = 'fail'
        detail = err instanceof Error ? err.message : String(err)
      }
      results.push({ id: c.id, level: c.level, title: c.title, expect: c.expect, status, detail })
    }
  } finally {
    await run.cleanup()
  }
  return results
}

/** A Markdown table of results. */
export function formatTable(target: Target, results: CheckResult[]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ')
  const lines = [
    `Conformance: ${target.label} (${target.kind === 'main' ? `${target.type} + ${target.ipamType ?? '?'}` : `${target.type} exec'd directly`})`,
    '',
    '| check | level | expects | result | detail |',
    '|---|---|---|---|---|',
    ...results.map((r) => `| ${r.id}: ${esc(r.title)} | ${r.level} | ${esc(r.expect)} | **${r.status}** | ${esc(r.detail)} |`),
    '',
    `pass ${results.filter((r) => r.status === 'pass').length}, fail ${results.filter((r) => r.status === 'fail').length}, n/a ${results.filter((r) => r.status === 'n/a').length}`,
  ]
  return lines.join('\n')
}
