// agent/select/select.ts: which endpoints a client's request for a network service may go to, in the order to
// try them (ARCHITECTURE §6, NSM v1 semantics), and the same reasoning as a report for `nsmctl explain`.
//
// Needs: the service (conf/networkservice.ts), the registered endpoints (the registry), the client's labels
// (pod labels + annotation labels + nodeName/podName/namespace, composed by the caller), the time, and a
// RoundRobin. Pure: no I/O, no clock of its own.
// Contract:
//   - candidates = endpoints that list the service and are unexpired (`expiresAt` > now) and not excluded;
//     their labels for the service are `networkServiceLabels[service]`;
//   - no matches → every candidate; else the first match whose source selector the client satisfies (empty
//     selector: always) decides: the union over its routes of candidates whose labels contain the rendered
//     destination selector. Empty union → the next applying match if `fallthrough`, else NO_ENDPOINT. If no
//     match applies at all, every candidate qualifies (as NSM's discover does);
//   - selector values may be templates (`{{.nodeName}}`) rendered with the client's labels; a template
//     naming a label the client lacks never matches;
//   - order: winners sorted by name, local ones first, each group rotated by the service's round-robin
//     cursor. `selectEndpoints` advances the cursor; `explain` never does. The caller tries the endpoints in
//     order and skips one that fails (or passes it in `exclude` to reselect).
import type { NetworkService } from '../../conf/networkservice.js'
import { renderTemplate } from '../../conf/template.js'
import { RoundRobin } from './round-robin.js'

export interface EndpointCandidate {
  name: string
  networkServiceNames: readonly string[]
  /** Labels per service name, as `network_service_labels` in the registry. */
  networkServiceLabels: Readonly<Record<string, Readonly<Record<string, string>>>>
  /** Expiry (ms since epoch, or a Date); absent = never expires. */
  expiresAt?: number | Date
  /** On this node (a veth is enough); remote ones need a tunnel and are tried after. */
  local: boolean
}

export interface SelectInput<E extends EndpointCandidate = EndpointCandidate> {
  service: NetworkService
  candidates: readonly E[]
  clientLabels: Readonly<Record<string, string>>
  now: number | Date
  /** Round-robin state; without one every call starts at cursor 0. */
  roundRobin?: RoundRobin
  /** Endpoints not to choose (failed during this request, or the one being healed away from). */
  exclude?: Iterable<string>
}

export type CandidateStatus = 'candidate' | 'not-offering' | 'expired' | 'excluded'

export interface CandidateReport {
  name: string
  local: boolean
  status: CandidateStatus
  /** The endpoint's labels for this service. */
  labels: Record<string, string>
}

export interface RouteReport {
  index: number
  destinationSelector: Record<string, string>
  /** The selector after template rendering; null when it names client labels that are missing. */
  rendered: Record<string, string> | null
  missing: string[]
  /** Candidates whose labels contain the rendered selector. */
  endpoints: string[]
}

export type MatchOutcome = 'not-applied' | 'chosen' | 'fell-through' | 'no-endpoint' | 'not-reached'

export interface MatchReport {
  index: number
  sourceSelector: Record<string, string>
  applies: boolean
  /** Why it applies or not, e.g. `client has app=firewall`, `client lacks app=firewall (has app=web)`. */
  reason: string
  fallthrough: boolean
  outcome: MatchOutcome
  routes: RouteReport[]
  /** Union over the routes, sorted by name (empty when the match did not apply). */
  endpoints: string[]
}

export type Decision =
  | { kind: 'no-matches' } // the service has no matches: every candidate
  | { kind: 'no-match-applied' } // none applies to this client: every candidate (NSM semantics)
  | { kind: 'match'; index: number }
  | { kind: 'no-endpoint' }

export interface Explanation {
  service: string
  clientLabels: Record<string, string>
  candidates: CandidateReport[]
  matches: MatchReport[]
  decision: Decision
  /** Endpoints that qualify, sorted by name. */
  qualified: string[]
  /** The order the request would try them in (local first, rotated by round-robin). */
  order: string[]
  chosen: string | null
  roundRobinCursor: number
  /** One line saying why: what `nsmctl explain` prints last and what NO_ENDPOINT says. */
  summary: string
}

