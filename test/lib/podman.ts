// A private podman sandbox for tests (TESTBED.md recipe): the CNI backend through a temp
// containers.conf (CONTAINERS_CONF), temp network config dir, storage (--root/--runroot) and a busybox
// rootfs, so nothing global is touched. Teardown removes every container of this storage, then the dir.
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface PodmanSandbox {
  base: string
  /** The CNI network config dir podman reads. */
  confDir: string
  /** The container rootfs (busybox with the given applets). */
  rootfs: string
  /** Runs podman on this sandbox's storage with runc and cgroupfs. */
  podman(...args: string[]): Promise<{ stdout: string; stderr: string }>
  /** Writes `<name>.conflist` into the config dir. */
  network(name: string, plugins: unknown[]): void
  /** ulimits this VM needs for `podman run`. */
  limits: string[]
}

export function podmanSandbox(
  t: { teardown(fn: () => Promise<void>): void },
  opts: { pluginDirs: string[]; applets: string[]; prefix: string },
): PodmanSandbox {
  const base = mkdtempSync(join(tmpdir(), opts.prefix))
  const dirs = { conf: join(base, 'net.d'), root: join(base, 'root'), runroot: join(base, 'runroot'), rootfs: join(base, 'rootfs') }
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true })
  mkdirSync(join(dirs.rootfs, 'bin'))
  copyFileSync('/bin/busybox', join(dirs.rootfs, 'bin', 'busybox'))
  for (const app of opts.applets) symlinkSync('busybox', join(dirs.rootfs, 'bin', app))
  const plugins = ['/usr/lib/cni', ...opts.pluginDirs].map((d) => `"${d}"`).join(', ')
  writeFileSync(join(base, 'containers.conf'), `[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = [${plugins}]\nnetwork_config_dir = "${dirs.conf}"\n`)
  const podman = (...args: string[]) =>
    run('podman', ['--root', dirs.root, '--runroot', dirs.runroot, '--runtime', 'runc', '--cgroup-manager=cgroupfs', ...args], {
      env: { ...process.env, CONTAINERS_CONF: join(base, 'containers.conf') },
      timeout: 60_000,
    })
  t.teardown(async () => {
    await podman('rm', '-a', '-f', '-t', '0').catch(() => undefined)
    rmSync(base, { recursive: true, force: true })
  })
  return {
    base,
    confDir: dirs.conf,
    rootfs: dirs.rootfs,
    podman,
    network: (name, list) => writeFileSync(join(dirs.conf, `${name}.conflist`), JSON.stringify({ cniVersion: '1.0.0', name, plugins: list })),
    limits: ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'],
  }
}
