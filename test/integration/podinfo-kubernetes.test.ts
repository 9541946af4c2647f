// The Kubernetes pod-info source against the API fixture (test/lib/k8s-fixture.ts) through the real
// client library: list + watch of this node's pods, the add/bind race a CNI ADD sees, 410 Gone re-list,
// retries after failures, the in-cluster service account over HTTPS, and clean shutdown.
import { once } from 'node:events'
import t from 'tap'
import { KubernetesPodInfoSource, loadKubeConfig, PodInfoError, type KubernetesPodInfoOptions } from '../../agent/podinfo'
import { startK8sFixture, type K8sFixture } from '../lib/k8s-fixture'

const quiet = (): void => {}

/** A source for node-a on the fixture's kubeconfig, closed at teardown. */
function source(tt: { teardown(fn: () => void | Promise<void>): void }, f: K8sFixture, extra: Partial<KubernetesPodInfoOptions> = {}): KubernetesPodInfoSource {
  const s = new KubernetesPodInfoSource({
    nodeName: 'node-a',
    kubeconfig: f.writeKubeconfig(),
    backoff: { initialMs: 20, maxMs: 200 },
    log: quiet,
    ...extra,
  })
  tt.teardown(async () => {
    s.close()
    await s.stopped()
  })
  return s
}

