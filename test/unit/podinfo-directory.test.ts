// The pod-info directory source: real files in a temp dir, both accepted shapes, and the precise errors
// a bad file gives (file and field named).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { DirectoryPodInfoSource, openPodInfoSource, PodInfoError } from '../../agent/podinfo'

function podDir(tt: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-podinfo-'))
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('flat file: labels, annotations, defaults', async (t) => {
  const dir = podDir(t)
  writeFileSync(join(dir, 'default_web-1.json'), JSON.stringify({
    labels: { app: 'web', 'app.kubernetes.io/part-of': 'shop' },
    annotations: { 'networkservicemesh.io': 'kernel://secure-intranet-connectivity/nsm-1?app=web' },
  }))
  const s = new DirectoryPodInfoSource({ dir, nodeName: 'node-a' })
  t.teardown(() => s.close())
  t.same(await s.get('default', 'web-1'), {
    namespace: 'default', name: 'web-1', uid: '', nodeName: 'node-a',
    labels: { app: 'web', 'app.kubernetes.io/part-of': 'shop' },
    annotations: { 'networkservicemesh.io': 'kernel://secure-intranet-connectivity/nsm-1?app=web' },
  })
  t.equal(await s.get('default', 'web-2'), undefined, 'no file: no such pod')
  writeFileSync(join(dir, 'empty_p.json'), '{}')
  t.same(await s.get('empty', 'p'), { namespace: 'empty', name: 'p', uid: '', nodeName: 'node-a', labels: {}, annotations: {} })
})

t.test('an edited file is seen by the next get', async (t) => {
  const dir = podDir(t)
  const s = openPodInfoSource({ kind: 'directory', dir })
  writeFileSync(join(dir, 'ns1_fw.json'), JSON.stringify({ labels: { app: 'firewall' } }))
  t.same((await s.get('ns1', 'fw'))?.labels, { app: 'firewall' })
  writeFileSync(join(dir, 'ns1_fw.json'), JSON.stringify({ labels: { app: 'vpn-gateway' }, uid: 'u-1', nodeName: 'n2' }))
  const info = await s.get('ns1', 'fw')
  t.same([info?.labels, info?.uid, info?.nodeName], [{ app: 'vpn-gateway' }, 'u-1', 'n2'])
})

t.test('a Pod object as kubectl prints it', async (t) => {
  const dir = podDir(t)
  writeFileSync(join(dir, 'prod_api-7d9f.json'), JSON.stringify({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { namespace: 'prod', name: 'api-7d9f', uid: '1c1f-42', labels: { app: 'api' }, annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity' }, resourceVersion: '77' },
    spec: { nodeName: 'worker-3', containers: [{ name: 'api', image: 'api:1' }] },
    status: { phase: 'Running' },
  }))
  const s = new DirectoryPodInfoSource({ dir, nodeName: 'ignored-when-the-pod-says' })
  t.same(await s.get('prod', 'api-7d9f'), {
    namespace: 'prod', name: 'api-7d9f', uid: '1c1f-42', nodeName: 'worker-3',
    labels: { app: 'api' }, annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity' },
  })
})

const bad: Array<[string, string, RegExp]> = [
  ['not JSON', '{"labels": {', /default_p\.json: not valid JSON/],
  ['an array', '[]', /\(top level\): must be a JSON object, got an array/],
  ['a typo in a key', '{"label": {"app": "x"}}', /default_p\.json: label: unknown field/],
  ['labels not an object', '{"labels": "app=x"}', /labels: must be an object of strings, got the string "app=x"/],
  ['a label value not a string', '{"labels": {"app": 1}}', /labels\["app"\]: must be a string, got number 1/],
  ['a label value Kubernetes refuses', '{"labels": {"app": "a b"}}', /labels\["app"\]: invalid value "a b"/],
  ['a label key Kubernetes refuses', '{"labels": {"-app": "x"}}', /labels\["-app"\]: invalid key/],
  ['an annotation key with a bad prefix', '{"annotations": {"Bad_Prefix/k": "v"}}', /annotations\["Bad_Prefix\/k"\]: invalid key: its prefix/],
  ['an annotation value not a string', '{"annotations": {"k": true}}', /annotations\["k"\]: must be a string, got boolean true/],
  ['a namespace that is not the file\'s', '{"namespace": "other"}', /namespace: is "other" but the file is for namespace "default"/],
  ['a name that is not the file\'s', '{"name": "q"}', /name: is "q" but the file is for pod "p"/],
  ['uid not a string', '{"uid": 5}', /uid: must be a string, got number 5/],
  ['a Kubernetes object of another kind', '{"kind": "Deployment", "metadata": {}}', /kind: must be "Pod" for a Kubernetes object, got the string "Deployment"/],
  ['a Pod without metadata object', '{"kind": "Pod", "metadata": []}', /metadata: must be an object, got an array/],
  ['a Pod with a bad label', '{"kind": "Pod", "metadata": {"labels": {"app": null}}}', /metadata\.labels\["app"\]: must be a string, got null/],
  ['a Pod whose nodeName is not a string', '{"kind": "Pod", "metadata": {}, "spec": {"nodeName": 3}}', /spec\.nodeName: must be a string/],
]
for (const [what, text, message] of bad) {
  t.test(`bad file: ${what}`, async (t) => {
    const dir = podDir(t)
    writeFileSync(join(dir, 'default_p.json'), text)
    const s = new DirectoryPodInfoSource({ dir })
    await t.rejects(s.get('default', 'p'), { name: 'PodInfoError', code: 'INVALID_FILE', message })
  })
}

t.test('names that are not Kubernetes names never reach the file system', async (t) => {
  const dir = podDir(t)
  const s = new DirectoryPodInfoSource({ dir })
  for (const [ns, name] of [['..', 'x'], ['default', '../../etc/passwd'], ['a_b', 'c'], ['', 'x'], ['default', ''], ['UPPER', 'x']] as const) {
    const err = await s.get(ns, name).then(() => undefined, (e: unknown) => e)
    t.ok(PodInfoError.is(err, 'INVALID_NAME'), `${ns}/${name} is refused`)
  }
})

t.test('an unreadable entry is UNAVAILABLE, not "no such pod"', async (t) => {
  const dir = podDir(t)
  const { mkdirSync } = await import('node:fs')
  mkdirSync(join(dir, 'default_dir.json')) // a directory where the file should be: EISDIR
  const s = new DirectoryPodInfoSource({ dir })
  await t.rejects(s.get('default', 'dir'), { code: 'UNAVAILABLE', message: /default_dir\.json/ })
})
