// The seed scenario (ARCHITECTURE §1) on a running agent, through dist/nsm as a runtime calls it: three pods
// (namespaces) vpn-gateway, firewall and client of pod namespace `sec`, their annotations registering the
// vpn-gateway and the firewall as endpoints of secure-intranet-connectivity and asking for it from the
// firewall and the client. So the client is connected to the firewall and the firewall to the vpn-gateway.
// Used by the topology tests (nsmctl topology, the topology page).
import type { Mesh } from '../integration/nsm-fixture'
import { resultOf } from '../integration/nsm-fixture'
import { makeNetns, type TestNetns } from './netns'
import { SEED } from './mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface SeedPod {
  name: 'vpn-gateway' | 'firewall' | 'client'
  netns: TestNetns
  containerId: string
  args: string
}

export interface SeedPods {
  vpn: SeedPod
  firewall: SeedPod
  client: SeedPod
  /** CNI DEL of one pod (exit code 0 expected). */
  del(pod: SeedPod): Promise<void>
}

const EMPTY_PREV = { cniVersion: '1.1.0', interfaces: [], ips: [] }

export async function addSeedPods(t: Teardown, mesh: Mesh): Promise<SeedPods> {
  await mesh.admit(SEED, { namespace: 'sec' })
  mesh.pod('sec', 'vpn-gateway', { labels: { app: 'vpn-gateway' }, annotations: { 'endpoint.networkservicemesh.io': `${SEED}?app=vpn-gateway&cidr=172.31.40.0/24&route=10.60.0.0/16` } })
  mesh.pod('sec', 'firewall', {
    labels: { app: 'firewall' },
    annotations: { 'endpoint.networkservicemesh.io': `${SEED}?app=firewall&cidr=172.31.41.0/24&route=10.60.0.0/16`, 'ns.networkservicemesh.io': `${SEED}/nsm0` },
  })
  mesh.pod('sec', 'client', { labels: { app: 'web' }, annotations: { 'ns.networkservicemesh.io': `${SEED}/nsm0` } })
  const pod = (name: SeedPod['name'], kind: string): SeedPod => {
    const netns = makeNetns(t, kind)
    return { name, netns, containerId: `seed-${netns.name}`, args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=sec;K8S_POD_NAME=${name}` }
  }
  const pods = { vpn: pod('vpn-gateway', 'vpn'), firewall: pod('firewall', 'fw'), client: pod('client', 'cl') }
  const added = new Set<SeedPod>()
  const del = async (p: SeedPod): Promise<void> => {
    const out = await mesh.cni({ command: 'DEL', containerId: p.containerId, netns: p.netns.path, ifname: 'eth0', args: p.args, stdin: { ...mesh.conf(), prevResult: EMPTY_PREV } })
    if (out.exitCode !== 0) throw new Error(`DEL ${p.name}: exit ${out.exitCode}: ${out.stdout}${out.stderr}`)
    added.delete(p)
  }
  t.teardown(async () => {
    for (const p of [pods.client, pods.firewall, pods.vpn]) if (added.has(p)) await del(p).catch(() => undefined)
  })
  for (const p of [pods.vpn, pods.firewall, pods.client]) {
    resultOf(await mesh.cni({ command: 'ADD', containerId: p.containerId, netns: p.netns.path, ifname: 'eth0', args: p.args, stdin: { ...mesh.conf(), prevResult: EMPTY_PREV } }))
    added.add(p)
  }
  return { ...pods, del }
}
