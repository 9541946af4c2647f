// The trace context reaches NSM endpoints that serve the API (agent/pipeline/nse.ts): the agent's Request to
// the endpoint carries `traceparent` in its gRPC metadata, in the agent's trace (its parent is the agent's
// `nse request` span, under the NetworkService/Request span), and so does its Close. The stub NSE
// (test/lib/stub-nse.ts) records the metadata it receives; the spans come from an OTLP receiver in this test.
import t from 'tap'
import { join } from 'node:path'
import { NetworkServiceEndpointRegistryDefinition, NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { startAgent, tempDir } from '../lib/agent'
import { reach } from '../lib/cluster'
import { kernelRequest } from '../lib/mesh'
import { makeNetns, RUN } from '../lib/netns'
import { startOtlpReceiver, type ReceivedSpan } from '../lib/otlp'
import { startStubNse } from '../lib/stub-nse'

t.setTimeout(60_000)

/** `00-<trace id>-<parent span id>-<flags>` → its ids; undefined when it is not a W3C traceparent. */
function parseTraceparent(v: string | undefined): { traceId: string; spanId: string } | undefined {
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/.exec(v ?? '')
  return m === null ? undefined : { traceId: m[1] as string, spanId: m[2] as string }
}

/**
 * A service served by a stub NSE (in this process, answering a test netns as its own: the agent builds the
 * veth there), registered with `agent` by its unix URL, and a client netns.
 */
async function nseFor(t: Parameters<typeof makeNetns>[0], agent: Awaited<ReturnType<typeof startAgent>>, tag: string, pool: string) {
  const svc = `${tag}-api-${RUN}`
  await agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: svc, payload: 'IP', matches: [], pathIds: [] })
  const pod = makeNetns(t, 'tn')
  const dir = tempDir(t, 'nsm-trace-nse-')
  const name = `nse-${tag}-${RUN}`
  const nse = await startStubNse({ socket: join(dir, 'n.sock'), name, pool, netnsPath: pod.path })
  t.teardown(() => nse.close())
  await agent.client.unary(NetworkServiceEndpointRegistryDefinition, NetworkServiceEndpointRegistryDefinition.methods.register, {
    name,
    networkServiceNames: [svc],
    networkServiceLabels: {},
    url: `unix://${join(dir, 'n.sock')}`,
    expirationTime: { seconds: Math.floor(Date.now() / 1000) + 600, nanos: 0 },
    initialRegistrationTime: undefined,
    pathIds: [],
  })
  return { svc, name, nse, client: makeNetns(t, 'tc') }
}

t.test("a Request and a Close to an NSM endpoint carry the agent's trace context", async (t) => {
  const otlp = await startOtlpReceiver(t)
  const agent = await startAgent(t, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY: '50' } })
  const { svc, name, nse, client } = await nseFor(t, agent, 'tr', '10.72.0.0/24')
  const id = `trn-${RUN}`
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, client.path, 'nsm0', {}, svc))
  t.equal(conn.networkServiceEndpointName, name, 'the NSE served the Request')

  const atNse = nse.metadata.find((m) => m.method === 'request' && m.id === id)
  const sent = parseTraceparent(atNse?.entries.traceparent)
  t.ok(sent, `the NSE received a W3C traceparent: ${JSON.stringify(atNse?.entries.traceparent)}`)
  const requestSpan = (): ReceivedSpan | undefined => otlp.spans.find((s) => s.name === 'NetworkService/Request' && s.attributes['nsm.connection'] === id)
  await reach('the Request span and the sent span', async () => requestSpan() !== undefined && otlp.spans.some((s) => s.spanId === sent?.spanId))
  const request = requestSpan()
  t.equal(sent?.traceId, request?.traceId, "the traceparent's trace id is the agent's Request span's")
  const parent = otlp.spans.find((s) => s.spanId === sent?.spanId)
  t.equal(parent?.name, 'nse request', "its parent span is the agent's nse element")
  t.equal(parent?.traceId, request?.traceId)

  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  const closeAtNse = nse.metadata.find((m) => m.method === 'close' && m.id === id)
  const closeSent = parseTraceparent(closeAtNse?.entries.traceparent)
  t.ok(closeSent, 'the Close at the NSE carries a traceparent too')
  await reach('the Close span', async () => otlp.spans.some((s) => s.name === 'NetworkService/Close' && s.attributes['nsm.connection'] === id))
  const close = otlp.spans.find((s) => s.name === 'NetworkService/Close' && s.attributes['nsm.connection'] === id)
  t.equal(closeSent?.traceId, close?.traceId, "in the agent's Close trace")
  t.not(closeSent?.traceId, request?.traceId, 'a trace of its own, not the Request’s')
})

t.test('without tracing no traceparent is sent', async (t) => {
  const agent = await startAgent(t, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: '' } })
  const { svc, name, nse, client } = await nseFor(t, agent, 'tr0', '10.73.0.0/24')
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`trn0-${RUN}`, client.path, 'nsm0', {}, svc))
  t.equal(conn.networkServiceEndpointName, name)
  t.equal(nse.metadata[0]?.entries.traceparent, undefined, 'no traceparent')
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
})
