// podman (CNI backend) runs containers on a ptp + nsm-ipam network: the container sees the address
// nsm-ipam reserved for its container id, and removing the container releases it.
//
// Nothing global is touched: containers.conf comes from a temp file through CONTAINERS_CONF, the network
// config dir, podman's storage (--root/--runroot), the rootfs (busybox) and nsm-ipam's dataDir are temp
// directories removed at teardown, after every container of this storage is removed.
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { stageNsmIpam } from '../conformance/exec'
import { RUN } from '../lib/netns'

const run = promisify(execFile)

const binDir = await stageNsmIpam(t)
const base = mkdtempSync(join(tmpdir(), 'nsm-podman-'))
const net = `nsmpod${RUN}`
const dirs = { conf: join(base, 'net.d'), root: join(base, 'root'), runroot: join(base, 'runroot'), rootfs: join(base, 'rootfs'), data: join(base, 'ipam') }
for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true })
mkdirSync(join(dirs.rootfs, 'bin'))
copyFileSync('/bin/busybox', join(dirs.rootfs, 'bin', 'busybox'))
for (const app of ['sh', 'ip', 'sleep']) symlinkSync('busybox', join(dirs.rootfs, 'bin', app))
writeFileSync(
  join(base, 'containers.conf'),
  `[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["/usr/lib/cni", "${binDir}"]\nnetwork_config_dir = "${dirs.conf}"\n`,
)
const subnet = '10.214.60.0/24'
writeFileSync(
  join(dirs.conf, `${net}.conflist`),
  JSON.stringify({ cniVersion: '1.0.0', name: net, plugins: [{ type: 'ptp', ipam: { type: 'nsm-ipam', subnet, dataDir: dirs.data } }] }),
)

const podman = (...args: string[]) =>
  run('podman', ['--root', dirs.root, '--runroot', dirs.runroot, '--runtime', 'runc', '--cgroup-manager=cgroupfs', ...args], {
    env: { ...process.env, CONTAINERS_CONF: join(base, 'containers.conf') },
    timeout: 60_000,
  })
const limits = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024']

t.teardown(async () => {
  await podman('rm', '-a', '-f', '-t', '0').catch(() => undefined)
  rmSync(base, { recursive: true, force: true })
})

/** The reservations in nsm-ipam's store for this network: address -> container id. */
function reservations(): Map<string, string> {
  const dir = join(dirs.data, net, 'reservations')
  const out = new Map<string, string>()
  let names: string[] = []
  try {
    names = readdirSync(dir)
  } catch {
    return out
  }
  // reservations/<ip>/o.<token> (ipam/store/file.ts); an empty directory is a free address.
  for (const n of names) {
    const rec = readdirSync(join(dir, n))[0]
    if (rec !== undefined) out.set(n, (JSON.parse(readFileSync(join(dir, n, rec), 'utf8')) as { containerID: string }).containerID)
  }
  return out
}

t.test('a container gets its reserved address, and removing it releases the reservation', async (t) => {
  const started = await podman('run', '-d', ...limits, '--network', net, '--rootfs', dirs.rootfs, '/bin/sleep', '300')
  const id = started.stdout.trim()
  t.match(id, /^[0-9a-f]{64}$/, 'container started')
  const held = reservations()
  t.equal(held.size, 1, 'one reservation while it runs')
  const [addr, owner] = [...held.entries()][0] as [string, string]
  t.equal(owner, id, 'reserved for the container id podman passed')
  const seen = await podman('exec', id, 'ip', '-4', '-o', 'addr', 'show', 'eth0')
  t.match(seen.stdout, new RegExp(`inet ${addr.replace(/\./g, '\\.')}/24 `), `the container sees ${addr}/24 on eth0`)

  // A second container gets another address.
  const second = await podman('run', '--rm', ...limits, '--network', net, '--rootfs', dirs.rootfs, '/bin/sh', '-c', 'ip -4 -o addr show eth0')
  const other = /inet (\S+)\/24/.exec(second.stdout)?.[1]
  t.ok(other !== undefined && other !== addr, `a second container got ${other ?? 'nothing'}, not ${addr}`)
  t.same([...reservations().keys()], [addr], '--rm released the second container\'s address')

  await podman('rm', '-f', '-t', '0', id)
  t.equal(reservations().size, 0, 'removing the container released its address')
})
