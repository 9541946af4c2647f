// The Kubernetes pod-info source as the agent ships it: bundled by esbuild into one CommonJS file (as
// build.mjs bundles dist/nsm-agent), @kubernetes/client-node included, run by plain node (no tsx) in a
// child process against the API fixture. Catches what only the bundle breaks (ESM-only dependencies,
// import.meta, dynamic requires).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as esbuild from 'esbuild'
import t from 'tap'
import { startK8sFixture } from '../lib/k8s-fixture'

t.test('the bundled Kubernetes source lists and watches pods', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-podinfo-bundle-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bundle = join(dir, 'podinfo.cjs')
  await esbuild.build({
    entryPoints: [join(import.meta.dirname, '../../agent/podinfo/index.ts')],
    outfile: bundle, bundle: true, platform: 'node', target: 'node20', format: 'cjs', logLevel: 'error',
  })
  const driver = join(dir, 'driver.cjs')
  writeFileSync(driver, `
const { openPodInfoSource } = require(${JSON.stringify(bundle)})
const s = openPodInfoSource({ kind: 'kubernetes', nodeName: 'node-a', kubeconfig: process.argv[2], getWaitMs: 20000, log: () => {} })
;(async () => {
  const first = await s.get('default', 'web-1')
  process.stdout.write(JSON.stringify(first) + '\\n')
  const second = await s.get('default', 'web-2') // not there yet: the parent adds it when it reads the first line
  process.stdout.write(JSON.stringify(second) + '\\n')
  s.close()
  await s.stopped()
})().catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1) })
`)
  const f = await startK8sFixture(t)
  f.putPod({ namespace: 'default', name: 'web-1', nodeName: 'node-a', uid: 'u1', labels: { app: 'web' }, annotations: { 'networkservicemesh.io': 'kernel://svc/nsm-1' } })
  const child = spawn(process.execPath, [driver, f.writeKubeconfig()], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  const lines: string[] = []
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  let buf = ''
  child.stdout.on('data', (c: Buffer) => {
    buf += c.toString()
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl))
      buf = buf.slice(nl + 1)
      if (lines.length === 1) f.putPod({ namespace: 'default', name: 'web-2', nodeName: 'node-a', labels: { app: 'web', n: '2' } })
    }
  })
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)))
  t.equal(code, 0, stderr)
  t.same(JSON.parse(lines[0] ?? 'null'), { namespace: 'default', name: 'web-1', uid: 'u1', nodeName: 'node-a', labels: { app: 'web' }, annotations: { 'networkservicemesh.io': 'kernel://svc/nsm-1' } })
  t.same(JSON.parse(lines[1] ?? 'null')?.labels, { app: 'web', n: '2' }, 'a pod added later arrives through the watch')
})
