// GetPodInfo for one call (DESIGN §4 step 2): the pod's labels and annotations, looked up by the agent
// from K8S_POD_NAMESPACE / K8S_POD_NAME (a pod-info directory or the Kubernetes API).
//
// When the configuration names the services itself (a NetworkAttachmentDefinition, args, CNI_ARGS), the pod
// only adds labels: a pod the agent cannot find (podman passes its container name, which may be no
// Kubernetes name; an agent without a pod-info source) attaches without them. When the services come from
// the annotations, the pod must be found: NOT_FOUND (the agent's watch may lag) is 11, try again.
import type { PodInfo } from '../../proto/gen/nsmcni/nsmcni'
import { isUnreachable, toCniError, type Agent } from './agent'
import type { NsmConfig } from './config'

export async function lookupPod(agent: Agent, cfg: NsmConfig): Promise<PodInfo | undefined> {
  if (cfg.pod === undefined) return undefined
  try {
    return await agent.podInfo(cfg.pod.namespace, cfg.pod.name)
  } catch (err) {
    if (cfg.explicit !== undefined && !isUnreachable(err)) return undefined
    throw toCniError(err, `GetPodInfo ${cfg.pod.namespace}/${cfg.pod.name}`, cfg.socket)
  }
}
