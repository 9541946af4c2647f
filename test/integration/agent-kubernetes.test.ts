// dist/nsm-agent with --kubernetes against the API fixture (the one stand-in allowed): the bundled agent
// loads the Kubernetes client from node_modules only in this mode, watches its node's pods, and answers
// GetPodInfo with a pod's labels and annotations — what the CNI plugin asks for at ADD.
import t from 'tap'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { startAgent } from '../lib/agent'
import { startK8sFixture } from '../lib/k8s-fixture'

t.test('GetPodInfo answers from the Kubernetes API watch of the node', async (t) => {
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'default', name: 'web-1', nodeName: 'node-a', uid: 'uid-web-1', labels: { app: 'web' }, annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity/nsm0' } })
  f.putPod({ namespace: 'default', name: 'db-1', nodeName: 'node-b', labels: { app: 'db' } })
  const agent = await startAgent(t, { args: ['--kubernetes', '--kubeconfig', f.writeKubeconfig(), '--node-name', 'node-a'] })
  const pod = await agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'web-1' })
  t.match(pod, { namespace: 'default', name: 'web-1', uid: 'uid-web-1', nodeName: 'node-a', labels: { app: 'web' }, annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity/nsm0' } })
  // A pod of another node is not watched: NOT_FOUND.
  const other = await agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'db-1' }).then(
    () => undefined,
    (err: unknown) => err as { agentCode?: string },
  )
  t.equal(other?.agentCode, 'NOT_FOUND')
  // A pod that appears later is seen through the watch.
  f.putPod({ namespace: 'default', name: 'web-2', nodeName: 'node-a', labels: { app: 'web', tier: 'front' } })
  const later = await agent.client.unary(AgentDefinition, AgentDefinition.methods.getPodInfo, { namespace: 'default', name: 'web-2' })
  t.same(later.labels, { app: 'web', tier: 'front' })
  t.equal((await agent.stop('SIGTERM')).code, 0)
})
