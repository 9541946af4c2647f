// deploy/install-cni.sh run for real (sh, node) against temp dirs standing in for the host's /opt/cni/bin
// and /etc/cni/net.d: copies, replaces atomically, is idempotent, chains nsm once into the primary
// conflist, and refuses what it must not touch. The installed nsm-ipam (the real bundle when built) must
// still answer VERSION as a runtime execs it.
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'

const INSTALLER = join(import.meta.dirname, '../../deploy/install-cni.sh')
const BUILT_IPAM = join(import.meta.dirname, '../../dist/nsm-ipam')

interface Host { root: string; dist: string; bin: string; conf: string }

/** A fake host: dist/ with two executables, an empty bin dir and conf dir; removed at teardown. */
function host(tt: { teardown(fn: () => void): void }): Host {
  const root = mkdtempSync(join(tmpdir(), 'nsm-install-'))
  tt.teardown(() => rmSync(root, { recursive: true, force: true }))
  const h = { root, dist: join(root, 'dist'), bin: join(root, 'opt/cni/bin'), conf: join(root, 'etc/cni/net.d') }
  for (const d of [h.dist, h.bin, h.conf]) mkdirSync(d, { recursive: true })
  writeFileSync(join(h.dist, 'nsm'), '#!/bin/sh\necho nsm-v1\n')
  writeFileSync(join(h.dist, 'nsm-ipam'), '#!/bin/sh\necho nsm-ipam-v1\n')
  return h
}

function install(h: Host, env: Record<string, string> = {}): { status: number | null; stderr: string } {
  const r = spawnSync('sh', [INSTALLER], {
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', NSM_DIST_DIR: h.dist, CNI_BIN_DIR: h.bin, CNI_CONF_DIR: h.conf, ...env },
    encoding: 'utf8',
  })
  return { status: r.status, stderr: r.stderr }
}

const CHAIN = { NSM_CHAIN_PRIMARY: 'true' }
const conflist = { cniVersion: '1.0.0', name: 'k8s-pod-network', plugins: [{ type: 'ptp', ipam: { type: 'host-local', subnet: '10.244.1.0/24' } }, { type: 'portmap', capabilities: { portMappings: true } }] }

t.test('copies nsm and nsm-ipam as executables, and replaces them on upgrade', async (t) => {
  const h = host(t)
  const r = install(h)
  t.equal(r.status, 0, r.stderr)
  for (const b of ['nsm', 'nsm-ipam']) {
    const p = join(h.bin, b)
    t.equal(readFileSync(p, 'utf8'), readFileSync(join(h.dist, b), 'utf8'), `${b} copied`)
    t.equal(statSync(p).mode & 0o777, 0o755, `${b} is executable`)
  }
  t.equal(spawnSync(join(h.bin, 'nsm'), { encoding: 'utf8' }).stdout, 'nsm-v1\n', 'the installed plugin runs')

  writeFileSync(join(h.dist, 'nsm'), '#!/bin/sh\necho nsm-v2\n')
  const inode = statSync(join(h.bin, 'nsm')).ino
  t.equal(install(h).status, 0)
  t.equal(spawnSync(join(h.bin, 'nsm'), { encoding: 'utf8' }).stdout, 'nsm-v2\n', 'upgraded')
  t.not(statSync(join(h.bin, 'nsm')).ino, inode, 'replaced by rename (a new inode), not rewritten in place')
  t.same(readdirSync(h.bin).sort(), ['nsm', 'nsm-ipam'], 'no temp files left behind')
  t.same(readdirSync(h.conf), [], 'without NSM_CHAIN_PRIMARY the CNI config dir is not touched')
})

