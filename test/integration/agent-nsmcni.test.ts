// nsm-cni's own service on the real agent: GetPodInfo through a pod-info directory (found, not found,
// bad name, no source configured), and SIGTERM with open MonitorConnections and Find-watch streams
// (the streams end cleanly, the agent exits 0, the socket is gone).
import t from 'tap'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni.js'
import { MonitorConnectionDefinition, type ConnectionEvent } from '../../proto/gen/networkservice/connection.js'
import { NetworkServiceEndpointRegistryDefinition as NSE_REG, NetworkServiceEndpoint, type NetworkServiceEndpointResponse } from '../../proto/gen/registry/registry.js'
import { GrpcCallError } from '../../agent/client/client.js'
import { GrpcStatus } from '../../pkg/codes.js'
import { collect, startAgent, tempDir } from '../lib/agent.js'

async function code(p: Promise<unknown>): Promise<number | string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    return err instanceof GrpcCallError ? err.code : String(err)
  }
}

t.test('GetPodInfo through a pod-info directory', async (t) => {
  const dir = tempDir(t)
  const pods = join(dir, 'pods')
  mkdirSync(pods)
  writeFileSync(join(pods, 'default_web-1.json'), JSON.stringify({ labels: { app: 'web' }, annotations: { 'networkservicemesh.io': 'kernel://secure-intranet-connectivity/nsm-1' }, uid: 'u-1' }))
  const agent = await startAgent(t, { args: ['--pod-info-dir', pods, '--node-name', 'node-1'] })
  const pod = await agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'web-1' })
  t.same(pod.labels, { app: 'web' })
  t.equal(pod.annotations['networkservicemesh.io'], 'kernel://secure-intranet-connectivity/nsm-1')
  t.equal(pod.nodeName, 'node-1')
  t.equal(await code(agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'nobody' })), GrpcStatus.NOT_FOUND)
  t.equal(await code(agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'Bad_NS', name: 'x' })), GrpcStatus.INVALID_ARGUMENT)
  t.equal(await code(agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: '', name: 'x' })), GrpcStatus.INVALID_ARGUMENT)
})

t.test('GetPodInfo without a pod-info source is UNAVAILABLE', async (t) => {
  const agent = await startAgent(t)
  t.equal(await code(agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'web-1' })), GrpcStatus.UNAVAILABLE)
})

t.test('SIGTERM with open streams: streams end, exit 0, socket removed', async (t) => {
  const agent = await startAgent(t)
  const monitor = collect<ConnectionEvent>((on, signal) =>
    agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, on, { signal }),
  )
  const watch = collect<NetworkServiceEndpointResponse>((on, signal) =>
    agent.client.stream(NSE_REG, NSE_REG.methods.find, { networkServiceEndpoint: NetworkServiceEndpoint.fromPartial({}), watch: true }, on, { signal }),
  )
  t.teardown(() => {
    monitor.cancel()
    watch.cancel()
  })
  await monitor.until(() => true)
  // Same http2 session: once this answers, the server has seen the watch call opened before it.
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  const exit = await agent.stop('SIGTERM')
  t.same(exit, { code: 0, signal: null })
  await t.resolves(monitor.done, 'monitor stream ended with OK')
  await t.resolves(watch.done, 'watch stream ended with OK')
  t.notOk(existsSync(agent.socket))
})
