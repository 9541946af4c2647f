// OpenTelemetry traces of real agents (ARCHITECTURE §13) exported over OTLP http/protobuf to a receiver in
// this test, which decodes what it gets: a span per CNI command whose parent is the runtime's traceparent
// (CNI_ARGS TRACEPARENT, or TRACEPARENT in the plugin's environment), the Request/Close under it with the
// service, endpoint, mechanism and pod, one span per pipeline element nested as they call each other, the
// kernel batches under the mechanism; a failed call marked ERROR with its code; and one trace that spans two
// agents (the traceparent in the peer call's gRPC metadata). The other protocols, grpc and http/json, each
// carry a Request and its Close to a receiver of theirs.
import t from 'tap'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { startAgent } from '../lib/agent'
import { reach } from '../lib/cluster'
import { kernelRequest, SEED, seedAgent } from '../lib/mesh'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { makeMeshBed, registerEndpointOn, registerService, seenEverywhere } from '../lib/mesh-bed'
import { makeNetns, RUN } from '../lib/netns'
import { childrenOf, descendantsOf, startOtlpGrpcReceiver, startOtlpReceiver, startOtlpReceiverIn, type OtlpReceiver, type ReceivedSpan } from '../lib/otlp'
import { stageNsm, resultOf } from './nsm-fixture'
import { callEnv, execPlugin, type CniCall, type CniOutcome } from '../conformance/exec'

t.setTimeout(90_000)

const OTEL_ENV = (endpoint: string) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_SERVICE_NAME: 'nsm-agent' })
const SERVER = 2 // SpanKind SERVER on the wire
const ERROR = 2 // Status code ERROR on the wire

function traceparent(): { header: string; traceId: string; spanId: string } {
  const traceId = randomBytes(16).toString('hex')
  const spanId = randomBytes(8).toString('hex')
  return { header: `00-${traceId}-${spanId}-01`, traceId, spanId }
}

/** Runs the shim with extra variables in its environment (execPlugin passes only the CNI_* ones). */
function execWithEnv(binary: string, c: CniCall, extra: Record<string, string>): Promise<CniOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env: { ...callEnv(c), ...extra }, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('exit', (code) => resolve({ exitCode: code ?? -1, stdout, stderr } as CniOutcome))
    child.stdin.end(JSON.stringify(c.stdin))
  })
}

function one(spans: readonly ReceivedSpan[], pred: (s: ReceivedSpan) => boolean, what: string): ReceivedSpan {
  const found = spans.filter(pred)
  if (found.length !== 1) throw new Error(`${what}: ${found.length} spans (${spans.map((s) => s.name).join(', ')})`)
  return found[0] as ReceivedSpan
}

