// The Kubernetes API fixture itself, over raw HTTPS: what later stores (the Kubernetes registry store)
// rely on: NetworkService / NetworkServiceEndpoint CRs (create, replace with conflicts, delete, list,
// watch with replay and selector transitions), selector errors, auth, and 410 Gone.
import { request } from 'node:https'
import t from 'tap'
import { startK8sFixture, type K8sFixture } from '../lib/k8s-fixture'
import { FIXTURE_CA } from '../lib/k8s-fixture-cert'

interface Reply { status: number; body: any } // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON of many shapes, checked by the assertions

function call(f: K8sFixture, method: string, path: string, body?: unknown, token = f.token): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(`${f.url}${path}`, { method, ca: FIXTURE_CA, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })
}

/** Opens a watch and collects its events until `count` arrived; returns them (the stream is then closed). */
function watchEvents(f: K8sFixture, path: string, count: number): Promise<Array<{ type: string; object: any }>> { // eslint-disable-line @typescript-eslint/no-explicit-any -- event objects of any resource
  return new Promise((resolve, reject) => {
    const events: Array<{ type: string; object: any }> = [] // eslint-disable-line @typescript-eslint/no-explicit-any -- as above
    const req = request(`${f.url}${path}`, { ca: FIXTURE_CA, headers: { authorization: `Bearer ${f.token}` } }, (res) => {
      let buf = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        buf += c
        let nl: number
        while ((nl = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)))
          buf = buf.slice(nl + 1)
          if (events.length === count) {
            req.destroy()
            resolve(events)
          }
        }
      })
      res.on('end', () => resolve(events))
    })
    req.on('error', (err) => (events.length === count ? undefined : reject(err)))
    req.end()
  })
}

const NS = '/apis/networkservicemesh.io/v1/namespaces/nsm-system/networkservices'
const NSE = '/apis/networkservicemesh.io/v1/namespaces/nsm-system/networkserviceendpoints'

t.test('NetworkService CRs: create, conflict, replace, list, delete', async (t) => {
  const f = await startK8sFixture(t)
  const svc = { apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { name: 'secure-intranet-connectivity' }, spec: { payload: 'IP' } }
  const created = await call(f, 'POST', NS, svc)
  t.equal(created.status, 201)
  t.equal(created.body.metadata.namespace, 'nsm-system')
  t.ok(created.body.metadata.uid)
  t.equal((await call(f, 'POST', NS, svc)).status, 409, 'AlreadyExists')

  const stale = { ...created.body, metadata: { ...created.body.metadata, resourceVersion: '1' }, spec: { payload: 'ETHERNET' } }
  const conflict = await call(f, 'PUT', `${NS}/secure-intranet-connectivity`, stale)
  t.same([conflict.status, conflict.body.kind, conflict.body.reason], [409, 'Status', 'Conflict'])
  const replaced = await call(f, 'PUT', `${NS}/secure-intranet-connectivity`, { ...created.body, spec: { payload: 'ETHERNET' } })
  t.equal(replaced.status, 200)
  t.equal(replaced.body.spec.payload, 'ETHERNET')

  const list = await call(f, 'GET', '/apis/networkservicemesh.io/v1/networkservices')
  t.equal(list.body.kind, 'NetworkServiceList')
  t.equal(list.body.metadata.resourceVersion, f.resourceVersion())
  t.same(list.body.items.map((o: { metadata: { name: string } }) => o.metadata.name), ['secure-intranet-connectivity'])

  t.equal((await call(f, 'DELETE', `${NS}/secure-intranet-connectivity`)).status, 200)
  t.equal((await call(f, 'GET', `${NS}/secure-intranet-connectivity`)).status, 404)
  t.equal((await call(f, 'DELETE', `${NS}/secure-intranet-connectivity`)).status, 404)
})

t.test('watch replays from a version, streams live, and follows field selectors', async (t) => {
  const f = await startK8sFixture(t)
  const nse = (name: string, services: string[]): unknown => ({ metadata: { name }, spec: { network_service_names: services } })
  await call(f, 'POST', NSE, nse('fw-1', ['secure-intranet-connectivity']))
  const from = f.resourceVersion()
  await call(f, 'POST', NSE, nse('vpn-1', ['secure-intranet-connectivity']))
  const got = watchEvents(f, `${NSE}?watch=1&resourceVersion=${from}&fieldSelector=metadata.name%3Dfw-1`, 2)
  const all = watchEvents(f, `${NSE}?watch=true&resourceVersion=${from}`, 3)
  const fw = (await call(f, 'GET', `${NSE}/fw-1`)).body
  await call(f, 'PUT', `${NSE}/fw-1`, { ...fw, spec: { network_service_names: ['other'] } })
  await call(f, 'DELETE', `${NSE}/fw-1`)
  t.same((await got).map((e) => [e.type, e.object.metadata.name]), [['MODIFIED', 'fw-1'], ['DELETED', 'fw-1']], 'vpn-1 filtered out, no replay of fw-1 creation')
  t.same((await all).map((e) => [e.type, e.object.metadata.name]), [['ADDED', 'vpn-1'], ['MODIFIED', 'fw-1'], ['DELETED', 'fw-1']])
})

