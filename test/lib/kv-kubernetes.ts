// Shared by the Kubernetes store backend's tests (test/integration/store-kubernetes*.test.ts): a store client
// (agent/store/kubernetes.ts) on the project's Kubernetes API fixture (k8s-fixture.ts) that t.teardown
// closes, the raw object behind an entry and its annotations, and a poll for a condition on the fixture.
import { KubernetesKv, type KubernetesKvOptions } from '../../agent/store/kubernetes'
import type { K8sFixture } from './k8s-fixture'
import type { KObject, Resource } from './k8s-fixture-api'
import { pollUntil } from './wait'

/** The namespace the store's objects live in (KubernetesKv's default). */
export const NS = 'nsm-system'
export const quiet = (): void => {}
type Teardown = { teardown(fn: () => void | Promise<void>): void }

/** A store client on the fixture that t.teardown closes. */
export function store(t: Teardown, f: K8sFixture, opts: Partial<KubernetesKvOptions> = {}): KubernetesKv {
  const kv = new KubernetesKv({ kubeconfig: f.writeKubeconfig(), timeoutMs: 1000, backoff: { initialMs: 50, maxMs: 500 }, log: quiet, ...opts })
  t.teardown(() => kv.close())
  return kv
}

export function raw(f: K8sFixture, resource: Resource, name: string): KObject {
  const o = f.get(resource, NS, name)
  if (o === undefined) throw new Error(`${resource}/${name}: not in the fixture`)
  return o
}

export function annotations(o: KObject): Record<string, string> {
  return (o.metadata['annotations'] ?? {}) as Record<string, string>
}

/** Resolves once `cond()` holds (checked every 20 ms); fails the wait after 30 s with `what`. */
export const until = (what: string, cond: () => boolean): Promise<number> => pollUntil(what, cond, 30_000, 20)