/** Waits (bounded) until cond holds; for state that settles through a network round trip. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out waiting until ${what}`)
}

const lists = (f: K8sFixture): number => f.requests.filter((r) => r.path === '/api/v1/pods' && r.query.get('watch') === null).length

t.test('lists the pods of its node, then follows ADDED, MODIFIED and DELETED', async (t) => {
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'default', name: 'web-1', nodeName: 'node-a', uid: 'uid-web-1', labels: { app: 'web' }, annotations: { 'networkservicemesh.io': 'kernel://secure-intranet-connectivity/nsm-1' } })
  f.putPod({ namespace: 'default', name: 'db-1', nodeName: 'node-b', labels: { app: 'db' } })
  const watching = once(f.events, 'watch')
  const s = source(t, f, { getWaitMs: 10_000 })
  await s.whenSynced()
  t.same(await s.get('default', 'web-1'), {
    namespace: 'default', name: 'web-1', uid: 'uid-web-1', nodeName: 'node-a',
    labels: { app: 'web' }, annotations: { 'networkservicemesh.io': 'kernel://secure-intranet-connectivity/nsm-1' },
  })
  t.equal(s.size, 1, 'only the pods of node-a are cached')

  const list = f.requests.find((r) => r.path === '/api/v1/pods')
  t.equal(list?.query.get('fieldSelector'), 'spec.nodeName=node-a', 'the list asks for this node only')
  const [watch] = (await watching) as [{ query: URLSearchParams }]
  t.equal(watch.query.get('fieldSelector'), 'spec.nodeName=node-a', 'the watch asks for this node only')
  t.equal(watch.query.get('resourceVersion'), '3', 'the watch starts at the list resourceVersion')

  // ADDED: a get for a pod not seen yet waits for its event.
  const pending = s.get('default', 'web-2')
  f.putPod({ namespace: 'default', name: 'web-2', nodeName: 'node-a', labels: { app: 'web', tier: 'front' } })
  t.same((await pending)?.labels, { app: 'web', tier: 'front' })

  // MODIFIED then DELETED, observed in stream order: the marker pod's arrival proves the earlier events landed.
  f.putPod({ namespace: 'default', name: 'web-1', nodeName: 'node-a', labels: { app: 'web', version: 'v2' } })
  f.remove('pods', 'default', 'web-2')
  f.putPod({ namespace: 'default', name: 'marker-1', nodeName: 'node-a' })
  t.ok(await s.get('default', 'marker-1'))
  t.same((await s.get('default', 'web-1'))?.labels, { app: 'web', version: 'v2' }, 'labels follow MODIFIED')
  t.equal(s.size, 2, 'web-2 left the cache on DELETED')
  t.equal(lists(f), 1, 'no re-list while the watch is healthy')
})

t.test('a pod scheduled after the CNI ADD asked for it is returned when it is bound to this node', async (t) => {
  const f = await startK8sFixture(t)
  const s = source(t, f, { getWaitMs: 10_000 })
  await s.whenSynced()
  const pending = s.get('team-a', 'late-pod')
  f.putPod({ namespace: 'team-a', name: 'late-pod', labels: { app: 'firewall' } }) // not bound yet: invisible
  f.putPod({ namespace: 'team-a', name: 'other-node', nodeName: 'node-b' })
  f.putPod({ namespace: 'team-a', name: 'late-pod', nodeName: 'node-a', labels: { app: 'firewall' } }) // bound
  const info = await pending
  t.equal(info?.nodeName, 'node-a')
  t.same(info?.labels, { app: 'firewall' })
})

t.test('an unknown pod resolves undefined after the wait; bad names are refused', async (t) => {
  const f = await startK8sFixture(t)
  const s = source(t, f, { getWaitMs: 50 })
  await s.whenSynced()
  t.equal(await s.get('default', 'nobody'), undefined)
  await t.rejects(s.get('default', '../etc'), { code: 'INVALID_NAME' })
  await t.rejects(s.get('Default', 'x'), { code: 'INVALID_NAME' })
})

for (const goneAs of ['event', 'status'] as const) {
  t.test(`410 Gone (${goneAs}) re-lists and replaces the cache`, async (t) => {
    const f = await startK8sFixture(t, { goneAs })
    f.putPod({ namespace: 'default', name: 'old', nodeName: 'node-a' })
    const firstWatch = once(f.events, 'watch')
    const s = source(t, f, { getWaitMs: 10_000 })
    await s.whenSynced()
    await firstWatch
    t.ok(await s.get('default', 'old'))

    // The watch breaks; while the client is away, pods change and the server compacts its history.
    f.holdWatches()
    const retried = new Promise<void>((resolve) => {
      const onReq = (r: { query: URLSearchParams }): void => {
        if (r.query.get('watch') === null) return
        f.events.off('request', onReq)
        resolve()
      }
      f.events.on('request', onReq)
    })
    f.dropWatches()
    await retried
    f.remove('pods', 'default', 'old')
    f.putPod({ namespace: 'default', name: 'new', nodeName: 'node-a', labels: { app: 'new' } })
    f.compact()
    f.releaseWatches()

    t.same((await s.get('default', 'new'))?.labels, { app: 'new' })
    await until('the re-list dropped the deleted pod', () => s.size === 1)
    t.equal(s.cached('default', 'old'), undefined, 'a pod deleted during the gap is gone')
    t.equal(lists(f), 2, 'exactly one re-list')
  })
}

t.test('a watch the server ends resumes from the last version without a re-list', async (t) => {
  const f = await startK8sFixture(t)
  const s = source(t, f, { getWaitMs: 10_000, watchTimeoutSeconds: 1 })
  await s.whenSynced()
  f.putPod({ namespace: 'default', name: 'p1', nodeName: 'node-a' })
  t.ok(await s.get('default', 'p1'))
  const rvAfterP1 = f.resourceVersion()
  const [second] = (await once(f.events, 'watch')) as [{ query: URLSearchParams }]
  t.equal(second.query.get('resourceVersion'), rvAfterP1, 'resumes from the last event seen')
  t.equal(lists(f), 1)
})

t.test('a watch that never answers is abandoned and reopened', async (t) => {
  const f = await startK8sFixture(t)
  f.holdWatches() // the server accepts watch requests but never answers them: a dead connection
  let watchRequests = 0
  const secondWatch = new Promise<void>((resolve) => {
    f.events.on('request', (r: { query: URLSearchParams }) => {
      if (r.query.get('watch') !== null && ++watchRequests === 2) resolve()
    })
  })
  const s = source(t, f, { getWaitMs: 10_000, watchStallMs: 200 })
  await s.whenSynced()
  await secondWatch
  f.releaseWatches()
  f.putPod({ namespace: 'default', name: 'after-stall', nodeName: 'node-a' })
  t.ok(await s.get('default', 'after-stall'), 'events flow on the reopened watch')
  t.equal(lists(f), 1, 'a stalled watch resumes from its version, no re-list')
})

t.test('retries with backoff until the API answers', async (t) => {
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'default', name: 'web-1', nodeName: 'node-a' })
  f.failNext(500, 503, 500)
  const s = source(t, f, { getWaitMs: 10_000 })
  t.equal((await s.get('default', 'web-1'))?.name, 'web-1')
  t.equal(lists(f), 4, 'three failed lists, then one that succeeded')
})

t.test('UNAVAILABLE names the cause when the API was never reached', async (t) => {
  const f = await startK8sFixture(t)
  const kubeconfig = f.writeKubeconfig('kubeconfig-wrong-token')
  const { writeFileSync, readFileSync } = await import('node:fs')
  writeFileSync(kubeconfig, readFileSync(kubeconfig, 'utf8').replace(f.token, 'wrong-token'))
  const s = source(t, f, { kubeconfig, getWaitMs: 2000 })
  const err = await s.get('default', 'web-1').then(
    () => undefined,
    (e: unknown) => e,
  )
  t.ok(PodInfoError.is(err, 'UNAVAILABLE'), 'rejects with UNAVAILABLE')
  t.match((err as Error).message, /default\/web-1.*HTTP 401/, 'says which pod and that the API refused us')
})

t.test('in-cluster: service-account token and CA over HTTPS', async (t) => {
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'nsm-system', name: 'agent-xyz', nodeName: 'node-a', labels: { app: 'nsm-agent' } })
  const saved = { host: process.env['KUBERNETES_SERVICE_HOST'], port: process.env['KUBERNETES_SERVICE_PORT'] }
  t.teardown(() => {
    for (const [k, v] of [['KUBERNETES_SERVICE_HOST', saved.host], ['KUBERNETES_SERVICE_PORT', saved.port]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  process.env['KUBERNETES_SERVICE_HOST'] = '127.0.0.1'
  process.env['KUBERNETES_SERVICE_PORT'] = String(f.port)
  const kubeConfig = loadKubeConfig({ inClusterRoot: f.writeServiceAccount() })
  t.equal(kubeConfig.getCurrentCluster()?.server, f.url)
  const s = new KubernetesPodInfoSource({ nodeName: 'node-a', kubeConfig, log: quiet, getWaitMs: 10_000 })
  t.teardown(async () => {
    s.close()
    await s.stopped()
  })
  t.same((await s.get('nsm-system', 'agent-xyz'))?.labels, { app: 'nsm-agent' })
})

t.test('configuration errors are precise', async (t) => {
  t.throws(() => loadKubeConfig({ kubeconfig: '/nonexistent/kubeconfig' }), { code: 'CONFIG', message: /\/nonexistent\/kubeconfig/ })
  const f = await startK8sFixture(t)
  t.throws(() => new KubernetesPodInfoSource({ nodeName: '', kubeconfig: f.writeKubeconfig() }), { code: 'CONFIG', message: /nodeName/ })
})

t.test('close settles waiting gets and ends the watch', async (t) => {
  const f = await startK8sFixture(t)
  const watching = once(f.events, 'watch')
  const s = source(t, f, { getWaitMs: 60_000 })
  await s.whenSynced()
  await watching
  t.equal(f.openWatches(), 1)
  const pending = s.get('default', 'never')
  s.close()
  t.equal(await pending, undefined)
  await s.stopped()
  await until('the server saw the watch close', () => f.openWatches() === 0)
  t.equal(f.openWatches(), 0)
})