t.test('pods: a bind to the node is ADDED to a node watcher, a move away is DELETED', async (t) => {
  const f = await startK8sFixture(t)
  const events = watchEvents(f, '/api/v1/pods?watch=1&fieldSelector=spec.nodeName%3Dnode-a', 2)
  await new Promise((r) => f.events.once('watch', r))
  f.putPod({ namespace: 'default', name: 'p', labels: { app: 'x' } })
  f.putPod({ namespace: 'default', name: 'p', nodeName: 'node-a', labels: { app: 'x' } })
  f.putPod({ namespace: 'default', name: 'p', nodeName: 'node-b', labels: { app: 'x' } })
  t.same((await events).map((e) => [e.type, e.object.spec.nodeName]), [['ADDED', 'node-a'], ['DELETED', 'node-b']])
})

t.test('selectors, auth and Gone as the real API answers them', async (t) => {
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'a', name: 'p1', nodeName: 'n1', labels: { app: 'web' } })
  f.putPod({ namespace: 'b', name: 'p2', nodeName: 'n1', labels: { app: 'db' } })
  const names = async (q: string): Promise<string[]> =>
    (await call(f, 'GET', `/api/v1/pods?${q}`)).body.items.map((p: { metadata: { name: string } }) => p.metadata.name)
  t.same(await names('labelSelector=app%3Dweb'), ['p1'])
  t.same(await names('labelSelector=app!%3Dweb'), ['p2'])
  t.same(await names('fieldSelector=metadata.namespace%3Db'), ['p2'])
  t.same((await call(f, 'GET', '/api/v1/namespaces/a/pods')).body.items.length, 1)
  const unsupported = await call(f, 'GET', `${NSE}?fieldSelector=spec.url%3Dx`)
  t.same([unsupported.status, unsupported.body.message], [400, 'field label not supported: spec.url'])
  t.equal((await call(f, 'GET', '/api/v1/pods', undefined, 'wrong')).status, 401)
  t.equal((await call(f, 'GET', '/api/v1/services')).status, 404)
  const rv = f.resourceVersion()
  f.putPod({ namespace: 'a', name: 'p3', nodeName: 'n1' })
  f.compact()
  const [gone] = await watchEvents(f, `/api/v1/pods?watch=1&resourceVersion=${rv}`, 1)
  t.same([gone?.type, gone?.object.code, gone?.object.reason], ['ERROR', 410, 'Expired'])
})

t.test('the client library drives the CRs: CustomObjectsApi, KubernetesObjectApi (discovery, merge patch), Watch', async (t) => {
  const { CustomObjectsApi, KubernetesObjectApi, KubeConfig, PatchStrategy, Watch } = await import('@kubernetes/client-node')
  const f = await startK8sFixture(t)
  const kc = new KubeConfig()
  kc.loadFromFile(f.writeKubeconfig())
  const group = 'networkservicemesh.io'
  const version = 'v1'
  const namespace = 'nsm-system'
  const plural = 'networkserviceendpoints'

  const seen: Array<[string, string]> = []
  const watchReady = new Promise((r) => f.events.once('watch', r))
  const controller = await new Watch(kc).watch(`/apis/${group}/${version}/namespaces/${namespace}/${plural}`, { resourceVersion: f.resourceVersion() },
    (type: string, obj: { spec?: { url?: string } }) => seen.push([type, obj.spec?.url ?? '']), () => {})
  t.teardown(() => controller.abort())
  await watchReady

  const custom = kc.makeApiClient(CustomObjectsApi)
  const body = { apiVersion: `${group}/${version}`, kind: 'NetworkServiceEndpoint', metadata: { name: 'fw-1' }, spec: { network_service_names: ['secure-intranet-connectivity'], url: 'file:///var/run/netns/a' } }
  const created = (await custom.createNamespacedCustomObject({ group, version, namespace, plural, body })) as { metadata: { uid: string } }
  t.ok(created.metadata.uid)
  const listed = (await custom.listNamespacedCustomObject({ group, version, namespace, plural })) as { items: unknown[] }
  t.equal(listed.items.length, 1)

  const objects = KubernetesObjectApi.makeApiClient(kc)
  const patched = await objects.patch({ apiVersion: `${group}/${version}`, kind: 'NetworkServiceEndpoint', metadata: { name: 'fw-1', namespace }, spec: { url: 'file:///var/run/netns/b' } } as never, undefined, undefined, undefined, undefined, PatchStrategy.MergePatch)
  t.same((patched as { spec: unknown }).spec, { network_service_names: ['secure-intranet-connectivity'], url: 'file:///var/run/netns/b' }, 'merge patch keeps the other fields')
  await custom.deleteNamespacedCustomObject({ group, version, namespace, plural, name: 'fw-1' })
  await t.rejects(custom.getNamespacedCustomObject({ group, version, namespace, plural, name: 'fw-1' }), { code: 404 })

  for (let i = 0; i < 500 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 10))
  t.same(seen, [['ADDED', 'file:///var/run/netns/a'], ['MODIFIED', 'file:///var/run/netns/b'], ['DELETED', 'file:///var/run/netns/b']])
})
