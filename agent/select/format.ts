// agent/select/format.ts: the text `nsmctl explain <service> --labels k=v` prints for an Explanation.
//
// Needs: an Explanation from select.ts. Pure: returns a string (no colours, no terminal handling; `-o json`
// prints the Explanation itself). Contract: sections in a fixed order (client, candidates as an aligned
// table, matches with their routes and outcome, try order, one-line result), stable for tests and humans.
import { formatLabels, type Explanation, type MatchReport } from './select.js'

export function formatExplanation(ex: Explanation): string {
  const lines: string[] = []
  lines.push(`service:  ${ex.service}`)
  lines.push(`client:   ${formatLabels(ex.clientLabels) || '(no labels)'}`)
  lines.push('')
  if (ex.candidates.length === 0) lines.push('endpoints: none registered')
  else {
    lines.push('endpoints:')
    const rows = [['NAME', 'WHERE', 'STATUS', 'LABELS'], ...ex.candidates.map((c) => [c.name, c.local ? 'local' : 'remote', c.status, formatLabels(c.labels) || '-'])]
    lines.push(...table(rows).map((r) => `  ${r}`))
  }
  lines.push('')
  if (ex.matches.length === 0) lines.push('matches:  none (every candidate qualifies)')
  else {
    lines.push('matches:')
    for (const m of ex.matches) lines.push(...formatMatch(m))
  }
  lines.push('')
  lines.push(`order:    ${ex.order.length === 0 ? '(none)' : ex.order.join(', ')}`)
  lines.push(`result:   ${ex.summary}`)
  return `${lines.join('\n')}\n`
}

function formatMatch(m: MatchReport): string[] {
  const src = formatLabels(m.sourceSelector) || '(any client)'
  const head = `  [${m.index}] source ${src}${m.fallthrough ? ', fallthrough' : ''}: `
  if (m.outcome === 'not-reached') return [`${head}not reached`]
  if (!m.applies) return [`${head}does not apply (${m.reason})`]
  const out = [`${head}applies (${m.reason}) → ${m.outcome}`]
  if (m.routes.length === 0) out.push('      no routes')
  for (const r of m.routes) {
    const sel = formatLabels(r.destinationSelector) || '(any endpoint)'
    const rendered = r.rendered === null ? ` (needs client label ${r.missing.join(', ')})` : formatLabels(r.rendered) !== formatLabels(r.destinationSelector) ? ` = ${formatLabels(r.rendered)}` : ''
    out.push(`      route[${r.index}] ${sel}${rendered} → ${r.endpoints.length === 0 ? 'no endpoint' : r.endpoints.join(', ')}`)
  }
  return out
}

function table(rows: readonly string[][]): string[] {
  const widths: number[] = []
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '))
}