t.test('CNI ADD and DEL: the runtime trace context, the Request/Close, each element, the kernel batches', async (t) => {
  const otlp = await startOtlpReceiver(t)
  const fw = makeNetns(t, 'fw')
  const pod = makeNetns(t, 'pod')
  const agent = await startAgent(t, { env: OTEL_ENV(otlp.endpoint) })
  await seedAgent(agent.client, fw.path, ['172.16.60.0/24'])
  const binDir = await stageNsm(t)
  const conf = (service: string) => ({ cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket: agent.socket, networkService: service })
  const addCtx = traceparent()
  const call = { containerId: `tr-${RUN}`, netns: pod.path, ifname: 'nsm0', path: binDir }
  const podArgs = `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-${RUN}`
  const add = await execPlugin(join(binDir, 'nsm'), { ...call, args: `${podArgs};TRACEPARENT=${addCtx.header}`, command: 'ADD', stdin: conf(SEED) })
  t.equal(add.exitCode, 0, add.stdout + add.stderr)
  // An element's span is made once the agent is idle and then queued as any ended span: it can come in an
  // export after its call's. So every span the checks look for is waited for.
  const arrived = (traceId: string, names: string[]) => reach(`spans ${names.join(', ')}`, async () => names.every((n) => otlp.spans.some((s) => s.traceId === traceId && s.name === n)))
  await arrived(addCtx.traceId, ['CNI ADD', 'NetworkService/Request', ...['validate', 'path', 'select', 'ipam', 'mechanism', 'persist'].map((e) => `${e} request`), 'netlink batch'])
  const inAdd = otlp.spans.filter((s) => s.traceId === addCtx.traceId)
  const cniAdd = one(inAdd, (s) => s.name === 'CNI ADD', 'CNI ADD')
  t.equal(cniAdd.parentSpanId, addCtx.spanId, "the CNI span's parent is the runtime's span (CNI_ARGS TRACEPARENT)")
  t.equal(cniAdd.kind, SERVER)
  t.match(cniAdd.attributes, { 'cni.command': 'ADD', 'cni.container_id': `tr-${RUN}`, 'cni.ifname': 'nsm0', 'k8s.namespace.name': 'shop', 'k8s.pod.name': `web-${RUN}`, 'nsm.pod': `shop/web-${RUN}`, 'cni.exit_code': 0 })
  t.match(cniAdd.resource, { 'service.name': 'nsm-agent', 'k8s.node.name': String })
  const request = one(childrenOf(inAdd, cniAdd), (s) => s.name === 'NetworkService/Request', 'Request under CNI ADD')
  t.match(request.attributes, { 'nsm.service': SEED, 'nsm.endpoint': 'firewall-1', 'nsm.mechanism': 'KERNEL', 'nsm.pod': `shop/web-${RUN}`, 'nsm.connection': String })
  // The elements, each the child of the one before it (an element calls the next); nse only hands a Request to
  // an endpoint without the NSM API on, and such a call has no span (agent/pipeline/chain.ts `observed`).
  t.notOk(inAdd.some((s) => s.name === 'nse request'), 'no span for an element that only hands the call on')
  let parent = request
  for (const name of ['validate', 'path', 'select', 'ipam', 'mechanism', 'persist']) {
    const el = one(childrenOf(inAdd, parent), (s) => s.name === `${name} request`, `${name} under ${parent.name}`)
    t.equal(el.attributes['nsm.element'], name)
    // Durations, not instants: the SDK anchors each span's clock to Date.now() when it starts, so two spans'
    // start times may be a millisecond or more apart from their true order; a span's own length is exact.
    t.ok(el.endNs - el.startNs <= parent.endNs - parent.startNs, `${name} takes no longer than ${parent.name}, which runs it`)
    parent = el
  }
  const mechanism = one(inAdd, (s) => s.name === 'mechanism request', 'mechanism')
  const batches = descendantsOf(inAdd, mechanism).filter((s) => s.name === 'netlink batch')
  t.ok(batches.length >= 2, `kernel batches under the mechanism element: ${batches.length}`)
  t.ok(batches.some((b) => b.attributes['netlink.netns'] === pod.path), "a batch in the pod's netns")
  t.ok(batches.every((b) => typeof b.attributes['netlink.messages'] === 'number' && typeof b.attributes['netlink.first'] === 'string'))

  // DEL with the trace context in the plugin's environment.
  const delCtx = traceparent()
  const del = await execWithEnv(join(binDir, 'nsm'), { ...call, args: podArgs, command: 'DEL', stdin: { ...conf(SEED), prevResult: resultOf(add) } }, { TRACEPARENT: delCtx.header })
  t.equal(del.exitCode, 0, del.stderr)
  await arrived(delCtx.traceId, ['NetworkService/Close', 'CNI DEL', 'ipam close', 'mechanism close', 'netlink batch'])
  const inDel = otlp.spans.filter((s) => s.traceId === delCtx.traceId)
  const cniDel = one(inDel, (s) => s.name === 'CNI DEL', 'CNI DEL')
  t.equal(cniDel.parentSpanId, delCtx.spanId, "the parent from the plugin's TRACEPARENT variable")
  const close = one(childrenOf(inDel, cniDel), (s) => s.name === 'NetworkService/Close', 'Close under CNI DEL')
  t.match(close.attributes, { 'nsm.service': SEED, 'nsm.endpoint': 'firewall-1', 'nsm.mechanism': 'KERNEL', 'nsm.pod': `shop/web-${RUN}`, 'nsm.connection': request.attributes['nsm.connection'] })
  // On Close validate, path, select, nse and persist only hand the call on: ipam's span is the Close's child.
  const ipamClose = one(childrenOf(inDel, close), (s) => s.name === 'ipam close', 'ipam close under the Close')
  const mechanismClose = one(childrenOf(inDel, ipamClose), (s) => s.name === 'mechanism close', 'mechanism close under ipam close')
  t.ok(descendantsOf(inDel, mechanismClose).some((s) => s.name === 'netlink batch'), 'the kernel batches of the Close under the mechanism')
  t.notOk(inDel.some((s) => s.name === 'validate close'), "validate's close has no span")

  // A failing ADD: the CNI span and the Request are ERROR, with the code the runtime saw.
  const badCtx = traceparent()
  const bad = await execPlugin(join(binDir, 'nsm'), { ...call, containerId: `tr2-${RUN}`, args: `TRACEPARENT=${badCtx.header}`, command: 'ADD', stdin: conf('nobody-offers-this') })
  t.not(bad.exitCode, 0)
  const code = (JSON.parse(bad.stdout) as { code: number }).code
  await arrived(badCtx.traceId, ['CNI ADD', 'NetworkService/Request'])
  const inBad = otlp.spans.filter((s) => s.traceId === badCtx.traceId)
  const badAdd = one(inBad, (s) => s.name === 'CNI ADD', 'failed CNI ADD')
  t.equal(badAdd.status.code, ERROR, 'the CNI span is ERROR')
  t.equal(badAdd.attributes['nsm.cni_code'], code, `with the CNI code ${code}`)
  const badRequest = one(childrenOf(inBad, badAdd), (s) => s.name === 'NetworkService/Request', 'failed Request')
  t.equal(badRequest.status.code, ERROR)
  t.equal(badRequest.attributes['nsm.cni_code'], code, 'the Request carries the same code')
  t.ok(badRequest.events.includes('exception'), 'the exception is recorded')
})

