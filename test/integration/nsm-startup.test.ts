// What a plugin process does at start-up (the ADD latency target, BENCHMARKS.md): the trained V8 code
// cache shipped in dist/nsm (scripts/code-cache.mjs) is taken by V8 on a real ADD through the JS bundle
// and through the self-contained executable; a cache V8 cannot use — made by another Node, corrupted,
// switched off — costs speed, never the call; an ADD loads none of node:net, node:stream or node:http2
// (cni/nsm/unix-stream.ts); and when the raw pipe must not be used (--pending-deprecation) the plugin
// falls back to node:net and still works, with nothing on stderr.
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
  // Which of Node's modules the process loaded, written as it exits (a --require preload is not a V8
  // flag: the code cache stays valid).
  writeFileSync(
    join(dir, 'modules.cjs'),
    `process.on('exit', () => require('node:fs').writeFileSync(process.env.MODULES_FILE, process.moduleLoadList.join('\\n')))\n`,
  )
  const bundle = join(dir, 'nsm')
  const report = { NSM_CNI_CODE_CACHE: 'report' }

  t.test('the JS bundle: V8 takes the cache, and an ADD loads no stream or socket module', async (t) => {
    const r = await addDel([process.execPath, bundle], report, true)
    t.equal(r.stderr, 'nsm: code cache accepted\n')
    for (const m of ['NativeModule net', 'NativeModule stream', 'NativeModule http2', 'NativeModule internal/streams/readable']) {
      t.notOk(r.modules.includes(m), `${m} is not loaded`)
    }
    t.ok(r.modules.includes('Internal Binding pipe_wrap'), 'the pipe handle is what carries the calls')
  })

  t.test('the self-contained executable: V8 takes the cache from its assets', async (t) => {
    const exe = ensureSea('nsm')
    const r = await addDel([exe], report)
    t.equal(r.stderr, 'nsm: code cache accepted\n')
  })

  t.test('a cache V8 cannot use costs speed, never the call', async (t) => {
    t.equal((await addDel([process.execPath, bundle], { NSM_CNI_CODE_CACHE: 'off' })).stderr, '', 'off: nothing reported, nothing used')
    const text = readFileSync(bundle, 'utf8')
    const otherNode = join(dir, 'nsm-other-node')
    writeFileSync(otherNode, text.replace(/\nconst CACHE_NODE = "[^"]*";\n/, '\nconst CACHE_NODE = "v0.0.0";\n'), { mode: 0o755 })
    t.equal((await addDel([process.execPath, otherNode], report)).stderr, 'nsm: code cache unused\n', 'made by another Node: not even tried')
    // SOURCE edited after the build, CACHE left as it was: V8 sees the cache is not for this source and
    // compiles it. (A cache damaged in place is as fatal as damaged code: V8 release builds do not
    // checksum code caches, and the cache is part of the executable like the code beside it.)
    const edited = join(dir, 'nsm-edited')
    const m = /\nconst SOURCE = "\(function/.exec(text)
    t.ok(m, 'dist/nsm carries SOURCE')
    writeFileSync(edited, text.replace('\nconst SOURCE = "(function', '\nconst SOURCE = "/* edited */(function'), { mode: 0o755 })
    t.equal((await addDel([process.execPath, edited], report)).stderr, 'nsm: code cache rejected\n', 'for another source: rejected, and the ADD still works')
  })

  t.test('--pending-deprecation: node:net instead of the pipe binding, and a clean stderr', async (t) => {
    const r = await addDel([process.execPath, bundle], { NODE_OPTIONS: '--pending-deprecation' }, true)
    t.equal(r.stderr, '', 'no deprecation warning')
    t.ok(r.modules.includes('NativeModule net'), 'node:net carried the calls')
  })

  t.test('every link made was removed', async (t) => {
    t.same(linkNames(pod.name), ['lo'])
    t.same(await mesh.connectionIds(), [])
  })
})

t.test('dist/nsm-ipam carries its cache too', async (t) => {
  const r = await run(process.execPath, [join(import.meta.dirname, '../../dist/nsm-ipam')], { command: 'VERSION', stdin: { cniVersion: '1.1.0' } }, { NSM_CNI_CODE_CACHE: 'report' })
  t.equal(r.status, 0)
  t.equal(r.stderr, 'nsm-ipam: code cache accepted\n')
})
