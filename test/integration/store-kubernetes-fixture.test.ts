// The Kubernetes API fixture (test/lib/k8s-fixture.ts) over raw HTTPS: the features the Kubernetes store
// backend (agent/store/kubernetes.ts, store-kubernetes*.test.ts) relies on: the nsm-cni.io resources,
// DELETE preconditions, bookmarks, stop and start. Its NSM resources, selectors, auth and 410 Gone are
// podinfo-k8s-fixture.test.ts.
import { request } from 'node:https'
import t from 'tap'
import { startK8sFixture, type K8sFixture } from '../lib/k8s-fixture'
import type { KObject } from '../lib/k8s-fixture-api'
import { FIXTURE_CA } from '../lib/k8s-fixture-cert'
import { NS } from '../lib/kv-kubernetes'

interface Reply { status: number; body: Record<string, unknown> }

function call(f: K8sFixture, method: string, path: string, body?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body)
    const headers = { authorization: `Bearer ${f.token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text ?? '')) }
    const req = request(`${f.url}${path}`, { method, ca: FIXTURE_CA, headers }, (res) => {
      let answer = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (answer += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(answer) as Record<string, unknown> }))
    })
    req.on('error', reject)
    req.end(text)
  })
}

t.test('fixture: nsm-cni.io resources, DELETE preconditions, bookmarks, stop and start', async (t) => {
  const f = await startK8sFixture(t, { bookmarkIntervalMs: 0 })
  const base = `/apis/nsm-cni.io/v1/namespaces/${NS}`
  const discovery = await call(f, 'GET', '/apis/nsm-cni.io/v1')
  t.same((discovery.body['resources'] as Array<{ name: string; kind: string }>).map((r) => [r.name, r.kind]), [['nsmaddressclaims', 'NsmAddressClaim'], ['nsmnodes', 'NsmNode']])
  const created = await call(f, 'POST', `${base}/nsmnodes`, { metadata: { name: 'n1' }, spec: { a: 1 } })
  t.same([created.status, created.body['kind'], created.body['apiVersion']], [201, 'NsmNode', 'nsm-cni.io/v1'])
  const rv = (created.body['metadata'] as { resourceVersion: string; uid: string })
  const stale = await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { resourceVersion: '1' } })
  t.same([stale.status, stale.body['reason']], [409, 'Conflict'], 'a DELETE whose resourceVersion precondition fails is 409')
  t.equal((await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { uid: 'other' } })).status, 409, 'so is a failed uid precondition')
  t.equal((await call(f, 'DELETE', `${base}/nsmnodes/n1`, { preconditions: { resourceVersion: rv.resourceVersion, uid: rv.uid } })).status, 200, 'a matching one deletes')

  // A watch with bookmarks: one once the replay is out, then on demand.
  const lines: Array<{ type: string; object: { metadata: { resourceVersion?: string } } }> = []
  const from = f.resourceVersion()
  await call(f, 'POST', `${base}/nsmaddressclaims`, { metadata: { name: 'c1' }, spec: {} })
  await new Promise<void>((resolve, reject) => {
    const req = request(`${f.url}${base}/nsmaddressclaims?watch=true&allowWatchBookmarks=true&resourceVersion=${from}`, { ca: FIXTURE_CA, headers: { authorization: `Bearer ${f.token}` } }, (res) => {
      let buf = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => {
        buf += c
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          lines.push(JSON.parse(buf.slice(0, nl)) as (typeof lines)[number])
          buf = buf.slice(nl + 1)
          if (lines.length === 2) f.sendBookmarks()
          if (lines.length === 3) {
            req.destroy()
            resolve()
          }
        }
      })
    })
    req.on('error', (err) => (lines.length === 3 ? undefined : reject(err)))
    req.end()
  })
  t.same(lines.map((l) => l.type), ['ADDED', 'BOOKMARK', 'BOOKMARK'], 'the replay, a bookmark at its end, one on sendBookmarks()')
  t.equal(lines[1]?.object.metadata.resourceVersion, f.resourceVersion(), 'a bookmark carries the current version')

  await f.stop()
  await t.rejects(call(f, 'GET', `${base}/nsmaddressclaims`), { code: 'ECONNREFUSED' }, 'stopped: connections are refused')
  await f.start()
  const after = await call(f, 'GET', `${base}/nsmaddressclaims`)
  t.same((after.body['items'] as KObject[]).map((o) => o.metadata.name), ['c1'], 'started again on the same port, with its state')
})
