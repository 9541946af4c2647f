// agent/metrics: Prometheus metrics of the agent (ARCHITECTURE §13), served on --metrics-address.
export { createMetrics, CALL_BUCKETS, STEP_BUCKETS, type AgentMetrics, type MetricsSources } from './metrics.js'
export { timedKv } from './kv.js'
export { serveMetrics, type MetricsServer } from './server.js'
