// Hardening of dist/nsm-ipam, exec'd as a runtime does (a call that would hang is killed, not waited for):
// resolvConf that is not a regular file (/dev/zero, a FIFO) and dataDir under /proc or /sys are refused
// with 7 naming the field; a full dataDir (a tiny tmpfs) fails ADD with 108 and holds nothing afterwards.
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t, { type Test } from 'tap'
import { execPlugin, type CniCall, type CniOutcome } from '../conformance/exec'
import { makeNetns } from '../lib/netns'

const ROOT = resolve(import.meta.dirname, '../..')
const binDir = mkdtempSync(join(tmpdir(), 'nsm-ipam-bin-'))
t.teardown(() => rmSync(binDir, { recursive: true, force: true }))
const binary = join(binDir, 'nsm-ipam')
copyFileSync(join(ROOT, 'dist', 'nsm-ipam'), binary)
chmodSync(binary, 0o755)

function setup(t: Test, dataDir = mkdtempSync(join(tmpdir(), 'nsm-ipam-hard-'))) {
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const ns = makeNetns(t)
  const conf = (ipam: Record<string, unknown> = {}) => ({
    cniVersion: '1.1.0',
    name: 'hardnet',
    type: 'ptp',
    ipam: { type: 'nsm-ipam', ranges: [[{ subnet: '10.79.0.0/24' }]], dataDir, ...ipam },
  })
  const call = (c: Partial<CniCall> & { command: string }, timeoutMs = 5000): Promise<CniOutcome> =>
    execPlugin(binary, { containerId: 'ctr1', netns: ns.path, ifname: 'eth0', path: binDir, stdin: conf(), ...c }, timeoutMs)
  return { dataDir, ns, conf, call }
}

t.test('resolvConf that is not a regular file: refused (7 naming ipam.resolvConf), never hangs', async (t) => {
  const { call, conf, dataDir } = setup(t)
  const fifo = join(dataDir, 'resolv.fifo')
  execFileSync('mkfifo', [fifo])
  const big = join(dataDir, 'big.conf')
  writeFileSync(big, `nameserver 10.0.0.1\n${'#'.repeat(2 * 1024 * 1024)}\n`)
  for (const [label, path, why] of [
    ['/dev/zero', '/dev/zero', /not a regular file/],
    ['a FIFO', fifo, /not a regular file/],
    ['a directory', dataDir, /not a regular file/],
    ['a 2 MiB file', big, /larger than/],
  ] as const) {
    const started = Date.now()
    const out = await call({ command: 'ADD', stdin: conf({ resolvConf: path }) })
    t.ok(Date.now() - started < 4000, `${label}: answered at once`)
    t.equal(out.json?.code, 7, `${label}: ${out.stdout}${out.stderr}`)
    t.match(String(out.json?.msg), /^ipam\.resolvConf: /, `${label}: names the field`)
    t.match(String(out.json?.msg), why, `${label}: says why`)
  }
  const good = join(dataDir, 'resolv.conf')
  writeFileSync(good, 'nameserver 10.0.0.53\nsearch a.example\n')
  const ok = await call({ command: 'ADD', containerId: 'ctr2', stdin: conf({ resolvConf: good }) })
  t.same(ok.json?.dns, { nameservers: ['10.0.0.53'], search: ['a.example'] }, 'a regular file is read')
})

t.test('dataDir under /proc or /sys: refused (7 naming ipam.dataDir), never spins', async (t) => {
  const { call, conf, dataDir } = setup(t)
  const link = join(dataDir, 'to-proc')
  execFileSync('ln', ['-s', '/proc/self', link])
  for (const dir of ['/proc/nsm-ipam', '/proc/self/nsm-ipam', '/sys/fs/nsm-ipam', '/tmp/../proc/x', `${link}/x`]) {
    for (const command of ['ADD', 'DEL', 'STATUS', 'GC']) {
      const started = Date.now()
      const out = await call({ command, stdin: conf({ dataDir: dir }) })
      t.ok(Date.now() - started < 4000, `${command} ${dir}: answered at once`)
      t.equal(out.json?.code, 7, `${command} ${dir}: ${out.stdout}${out.stderr}`)
      t.match(String(out.json?.msg), /^ipam\.dataDir: .*(\/proc|\/sys)/, `${command} ${dir}: names the field and why`)
    }
  }
})

/** A 64 KiB tmpfs in a temp dir, unmounted at teardown. */
function tinyTmpfs(t: Test, opts = 'size=64k'): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-ipam-full-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir])
  t.teardown(() => {
    execFileSync('umount', [dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Fills the filesystem of `dir` with one file; returns its path. */
function fill(dir: string): string {
  const filler = join(dir, 'filler')
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1k', 'count=100000'], { stdio: 'ignore' })
  } catch {
    // ENOSPC: full, as wanted
  }
  return filler
}

t.test('a full dataDir: a failed ADD (108) holds no address and leaves no claim in tmp/', async (t) => {
  const mnt = tinyTmpfs(t)
  const { call } = setup(t, join(mnt, 'data'))
  mkdirSync(join(mnt, 'data'))
  t.equal((await call({ command: 'ADD', containerId: 'warm' })).exitCode, 0, 'the store exists')
  const filler = fill(mnt)
  const tmpDir = join(mnt, 'data', 'hardnet', 'tmp')
  let failed = 0
  // Free the space a page at a time so ADDs fail at each step of a claim, then succeed.
  for (let step = 0; step < 12; step++) {
    const id = `full-${step}`
    const out = await call({ command: 'ADD', containerId: id })
    if (out.exitCode !== 0) {
      failed += 1
      t.equal(out.json?.code, 108, `${id}: a store failure: ${out.stdout}`)
      const check = await call({ command: 'CHECK', containerId: id })
      t.equal(check.json?.code, 3, `${id}: holds no address after the failed ADD: ${check.stdout}`)
    } else {
      t.equal((await call({ command: 'DEL', containerId: id })).exitCode, 0)
    }
    t.same(readdirSync(tmpDir), [], `${id}: no claim left in tmp/`)
    execFileSync('truncate', ['-s', `-4K`, filler])
  }
  t.ok(failed > 0, `some ADDs failed on the full store (${failed})`)
  rmSync(filler)
  const after = await call({ command: 'ADD', containerId: 'after' })
  t.equal(after.exitCode, 0, `with space again, ADD works: ${after.stdout}`)
})
