// Pod-info sources for the agent: the public API of agent/podinfo (see types.ts for the contract).
//
// openPodInfoSource picks the source from the agent's configuration: a pod-info directory when one is
// given (runs without Kubernetes), else the Kubernetes API (kubeconfig path, in-cluster service account,
// or $KUBECONFIG).
import { DirectoryPodInfoSource } from './directory'
import { KubernetesPodInfoSource, type KubernetesPodInfoOptions } from './kubernetes'
import type { PodInfoSource } from './types'

export { DirectoryPodInfoSource, parsePodInfoDocument, type DirectoryPodInfoOptions } from './directory'
export { KubernetesPodInfoSource, loadKubeConfig, toPodInfo, type KubernetesPodInfoOptions } from './kubernetes'
export { checkPodRef, PodInfoError, type PodInfo, type PodInfoErrorCode, type PodInfoSource } from './types'

export type PodInfoConfig =
  | { kind: 'directory'; dir: string; nodeName?: string }
  | ({ kind: 'kubernetes' } & KubernetesPodInfoOptions)

export function openPodInfoSource(config: PodInfoConfig): PodInfoSource {
  if (config.kind === 'directory') {
    return new DirectoryPodInfoSource(config.nodeName === undefined ? { dir: config.dir } : { dir: config.dir, nodeName: config.nodeName })
  }
  const { kind: _kind, ...opts } = config
  return new KubernetesPodInfoSource(opts)
}