export class SelectError extends Error {
  override readonly name = 'SelectError'
  /** Same name as the agent's AgentErrorCode: gRPC NOT_FOUND, CNI 101. */
  readonly code = 'NO_ENDPOINT' as const
  constructor(readonly explanation: Explanation) {
    super(`no endpoint for service ${explanation.service}: ${explanation.summary}`)
  }
}

/** The endpoints to try, in order; throws SelectError (code NO_ENDPOINT) when none qualifies. */
export function selectEndpoints<E extends EndpointCandidate>(input: SelectInput<E>): E[] {
  const { explanation, byName } = evaluate(input)
  if (explanation.order.length === 0) throw new SelectError(explanation)
  input.roundRobin?.advance(input.service.name)
  return explanation.order.map((n) => byName.get(n)).filter((e): e is E => e !== undefined)
}

/** What selection would do for this client, and why; changes no state. */
export function explain(input: SelectInput): Explanation {
  return evaluate(input).explanation
}

function evaluate<E extends EndpointCandidate>(input: SelectInput<E>): { explanation: Explanation; byName: Map<string, E> } {
  const { service, clientLabels } = input
  const now = toMs(input.now)
  const excluded = new Set(input.exclude ?? [])
  const cursor = input.roundRobin?.peek(service.name) ?? 0

  const candidates: CandidateReport[] = []
  const byName = new Map<string, E>()
  for (const e of input.candidates) {
    const labels = { ...(Object.hasOwn(e.networkServiceLabels, service.name) ? e.networkServiceLabels[service.name] : {}) }
    let status: CandidateStatus = 'candidate'
    if (!e.networkServiceNames.includes(service.name)) status = 'not-offering'
    else if (e.expiresAt !== undefined && toMs(e.expiresAt) <= now) status = 'expired'
    else if (excluded.has(e.name)) status = 'excluded'
    candidates.push({ name: e.name, local: e.local, status, labels })
    if (status === 'candidate' && !byName.has(e.name)) byName.set(e.name, e)
  }
  const eligible = candidates.filter((c) => c.status === 'candidate' && byName.get(c.name) !== undefined)
  const eligibleNames = sortedUnique(eligible.map((c) => c.name))

  const matches: MatchReport[] = []
  let decision: Decision | undefined
  let qualified: string[] = []
  let why = ''
  const fellFrom: number[] = []
  for (const [index, m] of service.matches.entries()) {
    const report: MatchReport = {
      index,
      sourceSelector: { ...m.sourceSelector },
      applies: false,
      reason: '',
      fallthrough: m.fallthrough,
      outcome: 'not-reached',
      routes: [],
      endpoints: [],
    }
    matches.push(report)
    if (decision !== undefined) continue
    const src = checkSource(m.sourceSelector, clientLabels)
    report.applies = src.applies
    report.reason = src.reason
    if (!src.applies) {
      report.outcome = 'not-applied'
      continue
    }
    const union = new Set<string>()
    for (const [ri, route] of m.routes.entries()) {
      const r = renderSelector(route.destinationSelector, clientLabels)
      const endpoints = r.rendered === null ? [] : eligible.filter((c) => contains(c.labels, r.rendered)).map((c) => c.name)
      for (const n of endpoints) union.add(n)
      report.routes.push({ index: ri, destinationSelector: { ...route.destinationSelector }, rendered: r.rendered, missing: r.missing, endpoints: sortedUnique(endpoints) })
    }
    report.endpoints = sortedUnique([...union])
    if (report.endpoints.length > 0) {
      report.outcome = 'chosen'
      decision = { kind: 'match', index }
      qualified = report.endpoints
      why = `match[${index}] applies (${src.reason}) and ${report.endpoints.length} endpoint(s) satisfy its routes`
      if (fellFrom.length > 0) why += ` after fallthrough from match[${fellFrom.join('], match[')}]`
    } else if (m.fallthrough) {
      report.outcome = 'fell-through'
      fellFrom.push(index)
    } else {
      report.outcome = 'no-endpoint'
      decision = { kind: 'no-endpoint' }
      why = `match[${index}] applies (${src.reason}) but no endpoint satisfies its routes (${describeRoutes(report.routes)}) and it has no fallthrough`
    }
  }

  if (decision === undefined) {
    if (fellFrom.length > 0) {
      decision = { kind: 'no-endpoint' }
      why = `match[${fellFrom.join('], match[')}] applied with no endpoint and fell through, and no later match applies`
    } else {
      decision = service.matches.length === 0 ? { kind: 'no-matches' } : { kind: 'no-match-applied' }
      qualified = eligibleNames
      why =
        service.matches.length === 0
          ? `the service has no matches: every candidate qualifies`
          : `no match applies to the client's labels: every candidate qualifies`
    }
  }
  if (eligibleNames.length === 0) {
    why = `no registered, unexpired endpoint offers ${service.name}${describeSkipped(candidates)}`
  }
  if (qualified.length === 0) decision = { kind: 'no-endpoint' }

  const order = rotateLocalFirst(qualified, byName, cursor)
  const chosen = order[0] ?? null
  const summary =
    chosen === null ? why : `${why}; ${chosen} is tried first (${byName.get(chosen)?.local === true ? 'local' : 'remote'}, round-robin cursor ${cursor})`
  return {
    explanation: {
      service: service.name,
      clientLabels: { ...clientLabels },
      candidates,
      matches,
      decision,
      qualified,
      order,
      chosen,
      roundRobinCursor: cursor,
      summary,
    },
    byName,
  }
}

