// The pod of one call (ARCHITECTURE §4 step 2): its labels and annotations from the agent's pod-info source (a
// pod-info directory or the Kubernetes API), named by K8S_POD_NAMESPACE / K8S_POD_NAME.
//
// When the configuration names the services itself (a NetworkAttachmentDefinition, args, CNI_ARGS), the pod
// only adds labels: a pod the agent cannot find (podman passes its container name, which may be no
// Kubernetes name; an agent without a pod-info source) attaches without them. When the services come from
// the annotations, the pod must be found: not found yet (the watch may lag) is 11, try again; an invalid
// pod-info file is 105 and an invalid pod name 4, which no retry fixes.
import type { PodInfo } from '../podinfo/types.js'
import { CniCode, CniError } from '../../cni/protocol/index.js'
import type { CniDeps } from './deps.js'
import type { NsmConfig } from './config.js'

/**
 * Pod-info failures that retrying cannot fix: a pod name that is no Kubernetes name (4, CNI_ARGS), a pod-info
 * file that is not JSON or has a field of the wrong shape (105: the pod's metadata is invalid; the message
 * names the file and field). Anything else (the API unreachable) is 11, try again.
 */
const CODE_OF: Partial<Record<string, number>> = {
  INVALID_NAME: CniCode.INVALID_ENVIRONMENT,
  INVALID_FILE: CniCode.ANNOTATION_INVALID,
}

export async function lookupPod(deps: CniDeps, cfg: NsmConfig): Promise<PodInfo | undefined> {
  if (cfg.pod === undefined) return undefined
  const { namespace, name } = cfg.pod
  const source = deps.podInfo()
  const lenient = cfg.explicit !== undefined
  if (source === undefined) {
    if (lenient) return undefined
    throw new CniError(CniCode.TRY_AGAIN_LATER, `pod ${namespace}/${name}: the agent has no pod-info source (--pod-info-dir or --kubernetes) to read its annotations from`)
  }
  let pod: PodInfo | undefined
  try {
    pod = await source.get(namespace, name)
  } catch (err) {
    if (lenient) return undefined
    const code = CODE_OF[(err as { code?: string }).code ?? ''] ?? CniCode.TRY_AGAIN_LATER
    throw new CniError(code, `pod ${namespace}/${name}: ${(err as Error).message}`, { cause: err })
  }
  if (pod === undefined && !lenient) throw new CniError(CniCode.TRY_AGAIN_LATER, `pod ${namespace}/${name} not found (yet): try again`)
  return pod
}
