// The state behind the Kubernetes API fixture (k8s-fixture.ts), as etcd and the watch cache are behind the
// real API: the objects by resource, namespace and name, the resourceVersion counter, the history of
// changes a watch replays (until compact()), and the open watch streams each change is sent to, filtered by
// their namespace and selectors. The fixture's server reads and writes it; tests set it up and inspect it
// directly (put, putPod, remove, get, compact, dropWatches).
import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import { eventFor, key, RESOURCES, writeBookmark, type Change, type Filter, type KObject, type Resource } from './k8s-fixture-api'

/** A watch stream the server opened: the changes in its scope are written to `res`. */
export interface OpenWatch { resource: Resource; namespace: string | undefined; filter: Filter; res: ServerResponse; bookmarks: boolean; end(): void }

export class K8sObjectStore {
  protected rv = 1
  protected compacted = 0
  protected readonly objects = new Map<string, KObject>()
  protected readonly history: Change[] = []
  protected readonly watches = new Set<OpenWatch>()

  /** Sends a BOOKMARK with the current version to every open watch that allows bookmarks. */
  sendBookmarks(): void {
    for (const w of this.watches) if (w.bookmarks) writeBookmark(w.res, w.resource, this.rv)
  }

  resourceVersion(): string {
    return String(this.rv)
  }

  get(resource: Resource, namespace: string, name: string): KObject | undefined {
    return this.objects.get(key(resource, namespace, name))
  }

  /** Creates or replaces an object (ADDED or MODIFIED); returns it as stored. */
  put(resource: Resource, obj: { metadata: { namespace: string; name: string; [k: string]: unknown }; [k: string]: unknown }): KObject {
    const k = key(resource, obj.metadata.namespace, obj.metadata.name)
    const old = this.objects.get(k)
    this.rv += 1
    const meta: Record<string, unknown> = old?.metadata ?? {}
    const stored = structuredClone(obj) as KObject
    stored['apiVersion'] = RESOURCES[resource].apiVersion
    stored['kind'] = RESOURCES[resource].kind
    stored.metadata = {
      uid: meta['uid'] ?? randomUUID(), creationTimestamp: meta['creationTimestamp'] ?? new Date().toISOString(),
      ...stored.metadata, resourceVersion: String(this.rv),
    }
    this.objects.set(k, stored)
    this.record({ rv: this.rv, resource, type: old === undefined ? 'ADDED' : 'MODIFIED', old, obj: stored })
    return stored
  }

  /** Deletes an object (DELETED); false when it did not exist. */
  remove(resource: Resource, namespace: string, name: string): boolean {
    const k = key(resource, namespace, name)
    const old = this.objects.get(k)
    if (old === undefined) return false
    this.objects.delete(k)
    this.rv += 1
    const obj = { ...old, metadata: { ...old.metadata, resourceVersion: String(this.rv) } }
    this.record({ rv: this.rv, resource, type: 'DELETED', old, obj })
    return true
  }

  /** Adds or replaces a pod built from the few fields the tests care about. */
  putPod(p: { namespace: string; name: string; nodeName?: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string> }): KObject {
    const metadata: KObject['metadata'] = { namespace: p.namespace, name: p.name, labels: p.labels ?? {}, annotations: p.annotations ?? {} }
    if (p.uid !== undefined) metadata['uid'] = p.uid
    const spec: Record<string, unknown> = { containers: [{ name: 'main', image: 'busybox' }] }
    if (p.nodeName !== undefined) spec['nodeName'] = p.nodeName
    return this.put('pods', { metadata, spec, status: { phase: p.nodeName === undefined ? 'Pending' : 'Running' } })
  }

  /** Forgets the history so far: a watch from an older resourceVersion now gets 410 Gone. */
  compact(): void {
    this.compacted = this.rv
    this.history.length = 0
  }

  /** Ends every open watch stream, as an API server restart or a load balancer timeout does. */
  dropWatches(): void {
    for (const w of [...this.watches]) w.end()
  }

  openWatches(): number {
    return this.watches.size
  }

  protected record(c: Change): void {
    this.history.push(c)
    for (const w of this.watches) {
      if (w.resource !== c.resource) continue
      const ev = eventFor(c, w.namespace, w.filter)
      if (ev !== undefined) w.res.write(`${JSON.stringify(ev)}\n`)
    }
  }
}
