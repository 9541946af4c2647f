// nsmctl output: aligned text tables (header row, two-space gaps, no trailing blanks) and the
// human-readable forms of services, endpoints, connections and an explain report.
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import type { NetworkService } from '../../proto/gen/registry/registry.js'
import type { EndpointRegistration, NodeRecord } from '../../proto/gen/nsmcni/nsmcni.js'
import type { Explanation } from '../select/index.js'
import { timestampMs } from '../registry/records.js'
import { mechanismSummary } from '../topology/model.js'

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n') + '\n'
}

export function labels(l: Readonly<Record<string, string>>): string {
  const s = Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
  return s === '' ? '-' : s
}

function list(xs: readonly string[]): string {
  return xs.length === 0 ? '-' : xs.join(',')
}

/** "in 59s", "in 4m", "expired", "-" */
export function expiresIn(ms: number | undefined, now: number): string {
  if (ms === undefined) return '-'
  const d = Math.round((ms - now) / 1000)
  if (d <= 0) return 'expired'
  if (d < 120) return `${d}s`
  if (d < 7200) return `${Math.round(d / 60)}m`
  return `${Math.round(d / 3600)}h`
}

export function servicesTable(services: readonly NetworkService[]): string {
  return table(
    ['NAME', 'PAYLOAD', 'MATCHES'],
    services.map((s) => [
      s.name,
      s.payload,
      s.matches.length === 0
        ? '-'
        : s.matches
            .map((m) => `${labels(m.sourceSelector)}->${m.routes.map((r) => labels(r.destinationSelector)).join('|')}${m.fallthrough ? '(fallthrough)' : ''}`)
            .join(' ; '),
    ]),
  )
}

export function endpointsTable(endpoints: readonly EndpointRegistration[], now: number): string {
  return table(
    ['NAME', 'SERVICES', 'LABELS', 'NETNS', 'POOLS', 'ROUTES', 'NODE', 'EXPIRES'],
    endpoints.map(({ endpoint: e, extension: x }) => [
      e?.name ?? '',
      list(e?.networkServiceNames ?? []),
      Object.entries(e?.networkServiceLabels ?? {})
        .map(([s, l]) => `${s}:${labels(l.labels)}`)
        .join(';') || '-',
      x?.netnsPath || '-',
      list(x?.cidrPools ?? []),
      list((x?.routes ?? []).map((r) => (r.nextHop === '' ? r.prefix : `${r.prefix}@${r.nextHop}`))),
      x?.nodeName || '-',
      expiresIn(timestampMs(e?.expirationTime), now),
    ]),
  )
}

export function connectionsTable(conns: readonly Connection[]): string {
  return table(
    ['ID', 'SERVICE', 'ENDPOINT', 'STATE', 'MECHANISM', 'SRC', 'DST'],
    conns.map((c) => [
      c.id,
      c.networkService,
      c.networkServiceEndpointName || '-',
      State[c.state] ?? String(c.state),
      // The mechanism and its device, named as the topology names them.
      mechanismSummary(c.mechanism),
      list(c.context?.ipContext?.srcIpAddrs ?? []),
      list(c.context?.ipContext?.dstIpAddrs ?? []),
    ]),
  )
}

/** The explain report as nsmctl prints it: candidates, each match and route, then the decision. */
export function explanationText(x: Explanation): string {
  const out: string[] = []
  out.push(`service ${x.service}, client labels ${labels(x.clientLabels)}`)
  out.push('')
  out.push('candidates:')
  out.push(
    x.candidates.length === 0
      ? '  (no endpoints registered)\n'
      : table(
          ['  NAME', 'WHERE', 'STATUS', 'LABELS'],
          x.candidates.map((c) => [`  ${c.name}`, c.local ? 'local' : 'remote', c.status, labels(c.labels)]),
        ),
  )
  if (x.matches.length === 0) out.push('matches: none (every candidate qualifies)')
  for (const m of x.matches) {
    out.push(`match[${m.index}] source ${labels(m.sourceSelector)}${m.fallthrough ? ' (fallthrough)' : ''}: ${m.outcome}${m.reason === '' ? '' : ` - ${m.reason}`}`)
    for (const r of m.routes) {
      const rendered = r.rendered === null ? `unrenderable (missing ${r.missing.join(', ')})` : labels(r.rendered)
      out.push(`  route[${r.index}] destination ${labels(r.destinationSelector)} -> ${rendered}: ${r.endpoints.length === 0 ? 'no endpoint' : r.endpoints.join(', ')}`)
    }
  }
  out.push('')
  out.push(`qualified: ${x.qualified.length === 0 ? '-' : x.qualified.join(', ')}`)
  out.push(`order:     ${x.order.length === 0 ? '-' : x.order.join(', ')} (round-robin cursor ${x.roundRobinCursor})`)
  out.push(`chosen:    ${x.chosen ?? '-'}`)
  out.push(`why:       ${x.summary}`)
  return out.join('\n') + '\n'
}

/** Nodes of the shared store: where each agent is, and how long since it last wrote its record. */
export function nodesTable(nodes: readonly NodeRecord[], now: number): string {
  const rows = nodes.map((n) => {
    const seen = timestampMs(n.lastSeen)
    return [n.name, n.underlayAddress || '-', n.peerUrl || '-', seen === undefined ? '-' : `${Math.max(0, Math.round((now - seen) / 1000))}s ago`]
  })
  return table(['NAME', 'UNDERLAY', 'PEER', 'LAST SEEN'], rows)
}