function checkSource(selector: Readonly<Record<string, string>>, client: Readonly<Record<string, string>>): { applies: boolean; reason: string } {
  const keys = Object.keys(selector)
  if (keys.length === 0) return { applies: true, reason: 'empty source selector applies to every client' }
  const r = renderSelector(selector, client)
  if (r.rendered === null) return { applies: false, reason: `selector needs client label(s) ${r.missing.join(', ')}` }
  const misses: string[] = []
  for (const [k, v] of Object.entries(r.rendered)) {
    if (!Object.hasOwn(client, k)) misses.push(`client lacks ${k}=${v}`)
    else if (client[k] !== v) misses.push(`client lacks ${k}=${v} (has ${k}=${client[k] ?? ''})`)
  }
  if (misses.length > 0) return { applies: false, reason: misses.join(', ') }
  return { applies: true, reason: `client has ${formatLabels(r.rendered)}` }
}

function renderSelector(selector: Readonly<Record<string, string>>, vars: Readonly<Record<string, string>>): { rendered: Record<string, string> | null; missing: string[] } {
  const rendered: Record<string, string> = {}
  const missing: string[] = []
  for (const [k, v] of Object.entries(selector)) {
    const r = renderTemplate(v, vars)
    if (r.ok) rendered[k] = r.value
    else missing.push(...r.missing)
  }
  return missing.length > 0 ? { rendered: null, missing: sortedUnique(missing) } : { rendered, missing }
}

function contains(labels: Readonly<Record<string, string>>, selector: Readonly<Record<string, string>> | null): boolean {
  if (selector === null) return false
  return Object.entries(selector).every(([k, v]) => Object.hasOwn(labels, k) && labels[k] === v)
}

function rotateLocalFirst(names: readonly string[], byName: ReadonlyMap<string, EndpointCandidate>, cursor: number): string[] {
  const local = names.filter((n) => byName.get(n)?.local === true)
  const remote = names.filter((n) => byName.get(n)?.local !== true)
  return [...rotate(local, cursor), ...rotate(remote, cursor)]
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  if (xs.length === 0) return []
  const k = by % xs.length
  return [...xs.slice(k), ...xs.slice(0, k)]
}

function describeRoutes(routes: readonly RouteReport[]): string {
  if (routes.length === 0) return 'it has no routes'
  return routes
    .map((r) => (r.rendered === null ? `${formatLabels(r.destinationSelector)}: client lacks ${r.missing.join(', ')}` : formatLabels(r.rendered) || 'any'))
    .join('; ')
}

function describeSkipped(candidates: readonly CandidateReport[]): string {
  const skipped = candidates.filter((c) => c.status === 'expired' || c.status === 'excluded')
  return skipped.length === 0 ? '' : ` (skipped: ${skipped.map((c) => `${c.name} ${c.status}`).join(', ')})`
}

export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
}

function sortedUnique(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort()
}

function toMs(t: number | Date): number {
  return typeof t === 'number' ? t : t.getTime()
}
