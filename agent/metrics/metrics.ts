// agent/metrics: the agent's Prometheus metrics (ARCHITECTURE §13), on one prom-client registry. What is
// counted as it happens comes through the pipeline's hook (agent/pipeline/observe.ts), the CNI service's
// (agent/cni deps.observe), a timing wrapper around the shared store (./kv.ts) and the local files' write
// channel (agent/registry/atomic-file.ts: connection journal, registry file); what is a level — the
// connections, the registry's size — is read from the connection table and the registry at each scrape, so
// no gauge can drift from what the agent holds. Node's process metrics come from collectDefaultMetrics.
//
// Errors are counted by the CNI code a runtime sees (pkg/codes.ts): a failed Request or Close by its
// AgentError's code, a failed CNI call by the code in its error JSON. A Request failing inside a CNI ADD is
// counted twice, once as `request` and once as `ADD`, each under its own `operation`.
import { collectDefaultMetrics, Counter, Gauge, Registry as PromRegistry } from 'prom-client'
import { FastHistogram } from './histogram.js'
import { stateToJSON } from '../../proto/gen/networkservice/connection.js'
import type { ConnectionTable } from '../connections/table.js'
import type { Registry } from '../registry/registry.js'
import type { CniObserver } from '../cni/deps.js'
import type { PipelineObserver } from '../pipeline/observe.js'
import { pipelineMetrics } from './pipeline.js'
import { cniMetrics } from './cni.js'
import { fileWriteChannel, type FileWrite } from '../registry/atomic-file.js'

/** Request, Close, heal and CNI call durations: 0.5 ms to 10 s. */
export const CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** One element's own share of a call, and one store operation: 50 µs to 2.5 s. */
export const STEP_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5]

export interface MetricsSources {
  table: ConnectionTable
  registry: Registry
  /** This node's name: endpoints are counted as this node's or another's. */
  nodeName: string
}

/** The series the hooks write; exported for the hooks' modules. */
export interface Series {
  requestSeconds: FastHistogram<'service' | 'outcome'>
  closeSeconds: FastHistogram<'service' | 'outcome'>
  elementSeconds: FastHistogram<'element' | 'op' | 'outcome'>
  healSeconds: FastHistogram<'reason' | 'outcome'>
  heals: Counter<'reason' | 'outcome'>
  cniSeconds: FastHistogram<'command' | 'outcome'>
  errors: Counter<'operation' | 'code' | 'name'>
  storeSeconds: FastHistogram<'backend' | 'operation' | 'kind' | 'outcome'>
}

export interface AgentMetrics {
  readonly registry: PromRegistry
  readonly series: Series
  readonly pipeline: PipelineObserver
  /** Records what the pipeline hook queued (./pipeline.ts): call it before reading the registry. */
  flush(): void
  readonly cni: CniObserver
  /** The sources the scrape-time gauges read (set once the state is open). */
  setSources(s: MetricsSources): void
}

export function createMetrics(): AgentMetrics {
  const registry = new PromRegistry()
  const registers = [registry]
  // The event loop's delay sampled every 100 ms (prom-client's default, 10 ms, costs an idle agent ~1 % of a core).
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 })
  let sources: MetricsSources | undefined
  new Gauge({
    name: 'nsm_connections',
    help: 'Connections in the connection table, by service, mechanism (KERNEL, VXLAN, ...) and state',
    labelNames: ['service', 'mechanism', 'state'] as const,
    registers,
    collect() {
      this.reset()
      if (sources === undefined) return
      const counts = new Map<string, { service: string; mechanism: string; state: string; n: number }>()
      for (const e of sources.table.list()) {
        const c = e.connection
        const labels = { service: c.networkService, mechanism: c.mechanism?.type ?? '', state: stateToJSON(c.state) }
        const key = `${labels.service}\0${labels.mechanism}\0${labels.state}`
        const seen = counts.get(key)
        if (seen === undefined) counts.set(key, { ...labels, n: 1 })
        else seen.n++
      }
      for (const { n, ...labels } of counts.values()) this.set(labels, n)
    },
  })
  new Gauge({
    name: 'nsm_registry_services',
    help: 'Network services in the registry',
    registers,
    collect() {
      this.set(sources?.registry.findServices().length ?? 0)
    },
  })
  new Gauge({
    name: 'nsm_registry_endpoints',
    help: "Endpoints in the registry, this node's (local) and other nodes' (remote)",
    labelNames: ['node'] as const,
    registers,
    collect() {
      this.reset()
      if (sources === undefined) return
      let local = 0
      let remote = 0
      for (const s of sources.registry.findEndpoints()) {
        const node = s.extension.nodeName
        if (node === '' || node === sources.nodeName) local++
        else remote++
      }
      this.set({ node: 'local' }, local)
      this.set({ node: 'remote' }, remote)
    },
  })
  const series: Series = {
    requestSeconds: new FastHistogram({ name: 'nsm_request_duration_seconds', help: 'NSM Requests through the pipeline (CNI ADD and API callers alike), lock wait included', labelNames: ['service', 'outcome'] as const, buckets: CALL_BUCKETS, registers }),
    closeSeconds: new FastHistogram({ name: 'nsm_close_duration_seconds', help: 'NSM Closes through the pipeline', labelNames: ['service', 'outcome'] as const, buckets: CALL_BUCKETS, registers }),
    elementSeconds: new FastHistogram({
      name: 'nsm_pipeline_element_duration_seconds',
      help: "Each pipeline element's own share of a Request or Close (the elements after it not included)",
      labelNames: ['element', 'op', 'outcome'] as const,
      buckets: STEP_BUCKETS,
      registers,
    }),
    healSeconds: new FastHistogram({ name: 'nsm_heal_duration_seconds', help: 'Heals of a connection, by why and whether it healed or stays DOWN', labelNames: ['reason', 'outcome'] as const, buckets: CALL_BUCKETS, registers }),
    heals: new Counter({ name: 'nsm_heals_total', help: 'Heals of a connection, by why (endpoint-gone, node-lost, datapath-lost, retry) and outcome (healed, down)', labelNames: ['reason', 'outcome'] as const, registers }),
    cniSeconds: new FastHistogram({ name: 'nsm_cni_duration_seconds', help: 'CNI calls the shim forwarded, by command and outcome', labelNames: ['command', 'outcome'] as const, buckets: CALL_BUCKETS, registers }),
    errors: new Counter({ name: 'nsm_errors_total', help: 'Failed Requests, Closes and CNI calls, by the CNI code a runtime sees (pkg/codes.ts) and error name', labelNames: ['operation', 'code', 'name'] as const, registers }),
    storeSeconds: new FastHistogram({
      name: 'nsm_store_operation_duration_seconds',
      help: 'Operations on the shared store (backend etcd, kubernetes) and physical writes of the local files (backend file: kind connections, operation append or compact; kind registry, operation snapshot)',
      labelNames: ['backend', 'operation', 'kind', 'outcome'] as const,
      buckets: STEP_BUCKETS,
      registers,
    }),
  }
  // The local files' writes come through their diagnostics channel (agent/registry/atomic-file.ts): the
  // connection journal and the registry file need no reference to the metrics.
  fileWriteChannel.subscribe((m) => {
    const w = m as FileWrite
    series.storeSeconds.observe({ backend: 'file', operation: w.operation, kind: w.store, outcome: w.ok ? 'ok' : 'error' }, w.seconds)
  })
  const pipeline = pipelineMetrics(series)
  return {
    registry,
    series,
    pipeline,
    flush: pipeline.flush,
    cni: cniMetrics(series),
    setSources(s) {
      sources = s
    },
  }
}
