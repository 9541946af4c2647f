// podman (CNI backend) runs containers on a ptp + nsm-ipam network: the container sees the address
// nsm-ipam reserved for its container id, and removing the container releases it.
//
// Nothing global is touched: containers.conf comes from a temp file through CONTAINERS_CONF, the network
// config dir, podman's storage (--root/--runroot), the rootfs (busybox) and nsm-ipam's dataDir are temp
// directories removed at teardown, after every container of this storage is removed.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stageNsmIpam } from '../conformance/exec'
import { RUN } from '../lib/netns'
import { podmanSandbox } from '../lib/podman'


const binDir = await stageNsmIpam(t)
const net = `nsmpod${RUN}`
const box = podmanSandbox(t, { pluginDirs: [binDir], applets: ['sh', 'ip', 'sleep'], prefix: 'nsm-podman-' })
const { podman, limits } = box
const dirs = { rootfs: box.rootfs, data: join(box.base, 'ipam') }
mkdirSync(dirs.data)
const subnet = '10.214.60.0/24'
box.network(net, [{ type: 'ptp', ipam: { type: 'nsm-ipam', subnet, dataDir: dirs.data } }])

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
