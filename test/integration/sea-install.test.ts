// deploy/install-cni.sh with its default source, dist/sea, as the DaemonSet's init container runs it: the
// self-contained executables land in a temp CNI bin dir and run from there with no `node` on PATH, exec'd
// directly and, for nsm-ipam, delegated to by a real main plugin (Debian's ptp) the way a runtime's chain
// does it, in a real network namespace.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ensureSea } from '../lib/sea'
import { linkAddresses, makeNetns, uniqueName } from '../lib/netns'

const ROOT = join(import.meta.dirname, '../..')
const INSTALLER = join(ROOT, 'deploy/install-cni.sh')
const NO_NODE_PATH = '/nonexistent'
const PTP = '/usr/lib/cni/ptp'


// nsm-ipam always; nsm once its bundle exists (a colleague is writing it).
const plugins = ['nsm-ipam', ...(existsSync(join(ROOT, 'dist/nsm')) ? ['nsm'] : [])]
for (const p of plugins) ensureSea(p)

/** A temp host: /opt/cni/bin and /etc/cni/net.d; the SEA executables installed with the installer's defaults. */
function installedHost(t: { teardown(fn: () => void): void }): { bin: string; stderr: string } {
  const root = mkdtempSync(join(tmpdir(), 'nsm-sea-install-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const bin = join(root, 'opt/cni/bin')
  const conf = join(root, 'etc/cni/net.d')
  mkdirSync(bin, { recursive: true })
  mkdirSync(conf, { recursive: true })
  // No NSM_DIST_DIR: the default must be the self-contained executables.
  const r = spawnSync('sh', [INSTALLER], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_BIN_DIR: bin, CNI_CONF_DIR: conf, NSM_CNI_BINARIES: plugins.join(' ') }, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`install-cni.sh exited ${r.status}: ${r.stderr}`)
  return { bin, stderr: r.stderr }
}

t.test(`install-cni.sh copies dist/sea (${plugins.join(', ')}) and they run there without node`, async (t) => {
  if (plugins.length < 2) t.comment('dist/nsm not built yet: only nsm-ipam installed and run')
  const h = installedHost(t)
  t.notMatch(h.stderr, /warning/, 'no "node script" warning for the executables')
  t.same(readdirSync(h.bin).sort(), [...plugins].sort())
  for (const p of plugins) {
    const exe = join(h.bin, p)
    t.equal(statSync(exe).mode & 0o777, 0o755, `${p} is executable`)
    t.ok(readFileSync(exe).equals(readFileSync(join(ROOT, 'dist/sea', p))), `${p} is the dist/sea executable`)
    const r = spawnSync(exe, [], { env: { PATH: NO_NODE_PATH, CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.1.0"}', encoding: 'utf8' })
    t.equal(r.status, 0, `${p} VERSION: ${r.stderr}`)
    t.equal(r.stderr, '')
    t.match(JSON.parse(r.stdout), { cniVersion: '1.1.0', supportedVersions: Array })
  }
})

t.test('the JS bundles can still be installed, with a warning that they need node', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nsm-sea-install-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const r = spawnSync('sh', [INSTALLER], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', NSM_DIST_DIR: join(ROOT, 'dist'), NSM_CNI_BINARIES: 'nsm-ipam', CNI_BIN_DIR: root, CNI_CONF_DIR: root }, encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stderr, /warning: .*dist\/nsm-ipam is a node script: it runs only on hosts with node on PATH/)
})

t.test('ptp delegates to the installed nsm-ipam executable with no node on PATH', { skip: existsSync(PTP) ? false : `${PTP} missing (containernetworking-plugins)` }, async (t) => {
  const h = installedHost(t)
  const ns = makeNetns(t, 'sip')
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-sea-ptp-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const network = `seaptp-${uniqueName('n')}`
  const conf = { cniVersion: '1.0.0', name: network, type: 'ptp', ipMasq: false, ipam: { type: 'nsm-ipam', subnet: '10.79.0.0/24', dataDir } }
  const call = (command: string): { status: number | null; stdout: string; stderr: string } =>
    spawnSync(PTP, [], {
      // What a runtime gives: CNI variables, CNI_PATH with the installed plugins; a PATH without node.
      env: { PATH: NO_NODE_PATH, CNI_COMMAND: command, CNI_CONTAINERID: 'sea1', CNI_NETNS: ns.path, CNI_IFNAME: 'eth0', CNI_PATH: h.bin },
      input: JSON.stringify(conf), encoding: 'utf8', timeout: 30_000,
    })
  let added = false
  t.teardown(() => {
    if (added) call('DEL')
  })
  const add = call('ADD')
  added = add.status === 0
  t.equal(add.status, 0, add.stdout + add.stderr)
  t.match(JSON.parse(add.stdout), { ips: [{ address: '10.79.0.2/24' }] })
  t.same(linkAddresses(ns.name, 'eth0').filter((a) => !a.startsWith('fe80:')), ['10.79.0.2/24'], 'the address nsm-ipam reserved is on the pod interface')
  t.same(readdirSync(join(dataDir, network, 'reservations')), ['10.79.0.2'])
  const del = call('DEL')
  t.equal(del.status, 0, del.stdout + del.stderr)
  added = del.status !== 0
  t.same(readdirSync(join(dataDir, network, 'reservations')), [], 'released by the executable through ptp')
})