t.test('the installed real nsm-ipam bundle answers VERSION', { skip: existsSync(BUILT_IPAM) ? false : 'dist/nsm-ipam not built' }, async (t) => {
  const h = host(t)
  writeFileSync(join(h.dist, 'nsm-ipam'), readFileSync(BUILT_IPAM))
  t.equal(install(h).status, 0)
  const r = spawnSync(join(h.bin, 'nsm-ipam'), { env: { PATH: process.env['PATH'] ?? '', CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}', encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.match(JSON.parse(r.stdout), { cniVersion: String, supportedVersions: Array })
})

t.test('chains nsm once into the primary conflist, keeping the rest', async (t) => {
  const h = host(t)
  writeFileSync(join(h.conf, '10-k8s.conflist'), JSON.stringify(conflist))
  writeFileSync(join(h.conf, '20-other.conflist'), JSON.stringify({ ...conflist, name: 'other' }))
  chmodSync(join(h.conf, '10-k8s.conflist'), 0o600)
  for (let i = 0; i < 2; i++) t.equal(install(h, CHAIN).status, 0, `run ${i + 1}`)
  const after = JSON.parse(readFileSync(join(h.conf, '10-k8s.conflist'), 'utf8')) as typeof conflist
  t.same(after, { ...conflist, plugins: [...conflist.plugins, { type: 'nsm' }] }, 'appended last, once, everything else kept')
  t.equal(statSync(join(h.conf, '10-k8s.conflist')).mode & 0o777, 0o600, 'file mode kept')
  t.same(JSON.parse(readFileSync(join(h.conf, '20-other.conflist'), 'utf8')), { ...conflist, name: 'other' }, 'only the primary is changed')
  t.same(readdirSync(h.conf).sort(), ['10-k8s.conflist', '20-other.conflist'], 'no temp files left behind')
})

t.test('a custom plugin entry from NSM_CHAIN_PLUGIN', async (t) => {
  const h = host(t)
  writeFileSync(join(h.conf, '05-cluster.conflist'), JSON.stringify(conflist))
  const entry = { type: 'nsm', socket: '/run/nsm/agent.sock' }
  t.equal(install(h, { ...CHAIN, NSM_CHAIN_PLUGIN: JSON.stringify(entry) }).status, 0)
  t.same(JSON.parse(readFileSync(join(h.conf, '05-cluster.conflist'), 'utf8')).plugins.at(-1), entry)
  const bad = install(h, { ...CHAIN, NSM_CHAIN_PLUGIN: '{"name":"x"}' })
  t.equal(bad.status, 1)
  t.match(bad.stderr, /NSM_CHAIN_PLUGIN must be a JSON object with a non-empty string "type"/)
})

t.test('no conflist yet: binaries installed, exit 0; or 1 when chaining is required', async (t) => {
  const h = host(t)
  const r = install(h, CHAIN)
  t.equal(r.status, 0)
  t.match(r.stderr, /no CNI network config in .*net\.d yet: nsm not chained/)
  t.ok(existsSync(join(h.bin, 'nsm')), 'binaries installed anyway')
  t.same(readdirSync(h.conf), [], 'no config invented')
  const required = install(h, { ...CHAIN, NSM_CHAIN_REQUIRED: 'true' })
  t.equal(required.status, 1)
  t.match(required.stderr, /failing so that it is retried/)
  rmSync(h.conf, { recursive: true })
  const missingDir = install(h, CHAIN)
  t.equal(missingDir.status, 1)
  t.match(missingDir.stderr, /CNI_CONF_DIR .*net\.d: does not exist/)
})

t.test('refuses to edit what it cannot edit safely, leaving it untouched', async (t) => {
  const cases: Array<[string, string, string, RegExp]> = [
    ['invalid JSON', '10-k8s.conflist', '{"plugins": [', /10-k8s\.conflist is not valid JSON \(left untouched\)/],
    ['no plugins array', '10-k8s.conflist', '{"name":"k8s","plugins":{}}', /"plugins" must be an array/],
    ['a single-plugin .conf first', '00-flannel.conf', '{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}', /00-flannel\.conf is a single-plugin config, not a \.conflist/],
  ]
  for (const [what, name, text, message] of cases) {
    const h = host(t)
    writeFileSync(join(h.conf, name), text)
    const r = install(h, CHAIN)
    t.equal(r.status, 1, what)
    t.match(r.stderr, message, what)
    t.equal(readFileSync(join(h.conf, name), 'utf8'), text, `${what}: file untouched`)
    t.same(readdirSync(h.conf), [name], `${what}: no temp file`)
  }
})

t.test('a missing source binary fails before anything is installed', async (t) => {
  const h = host(t)
  rmSync(join(h.dist, 'nsm-ipam'))
  const r = install(h)
  t.equal(r.status, 1)
  t.match(r.stderr, /source binary .*dist\/nsm-ipam does not exist/)
  t.same(readdirSync(h.bin), [], 'nsm not installed alone')
  const noBin = install({ ...h, bin: join(h.root, 'nope') })
  t.equal(noBin.status, 1)
  t.match(noBin.stderr, /CNI_BIN_DIR .*nope is not a directory/)
})
