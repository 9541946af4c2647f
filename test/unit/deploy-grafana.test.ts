// deploy/grafana/nsm-cni-dashboard.json asks only for series the agent exports (agent/metrics/, read from a
// real registry here), with label names those series have; its panels and variables are well formed.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createMetrics } from '../../agent/metrics/index'

const ROOT = join(import.meta.dirname, '../..')
interface Target { expr: string }
interface Panel { id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; targets?: Target[] }
const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/nsm-cni-dashboard.json'), 'utf8')) as { uid: string; title: string; panels: Panel[]; templating: { list: Array<{ name: string }> } }

t.test('every series a panel queries is exported, with the labels it groups by', async (t) => {
  const m = createMetrics()
  const exported = new Map<string, Set<string>>()
  for (const metric of await m.registry.getMetricsAsJSON()) {
    const labels = new Set<string>(['instance', 'job', 'le'])
    for (const v of metric.values) for (const k of Object.keys(v.labels)) labels.add(k)
    // Label names declared but not yet used by any sample: from the metric object.
    const declared = (m.registry.getSingleMetric(metric.name) as unknown as { labelNames?: string[] } | undefined)?.labelNames ?? []
    for (const k of declared) labels.add(k)
    const names = String(metric.type) === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => metric.name + s) : [metric.name]
    for (const n of names) exported.set(n, labels)
  }
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => ({ panel: p.title, expr: x.expr })))
  t.ok(exprs.length >= 15, `${exprs.length} queries`)
  for (const { panel, expr } of exprs) {
    const series = [...expr.matchAll(/\b((?:nsm|process|nodejs)_[a-z0-9_]+)\b/g)].map((x) => x[1] ?? '')
    t.ok(series.length > 0, `${panel}: queries an agent series`)
    for (const s of series) {
      const labels = exported.get(s)
      t.ok(labels !== undefined, `${panel}: ${s} is exported`)
      for (const g of expr.matchAll(/by \(([^)]*)\)/g)) for (const l of (g[1] ?? '').split(',').map((x) => x.trim())) t.ok(labels?.has(l), `${panel}: ${s} has label ${l}`)
    }
  }
  const covered = new Set(exprs.flatMap(({ expr }) => [...expr.matchAll(/\b(nsm_[a-z_]+?)(?:_bucket|_sum|_count)?\b/g)].map((x) => x[1])))
  for (const name of ['nsm_connections', 'nsm_request_duration_seconds', 'nsm_close_duration_seconds', 'nsm_pipeline_element_duration_seconds', 'nsm_heal_duration_seconds', 'nsm_heals_total', 'nsm_errors_total', 'nsm_registry_services', 'nsm_registry_endpoints', 'nsm_store_operation_duration_seconds', 'nsm_cni_duration_seconds']) {
    t.ok(covered.has(name), `a panel shows ${name}`)
  }
})

t.test('panels: unique ids, on the 24-column grid, variables the queries use are defined', async (t) => {
  const ids = dashboard.panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length)
  for (const p of dashboard.panels) t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the grid`)
  const vars = new Set(dashboard.templating.list.map((v) => v.name))
  for (const p of dashboard.panels) for (const x of p.targets ?? []) for (const v of x.expr.matchAll(/\$([a-z]\w*)/g)) t.ok(vars.has(v[1] ?? ''), `${p.title}: $${v[1]} is a variable`)
  t.equal(dashboard.uid, 'nsm-cni-agents')
})
