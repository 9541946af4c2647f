// podman (CNI backend) as the runtime for dist/nsm (issue 5 deliverable 5), with the real agent:
//   - a network whose conflist is `nsm` alone (attachment mode): the container's eth0 is the nsm
//     interface, with the endpoint's point-to-point address, and it pings the endpoint;
//   - a network `ptp` (+ host-local) then `nsm` (chained): the container keeps ptp's eth0 and gets
//     nsm-web from its pod annotation (podman passes K8S_POD_NAME = the container name; the agent reads
//     default_<name>.json from its pod-info directory), and pings the endpoint through it.
// Removing the containers leaves no link (container side, endpoint side, host side), no connection in
// the agent and no host-local reservation.
//
// Nothing global is touched: containers.conf comes from a temp file through CONTAINERS_CONF; the network
// config dir, podman's storage, the rootfs (busybox) and host-local's dataDir are temp directories
// removed at teardown, after every container of this storage is removed.
import { mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { ip, linkNames, makeNetns, RUN } from '../lib/netns'
import { podmanSandbox } from '../lib/podman'
import { startMesh, WEB } from './nsm-fixture'


const mesh = await startMesh(t)
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.9.0/24'] })

const box = podmanSandbox(t, { pluginDirs: [mesh.binDir], applets: ['sh', 'ip', 'ping', 'sleep'], prefix: 'nsm-podman-nsm-' })
const { podman, limits } = box
const dirs = { rootfs: box.rootfs, data: join(box.base, 'host-local') }
mkdirSync(dirs.data)

const attachNet = `nsmatt${RUN}`
const chainNet = `nsmchn${RUN}`
box.network(attachNet, [{ type: 'nsm', socket: mesh.socket, networkService: WEB }])
box.network(chainNet, [{ type: 'ptp', ipam: { type: 'host-local', subnet: '10.214.61.0/24', dataDir: dirs.data } }, { type: 'nsm', socket: mesh.socket }])

// Host links this test could leave: ptp's host veth carries an address of the chained network's subnet,
// and nothing of the endpoint's pool may ever appear on the host. (A count of all host links would also
// see the links of tests running in parallel, e.g. the nsm-ipam podman test's ptp veths.)
const hostAddressesIn = (prefix: string): string[] =>
  (JSON.parse(ip(undefined, '-j', '-4', 'addr', 'show')) as Array<{ ifname: string; addr_info: Array<{ local: string }> }>).flatMap((l) =>
    l.addr_info.filter((a) => a.local.startsWith(prefix)).map((a) => `${l.ifname} ${a.local}`),
  )
const reservations = (): string[] => {
  try {
    return readdirSync(join(dirs.data, chainNet)).filter((f) => /^\d/.test(f))
  } catch {
    return []
  }
}

/** The endpoint address of the container's connection on `network`, from the agent. */
async function peerOf(network: string, containerId: string, ifname: string): Promise<string> {
  const conns = (await mesh.connections()).filter((c) => c.id.startsWith(`${containerId}-`))
  t.equal(conns.length, 1, `one connection for ${containerId.slice(0, 12)} on ${network} (${ifname})`)
  return (conns[0]?.context?.ipContext?.dstIpAddrs[0] ?? '').split('/')[0] ?? ''
}

t.test('attachment mode: eth0 is the nsm interface and reaches the endpoint; rm leaves nothing', async (t) => {
  const started = await podman('run', '-d', ...limits, '--network', attachNet, '--rootfs', dirs.rootfs, '/bin/sleep', '300')
  const id = started.stdout.trim()
  t.match(id, /^[0-9a-f]{64}$/, 'container started')
  t.same(await mesh.connectionIds(), [`${id}-eth0`], 'one connection, <container id>-eth0')
  const peer = await peerOf(attachNet, id, 'eth0')
  const addr = await podman('exec', id, 'ip', '-4', '-o', 'addr', 'show', 'eth0')
  t.match(addr.stdout, /inet 172\.30\.9\.\d+\/32 /, 'the container sees its point-to-point address on eth0')
  const ping = await podman('exec', id, 'ping', '-c', '1', '-W', '2', peer)
  t.match(ping.stdout, /1 packets received/, `the container pings the endpoint at ${peer}`)
  await podman('rm', '-f', '-t', '0', id)
  t.same(await mesh.connectionIds(), [], 'the agent holds nothing')
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone')
  t.same(hostAddressesIn('172.30.9.'), [], 'no host link left')
})

t.test('chained after ptp: eth0 kept, nsm-web from the annotation reaches the endpoint; rm leaves nothing', async (t) => {
  const name = `nsmc-${RUN}`
  mesh.pod('default', name, { labels: { app: 'podman' }, annotations: { 'networkservicemesh.io': `kernel://${WEB}/nsm-web` } })
  const started = await podman('run', '-d', ...limits, '--name', name, '--network', chainNet, '--rootfs', dirs.rootfs, '/bin/sleep', '300')
  const id = started.stdout.trim()
  t.match(id, /^[0-9a-f]{64}$/, 'container started')
  t.same(await mesh.connectionIds(), [`${id}-nsm-web`])
  t.equal(reservations().length, 1, 'host-local reserved eth0\'s address')
  const eth0 = await podman('exec', id, 'ip', '-4', '-o', 'addr', 'show', 'eth0')
  t.match(eth0.stdout, /inet 10\.214\.61\.\d+\/24 /, 'eth0 from ptp + host-local')
  const nsm = await podman('exec', id, 'ip', '-4', '-o', 'addr', 'show', 'nsm-web')
  t.match(nsm.stdout, /inet 172\.30\.9\.\d+\/32 /, 'nsm-web with the endpoint\'s point-to-point address')
  const peer = await peerOf(chainNet, id, 'eth0')
  const ping = await podman('exec', id, 'ping', '-c', '1', '-W', '2', peer)
  t.match(ping.stdout, /1 packets received/, `the container pings the endpoint at ${peer}`)
  t.equal(hostAddressesIn('10.214.61.').length, 1, 'while it runs, ptp\'s host veth carries the gateway (what the check below looks for)')
  await podman('rm', '-f', '-t', '0', id)
  t.same(await mesh.connectionIds(), [], 'the agent holds nothing')
  t.same(reservations(), [], 'no host-local reservation left')
  t.same(linkNames(ep.name), ['lo'], 'the endpoint side is gone')
  t.same(hostAddressesIn('10.214.61.'), [], 'no host link left (ptp\'s veth is gone)')
})
