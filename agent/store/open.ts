// Opens the shared engine the agent config names (ARCHITECTURE §12). Each backend's client library is
// loaded only when chosen: an agent on the file store never loads etcd3 or the Kubernetes client.
import type { AgentConfig } from '../config/config.js'
import type { Kv } from './kv.js'

export type SharedStoreConfig = Pick<AgentConfig, 'store' | 'etcdEndpoints' | 'etcdPrefix' | 'etcdCa' | 'etcdCert' | 'etcdKey' | 'storeNamespace' | 'kubeconfig'>

/** The engine for `--store etcd|kubernetes`; undefined for `file` (the state dir's own files). */
export async function openSharedStore(config: SharedStoreConfig, log: (msg: string, fields: Record<string, unknown>) => void): Promise<Kv | undefined> {
  switch (config.store) {
    case 'file':
      return undefined
    case 'etcd': {
      const { EtcdKv } = await import('./etcd.js')
      const tls = config.etcdCa === undefined ? undefined : { ca: config.etcdCa, ...(config.etcdCert === undefined ? {} : { cert: config.etcdCert }), ...(config.etcdKey === undefined ? {} : { key: config.etcdKey }) }
      return EtcdKv.open({ endpoints: config.etcdEndpoints, prefix: config.etcdPrefix, ...(tls === undefined ? {} : { tls }) })
    }
    case 'kubernetes': {
      const { KubernetesKv } = await import('./kubernetes.js')
      return new KubernetesKv({ namespace: config.storeNamespace, ...(config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig }), log })
    }
  }
}