t.test('no OTEL_EXPORTER_OTLP_ENDPOINT: nothing is exported', async (t) => {
  const otlp = await startOtlpReceiver(t)
  const fw = makeNetns(t, 'fw')
  const agent = await startAgent(t, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_BSP_SCHEDULE_DELAY: '50' } })
  await seedAgent(agent.client, fw.path, ['172.16.61.0/24'])
  await agent.stop('SIGTERM')
  t.equal(otlp.requests, 0, 'no export request')
})

const PROTOCOLS = [
  { protocol: 'grpc', over: 'OTLP/gRPC', receiver: startOtlpGrpcReceiver, pool: '172.16.63.0/24' },
  { protocol: 'http/json', over: 'OTLP/JSON (application/json)', receiver: startOtlpReceiver, pool: '172.16.64.0/24' },
] as const

for (const { protocol, over, receiver, pool } of PROTOCOLS) {
  t.test(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocol}: a Request and its Close arrive over ${over}, elements and kernel batches inside`, async (t) => {
    const otlp: OtlpReceiver & { contentTypes?: string[] } = await receiver(t)
    const fw = makeNetns(t, 'fw')
    const pod = makeNetns(t, 'pod')
    const agent = await startAgent(t, { env: { ...OTEL_ENV(otlp.endpoint), OTEL_EXPORTER_OTLP_PROTOCOL: protocol } })
    await seedAgent(agent.client, fw.path, [pool])
    const id = `${protocol.replace('/', '-')}-${RUN}`
    const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, pod.path, 'nsm0'))
    await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
    await reach('the Close span', async () => otlp.spans.some((s) => s.name === 'NetworkService/Close' && s.attributes['nsm.connection'] === id))
    const request = one(otlp.spans, (s) => s.name === 'NetworkService/Request' && s.attributes['nsm.connection'] === id, 'the Request span')
    await reach('a netlink batch span inside the Request', async () => descendantsOf(otlp.spans, request).some((s) => s.name === 'netlink batch'))
    const inside = descendantsOf(otlp.spans, request)
    t.ok(inside.some((s) => s.name === 'mechanism request'), 'the mechanism element inside the Request')
    t.ok(inside.every((s) => s.traceId === request.traceId), 'one trace')
    t.ok(inside.filter((s) => s.name === 'netlink batch').every((b) => typeof b.attributes['netlink.messages'] === 'number'), 'integer attributes arrive as integers')
    t.match(request.attributes, { 'nsm.service': SEED, 'nsm.mechanism': 'KERNEL' })
    t.equal(request.resource['service.name'], 'nsm-agent')
    if (otlp.contentTypes !== undefined) t.same(new Set(otlp.contentTypes), new Set(['application/json']), 'every export was OTLP/JSON')
    await agent.stop('SIGTERM')
  })
}

t.test("the spans still buffered at SIGTERM are exported (the exporter's thread drained before the agent exits)", async (t) => {
  const otlp = await startOtlpReceiver(t)
  const fw = makeNetns(t, 'fw')
  const pod = makeNetns(t, 'pod')
  // A delay far past the test: only the shutdown's flush can send these spans.
  const agent = await startAgent(t, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY: '600000' } })
  await seedAgent(agent.client, fw.path, ['172.16.62.0/24'])
  const id = `sig-${RUN}`
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(id, pod.path, 'nsm0'))
  t.equal(otlp.requests, 0, 'nothing exported yet')
  const exit = await agent.stop('SIGTERM')
  t.equal(exit.code, 0, 'a clean exit')
  t.ok(otlp.spans.some((s) => s.name === 'NetworkService/Request' && s.attributes['nsm.connection'] === id), 'the Request span arrived')
  t.ok(otlp.spans.some((s) => s.name === 'mechanism request'), 'with its elements')
})

t.test('one trace across two agents: the traceparent travels in the peer call', async (t) => {
  // The agents run in their nodes' namespaces: the receiver runs in the underlay's, on the bridge (etcd's
  // address there). The bed starts its agents first, so they are restarted with the endpoint in their env.
  const env: Record<string, string> = { OTEL_BSP_SCHEDULE_DELAY: '50' }
  const mesh = await makeMeshBed(t, 2, { agent: { env } })
  const [n1, n2] = mesh.nodes
  if (n1 === undefined || n2 === undefined) throw new Error('two nodes')
  const host = new URL(mesh.etcd.endpoints[0] ?? '').hostname
  const otlp = await startOtlpReceiverIn(t, mesh.bed.underlay.name, host)
  env.OTEL_EXPORTER_OTLP_ENDPOINT = otlp.endpoint
  for (const n of [n1, n2]) {
    await n.agent.stop('SIGTERM')
    await mesh.restart(n)
  }
  const svc = `tr-${RUN}`
  await registerService(n1, svc)
  const ep = makeNetns(t, 'ep')
  await registerEndpointOn(n2, { name: `e-${RUN}`, netns: ep.path, service: svc, labels: {}, pools: ['172.31.62.0/24'], routes: [] })
  t.ok(await seenEverywhere(mesh, [`e-${RUN}`]))
  const binDir = await stageNsm(t)
  const pod = makeNetns(t, 'p')
  const ctx = traceparent()
  const conf = { cniVersion: '1.1.0', name: 'nsm-net', type: 'nsm', socket: n1.agent.socket, networkService: svc }
  const call = { containerId: `far-${RUN}`, netns: pod.path, ifname: 'nsm0', path: binDir, args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=far;TRACEPARENT=${ctx.header}` }
  const add = await execPlugin(join(binDir, 'nsm'), { ...call, command: 'ADD', stdin: conf })
  t.equal(add.exitCode, 0, add.stdout + add.stderr)
  t.teardown(() => execPlugin(join(binDir, 'nsm'), { ...call, command: 'DEL', stdin: { ...conf, prevResult: resultOf(add) } }).then(() => undefined))
  const of = (node: string) => otlp.spans.filter((s) => s.traceId === ctx.traceId && s.resource['k8s.node.name'] === node)
  // An element's span is made once its agent is idle and then queued as any ended span: it can come in an
  // export after its call's. So every span the checks below look for is waited for.
  const has = (node: string, name: string) => of(node).some((s) => s.name === name)
  await reach('the spans of both nodes', async () => ['CNI ADD', 'NetworkService/Request', 'forward request'].every((n) => has('n1', n)) && ['NetworkService/Request', 'validate request', 'netlink batch'].every((n) => has('n2', n)), 15_000)
  const cniAdd = one(of('n1'), (s) => s.name === 'CNI ADD', 'CNI ADD on n1')
  t.equal(cniAdd.parentSpanId, ctx.spanId)
  const forward = one(of('n1'), (s) => s.name === 'forward request', 'forward on n1')
  t.ok(descendantsOf(of('n1'), cniAdd).includes(forward), "n1's forward element is inside the CNI ADD")
  const remote = one(of('n2'), (s) => s.name === 'NetworkService/Request', 'Request on n2')
  t.equal(remote.parentSpanId, forward.spanId, "n2's Request is the child of n1's forward element: one trace across both agents")
  t.match(remote.attributes, { 'nsm.service': svc, 'nsm.endpoint': `e-${RUN}`, 'nsm.mechanism': 'VXLAN' })
  const n1Request = one(of('n1'), (s) => s.name === 'NetworkService/Request', 'Request on n1')
  // The client's connection answers with the mechanism it asked for (KERNEL); the remote half is VXLAN.
  t.match(n1Request.attributes, { 'nsm.service': svc, 'nsm.endpoint': `e-${RUN}`, 'nsm.mechanism': 'KERNEL', 'nsm.pod': 'default/far' })
  t.ok(childrenOf(of('n2'), remote).some((s) => s.name === 'validate request'), "n2's elements under its Request")
  t.ok(descendantsOf(of('n2'), remote).some((s) => s.name === 'netlink batch'), "n2's kernel batches in the same trace")
})
