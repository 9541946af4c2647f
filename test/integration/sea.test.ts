// The self-contained CNI plugins (dist/sea/*, Node single executable applications from scripts/sea.mjs) run
// where the host has no Node.js: exec'd with no `node` on PATH and nothing in the environment but the CNI
// variables, they answer as the JS bundles do (same stdout, nothing on stderr), nsm-ipam's ADD/DEL read and
// write the same store as the bundle's, and nsm-ipam works chrooted into a directory holding only itself and
// the libraries `ldd` lists (Multus thick mode execs plugins chrooted into the host's root).
//
// The executables are built here when missing or stale (`node scripts/sea.mjs <name>`: ~10 s each, kept
// while the bundle is unchanged, so a second `npm test` pays ~1 s). dist/nsm is covered when it is built.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { ensureSea } from '../lib/sea'
import { makeNetns, uniqueName } from '../lib/netns'

const ROOT = join(import.meta.dirname, '../..')
const NO_NODE_PATH = '/nonexistent'


interface Outcome { status: number | null; stdout: string; stderr: string }

/** Execs a plugin as a runtime does, with PATH and the given CNI variables as its whole environment. */
function cni(exe: string, vars: Record<string, string>, stdin: unknown, path = NO_NODE_PATH): Outcome {
  const r = spawnSync(exe, [], { env: { PATH: path, ...vars }, input: typeof stdin === 'string' ? stdin : JSON.stringify(stdin), encoding: 'utf8', timeout: 30_000 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The same call through the JS bundle: `node dist/<name>` with the node running the tests. */
function cniBundle(name: string, vars: Record<string, string>, stdin: unknown): Outcome {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', name)], { env: { PATH: NO_NODE_PATH, ...vars }, input: typeof stdin === 'string' ? stdin : JSON.stringify(stdin), encoding: 'utf8', timeout: 30_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

const reservations = (dataDir: string, network: string): string[] => {
  try {
    return readdirSync(join(dataDir, network, 'reservations')).sort()
  } catch {
    return []
  }
}

const ipamExe = ensureSea('nsm-ipam')

t.test('dist/sea/nsm-ipam is an ELF executable; the bundle cannot run where it does', async (t) => {
  const head = readFileSync(ipamExe).subarray(0, 4)
  t.same([...head], [0x7f, 0x45, 0x4c, 0x46], 'ELF magic')
  // The control: in the environment these tests give the executables, the bundle itself cannot start.
  const bundle = spawnSync(join(ROOT, 'dist/nsm-ipam'), [], { env: { PATH: NO_NODE_PATH, CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}', encoding: 'utf8' })
  t.equal(bundle.status, 127, 'dist/nsm-ipam exec\'d directly: "#!/usr/bin/env node" finds no node')
  t.match(bundle.stderr, /node.*No such file or directory/)
})

t.test('nsm-ipam VERSION with no node on PATH and only CNI variables, as the bundle answers', async (t) => {
  for (const cniVersion of ['1.1.0', '0.4.0']) {
    const sea = cni(ipamExe, { CNI_COMMAND: 'VERSION' }, { cniVersion })
    t.equal(sea.status, 0, sea.stderr)
    t.equal(sea.stderr, '', 'nothing on stderr (no experimental-feature warning)')
    t.same(JSON.parse(sea.stdout), { cniVersion, supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] })
    t.same(sea, cniBundle('nsm-ipam', { CNI_COMMAND: 'VERSION' }, { cniVersion }), `identical to node dist/nsm-ipam (${cniVersion})`)
  }
  // Without even PATH, and an error answered the same way (stdin not JSON: code 6).
  const r = spawnSync(ipamExe, [], { env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'eth0' }, input: '{nope', encoding: 'utf8' })
  t.equal(r.status, 1)
  t.match(JSON.parse(r.stdout), { code: 6 })
  t.equal(r.stderr, '')
})

t.test('nsm-ipam ADD/DEL through the executable: same result and store as the bundle', async (t) => {
  const ns = makeNetns(t, 'sea')
  const dataSea = tempDir(t, 'nsm-sea-data-')
  const dataJs = tempDir(t, 'nsm-sea-datajs-')
  const network = `sea-${uniqueName('n')}`
  const conf = (dataDir: string): Record<string, unknown> => ({
    cniVersion: '1.1.0', name: network, type: 'ptp',
    ipam: { type: 'nsm-ipam', subnet: '10.77.0.0/24', gateway: '10.77.0.1', routes: [{ dst: '0.0.0.0/0' }], dataDir },
  })
  const vars = (command: string, id: string): Record<string, string> => ({ CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: ns.path, CNI_IFNAME: 'eth0' })

  const sea = cni(ipamExe, vars('ADD', 'c1'), conf(dataSea))
  t.equal(sea.status, 0, sea.stdout + sea.stderr)
  t.equal(sea.stderr, '')
  t.same(JSON.parse(sea.stdout), { cniVersion: '1.1.0', ips: [{ address: '10.77.0.2/24', gateway: '10.77.0.1' }], routes: [{ dst: '0.0.0.0/0' }] })
  const js = cniBundle('nsm-ipam', vars('ADD', 'c1'), conf(dataJs))
  t.same(js, sea, 'the bundle gives the same answer on an empty store')
  t.same(reservations(dataSea, network), ['10.77.0.2'])
  t.same(reservations(dataSea, network), reservations(dataJs, network), 'same reservations on disk')

  // Each reads what the other wrote: the executable allocates after the bundle's reservation, and the
  // bundle after the executable's; a second ADD of the same attachment is refused the same way (106).
  const next = cni(ipamExe, vars('ADD', 'c2'), conf(dataJs))
  t.equal(next.status, 0, next.stdout)
  t.match(JSON.parse(next.stdout), { ips: [{ address: '10.77.0.3/24' }] })
  const again = cni(ipamExe, vars('ADD', 'c1'), conf(dataSea))
  t.equal(again.status, 1)
  t.match(JSON.parse(again.stdout), { code: 106 })
  t.same(cniBundle('nsm-ipam', vars('ADD', 'c1'), conf(dataSea)), again, 'the bundle refuses it identically')
  t.same(reservations(dataJs, network), ['10.77.0.2', '10.77.0.3'])

  // CHECK and DEL (DEL needs no netns).
  const check = cni(ipamExe, { ...vars('CHECK', 'c1'), CNI_PATH: NO_NODE_PATH }, { ...conf(dataSea), prevResult: JSON.parse(sea.stdout) })
  t.equal(check.status, 0, `CHECK passes: ${check.stdout}`)
  for (const [dataDir, id, by] of [[dataSea, 'c1', 'sea'], [dataJs, 'c1', 'sea'], [dataJs, 'c2', 'js']] as const) {
    const del = { CNI_COMMAND: 'DEL', CNI_CONTAINERID: id, CNI_IFNAME: 'eth0' }
    const r = by === 'sea' ? cni(ipamExe, del, conf(dataDir)) : cniBundle('nsm-ipam', del, conf(dataDir))
    t.equal(r.status, 0, `DEL ${id} by ${by}: ${r.stdout}`)
    t.equal(r.stdout, '')
  }
  t.same(reservations(dataSea, network), [], 'released')
  t.same(reservations(dataJs, network), [], 'released, including the bundle-made reservation the executable deleted')
})

const chrootTools = ['chroot', 'unshare', 'ldd', 'mount'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0)
const chrootSkip = process.getuid?.() !== 0 ? 'needs root' : chrootTools.length > 0 ? `needs ${chrootTools.join(', ')}` : false
t.test('nsm-ipam chrooted into a directory holding only it and the libraries ldd lists', { skip: chrootSkip }, async (t) => {
  const root = tempDir(t, 'nsm-sea-chroot-')
  copyFileSync(ipamExe, join(root, 'nsm-ipam'))
  spawnSync('chmod', ['755', join(root, 'nsm-ipam')])
  const libs = spawnSync('ldd', [ipamExe], { encoding: 'utf8' }).stdout.split('\n').map((l) => /(\/\S+)/.exec(l)?.[1]).filter((p): p is string => p !== undefined)
  t.ok(libs.some((l) => l.includes('libc.so')), `ldd lists libc: ${libs.join(' ')}`)
  for (const lib of libs) {
    mkdirSync(join(root, dirname(lib)), { recursive: true })
    copyFileSync(lib, join(root, lib))
  }
  t.notOk(existsSync(join(root, 'usr/bin/node')) || existsSync(join(root, 'bin/sh')), 'no node and no shell in the chroot')

  const chroot = (vars: Record<string, string>, stdin: unknown, setup = ''): Outcome => {
    // A private mount namespace: the netns bind mount (ADD checks that CNI_NETNS is one) dies with it.
    // The plugin's whole environment is the CNI variables (env -i), as in the other cases.
    const script = `${setup}r=$1; shift; c=$(command -v chroot); exec env -i "$@" "$c" "$r" /nsm-ipam`
    const assignments = Object.entries(vars).map(([k, v]) => `${k}=${v}`)
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', root, ...assignments], {
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      input: JSON.stringify(stdin), encoding: 'utf8', timeout: 30_000,
    })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  const version = chroot({ CNI_COMMAND: 'VERSION' }, { cniVersion: '1.0.0' })
  t.equal(version.status, 0, version.stderr)
  t.equal(version.stderr, '')
  t.match(JSON.parse(version.stdout), { cniVersion: '1.0.0', supportedVersions: Array })

  const ns = makeNetns(t, 'chr')
  mkdirSync(join(root, 'data'))
  writeFileSync(join(root, 'netns'), '')
  const conf = { cniVersion: '1.0.0', name: 'chrooted', type: 'ptp', ipam: { type: 'nsm-ipam', subnet: '10.78.0.0/24', dataDir: '/data' } }
  const add = chroot({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/netns', CNI_IFNAME: 'eth0' }, conf, `mount --bind '${ns.path}' "$1/netns" && `)
  t.equal(add.status, 0, add.stdout + add.stderr)
  t.same(JSON.parse(add.stdout), { cniVersion: '1.0.0', ips: [{ address: '10.78.0.2/24', gateway: '10.78.0.1' }] })
  t.same(reservations(join(root, 'data'), 'chrooted'), ['10.78.0.2'], 'the reservation is inside the chroot')
  const del = chroot({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }, conf)
  t.equal(del.status, 0, del.stdout + del.stderr)
  t.same(reservations(join(root, 'data'), 'chrooted'), [])
})

t.test('dist/sea/nsm answers as node dist/nsm does', async (t) => {
  const exe = ensureSea('nsm')
  const version = cni(exe, { CNI_COMMAND: 'VERSION' }, { cniVersion: '1.1.0' })
  t.equal(version.status, 0, version.stderr)
  t.equal(version.stderr, '')
  t.match(JSON.parse(version.stdout), { cniVersion: '1.1.0', supportedVersions: Array })
  t.same(version, cniBundle('nsm', { CNI_COMMAND: 'VERSION' }, { cniVersion: '1.1.0' }))
  // An agent that does not run: the same error from both, naming the socket.
  const vars = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'net1' }
  const conf = { cniVersion: '1.0.0', name: 'n', type: 'nsm', socket: '/nonexistent/nsm-sea-test.sock' }
  const down = cni(exe, vars, conf)
  t.equal(down.status, 1)
  t.match(JSON.parse(down.stdout), { cniVersion: '1.0.0', code: 100, msg: /\/nonexistent\/nsm-sea-test\.sock/ })
  t.same(down, cniBundle('nsm', vars, conf))
})
