// What a plugin process does at start-up: the nsm shim (dist/nsm, dist/sea/nsm) on a real ADD and DEL
// loads none of Node's HTTP/2, stream-heavy or vm modules beyond node:net's socket, runs with a clean
// stderr, also under --pending-deprecation (public APIs only), and the executable behaves as the
// bundle; nsm-ipam's trained V8 code cache (scripts/code-cache.mjs) is taken by V8.
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { callEnv, type CniCall } from '../conformance/exec'
import { linkNames, makeNetns } from '../lib/netns'
import { ensureSea } from '../lib/sea'
import { startMesh, WEB } from './nsm-fixture'

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

/**
 * Execs as a runtime does, with exactly this environment: through env(1), because tap's process tracking
 * adds its own NODE_OPTIONS (an --import hook) to every child it sees spawned.
 */
function run(cmd: string, args: string[], call: CniCall, extraEnv: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const vars = Object.entries({ ...callEnv(call), ...extraEnv }).map(([k, v]) => `${k}=${v}`)
    const child = spawn('/usr/bin/env', ['-i', ...vars, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr }))
    child.stdin.end(JSON.stringify(call.stdin))
  })
}

t.test('start-up of dist/nsm and dist/sea/nsm', async (t) => {
  const mesh = await startMesh(t, { network: 'startup' })
  const ep = makeNetns(t, 'sue')
  await mesh.endpoint({ name: 'startup-ep', netns: ep.path, pools: ['172.27.0.0/16'] })
  const pod = makeNetns(t, 'sup')
  const conf = mesh.conf({ networkService: WEB })
  const dir = mesh.binDir
  let n = 0
  /** ADD then DEL with `argv` (a plugin and its arguments); returns the ADD's stderr and loaded modules. */
  const addDel = async (argv: string[], env: Record<string, string> = {}, preload = false): Promise<{ stderr: string; modules: string[] }> => {
    n += 1
    const containerId = `startup${n}`
    const modulesFile = join(dir, `modules-${n}.txt`)
    const [cmd, ...rest] = argv as [string, ...string[]]
    const args = preload ? ['--require', join(dir, 'modules.cjs'), ...rest] : rest
    const add = await run(cmd, args, { command: 'ADD', containerId, netns: pod.path, ifname: 'eth0', stdin: conf }, { ...env, MODULES_FILE: modulesFile })
    t.equal(add.status, 0, `ADD through ${argv.join(' ')}: ${add.stdout} ${add.stderr}`)
    t.ok(linkNames(pod.name).includes('eth0'), 'the interface is in the pod')
    const del = await run(cmd, rest, { command: 'DEL', containerId, netns: pod.path, ifname: 'eth0', stdin: conf }, env)
    t.equal(del.status, 0, `DEL: ${del.stdout} ${del.stderr}`)
    t.notOk(linkNames(pod.name).includes('eth0'), 'DEL removed it')
    return { stderr: add.stderr, modules: preload ? readFileSync(modulesFile, 'utf8').split('\n') : [] }
  }
  // Which of Node's modules the process loaded, written as it exits.
  writeFileSync(
    join(dir, 'modules.cjs'),
    `process.on('exit', () => require('node:fs').writeFileSync(process.env.MODULES_FILE, process.moduleLoadList.join('\\n')))\n`,
  )
  const bundle = join(dir, 'nsm')

  t.test('the JS bundle: an ADD loads node:net for its socket, nothing heavier, and says nothing on stderr', async (t) => {
    const r = await addDel([process.execPath, bundle], {}, true)
    t.equal(r.stderr, '')
    t.ok(r.modules.includes('NativeModule net'), 'node:net carries the call')
    for (const m of ['NativeModule http2', 'NativeModule internal/http2/core', 'NativeModule vm', 'NativeModule tty']) t.notOk(r.modules.includes(m), `${m} is not loaded`)
  })

  t.test('--pending-deprecation: public APIs only, so nothing is deprecated', async (t) => {
    const r = await addDel([process.execPath, bundle], { NODE_OPTIONS: '--pending-deprecation' })
    t.equal(r.stderr, '', 'no deprecation warning')
  })

  t.test('the self-contained executable behaves as the bundle', async (t) => {
    const r = await addDel([ensureSea('nsm')])
    t.equal(r.stderr, '')
  })

  t.test('every link made was removed', async (t) => {
    t.same(linkNames(pod.name), ['lo'])
    t.same(await mesh.connectionIds(), [])
  })
})

t.test('dist/nsm-ipam carries its cache', async (t) => {
  const r = await run(process.execPath, [join(import.meta.dirname, '../../dist/nsm-ipam')], { command: 'VERSION', stdin: { cniVersion: '1.1.0' } }, { NSM_CNI_CODE_CACHE: 'report' })
  t.equal(r.status, 0)
  t.equal(r.stderr, 'nsm-ipam: code cache accepted\n')
})
