// Hardening of the nsm plugin through dist/nsm and the real agent, with real namespaces: Multus' repeated
// CNI_ARGS keys, a Multus deviceID naming no VF (SR-IOV: test/integration/sriov.test.ts), netns paths with
// characters a URL escapes, endpoint name collisions,
// permanent errors answered as such, and CNI calls larger than 64 KiB.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { linkNames, makeNetns, removeNetns, RUN, sh, type TestNetns } from '../lib/netns'
import { resultOf, startMesh, WEB } from './nsm-fixture'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

let named = 0
/** A netns with exactly this name (after the run prefix), lo up, removed at teardown. */
function netnsNamed(t: Teardown, name: string): TestNetns {
  const full = `t${RUN}${name}${++named}`
  sh('ip', ['netns', 'add', full])
  t.teardown(() => removeNetns(full))
  sh('ip', ['-n', full, 'link', 'set', 'lo', 'up'])
  return { name: full, path: `/var/run/netns/${full}` }
}

const MULTUS_ARGS = 'IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u'

const mesh = await startMesh(t)
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'hard-ep', netns: ep.path, pools: ['172.30.9.0/24'] })

t.test('Multus CNI_ARGS with every key twice: ADD and DEL succeed, the pod is found', async (t) => {
  const pod = makeNetns(t, 'p')
  mesh.pod('ns', 'p', { labels: { tier: 'x' } })
  const conf = mesh.conf({ networkService: WEB })
  const id = `mdup-${pod.name}`
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', args: MULTUS_ARGS, stdin: conf }))
  t.equal((res.interfaces as Array<{ name: string }>)[0]?.name, 'net1')
  const made = (await mesh.connections()).find((c) => c.id === `${id}-net1`)
  t.match(made?.labels, { tier: 'x', podName: 'p', namespace: 'ns' }, 'the pod named by the repeated keys')
  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', args: MULTUS_ARGS, stdin: conf })
  t.equal(del.exitCode, 0, del.stdout)
  t.same(linkNames(pod.name), ['lo'])
})

t.test('GC: a null valid-attachments list (libcni\'s nil) and a missing one close every connection of the network', async (t) => {
  const conf = mesh.conf({ networkService: WEB })
  for (const [label, extra] of [['null', { 'cni.dev/valid-attachments': null }], ['missing', {}]] as const) {
    const pod = makeNetns(t, 'p')
    const id = `gcn-${pod.name}`
    resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }))
    t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }).then(() => undefined))
    const other = await mesh.cni({ command: 'GC', stdin: { ...conf, ...extra, name: 'other-net' } })
    t.equal(other.exitCode, 0, `${label}: GC of another network: ${other.stdout}`)
    t.ok((await mesh.connectionIds()).includes(`${id}-net1`), `${label}: another network's GC keeps it`)
    const gc = await mesh.cni({ command: 'GC', stdin: { ...conf, ...extra } })
    t.equal(gc.exitCode, 0, `${label}: ${gc.stdout}`)
    t.notOk((await mesh.connectionIds()).includes(`${id}-net1`), `${label}: closed`)
    t.same(linkNames(pod.name), ['lo'], `${label}: the interface is gone`)
  }
})

t.test('Multus deviceID (netconf or runtimeConfig) naming no VF: ADD refused (7) naming the field, no veth instead', async (t) => {
  const pod = makeNetns(t, 'p')
  const id = `dev-${pod.name}`
  for (const [field, extra] of [
    ['deviceID', { deviceID: '0000:fe:1f.6' }],
    ['runtimeConfig.deviceID', { runtimeConfig: { deviceID: '0000:fe:1f.7' } }],
  ] as const) {
    const conf = mesh.conf({ networkService: WEB, ...extra })
    const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    t.equal(out.json?.code, 7, `${field}: ${out.stdout}`)
    t.match(String(out.json?.msg), new RegExp(`with the VF of ${field.replace('.', '\\.')} 0000:fe:1f\\.[67]: .*no PCI device`), `${field}: the message names the field`)
    t.same(linkNames(pod.name), ['lo'], `${field}: no veth was made`)
    t.notOk((await mesh.connectionIds()).includes(`${id}-net1`), `${field}: no connection`)
    const bigArgs = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net2', args: `IgnoreUnknown=1;PAD=${'y'.repeat(100 << 10)}`, stdin: mesh.conf({ networkService: WEB }) })
  t.equal(bigArgs.exitCode, 0, `100 KiB of CNI_ARGS the plugin may ignore: served: ${bigArgs.stdout.slice(0, 300)}`)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net2', stdin: conf })).exitCode, 0)
  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    t.equal(del.exitCode, 0, `${field}: DEL still succeeds: ${del.stdout}`)
  }
})

t.test('netns names with %, spaces and #: the interface lands in CNI_NETNS, never in a look-alike', async (t) => {
  const conf = mesh.conf({ networkService: WEB })
  for (const [label, name, decoyName] of [
    ['percent', 'pct%2dx', 'pct-x'],
    ['space', 'sp ace', 'sp'],
    ['hash', 'ha#sh', 'ha'],
    ['question mark', 'qu?x', 'qu'],
  ] as const) {
    const pod = netnsNamed(t, name)
    // The look-alike a wrong decoding would land in: same counter, so the same suffix.
    const decoy = { name: pod.name.replace(name, decoyName), path: '' }
    if (label === 'percent') {
      sh('ip', ['netns', 'add', decoy.name])
      t.teardown(() => removeNetns(decoy.name))
    }
    const id = `pct-${label.replace(' ', '')}-${named}`
    const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    t.equal(out.exitCode, 0, `${label}: ${out.stdout}`)
    t.ok(linkNames(pod.name).includes('net1'), `${label}: net1 is in ${JSON.stringify(pod.name)}`)
    if (label === 'percent') t.same(linkNames(decoy.name), ['lo'], `${label}: nothing in ${decoy.name}`)
    t.equal((resultOf(out).interfaces as Array<{ sandbox: string }>)[0]?.sandbox, pod.path, `${label}: sandbox is CNI_NETNS`)
    const check = await mesh.cni({ command: 'CHECK', containerId: id, netns: pod.path, ifname: 'net1', stdin: { ...conf, prevResult: resultOf(out) } })
    t.equal(check.exitCode, 0, `${label}: CHECK: ${check.stdout}`)
    const bigArgs = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net2', args: `IgnoreUnknown=1;PAD=${'y'.repeat(100 << 10)}`, stdin: mesh.conf({ networkService: WEB }) })
  t.equal(bigArgs.exitCode, 0, `100 KiB of CNI_ARGS the plugin may ignore: served: ${bigArgs.stdout.slice(0, 300)}`)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net2', stdin: conf })).exitCode, 0)
  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
    t.equal(del.exitCode, 0, `${label}: DEL: ${del.stdout}`)
    t.same(linkNames(pod.name), ['lo'], `${label}: DEL removed it`)
  }
})

t.test('an endpoint pod whose netns name has a space, # and %: registered with that netns, serves a client', async (t) => {
  const epPod = netnsNamed(t, 'e p#%2d')
  const client = netnsNamed(t, 'c l%41')
  const svc = `pct-ep-${RUN}`
  await mesh.admit(svc, { namespace: 'pct' })
  mesh.pod('pct', 'ep', { annotations: { 'endpoint.networkservicemesh.io': `${svc}?cidr=172.30.77.0/24` } })
  const conf = mesh.conf({ labels: {} })
  const epId = `pctep-${RUN}`
  const epOut = await mesh.cni({ command: 'ADD', containerId: epId, netns: epPod.path, ifname: 'eth0', args: 'K8S_POD_NAMESPACE=pct;K8S_POD_NAME=ep', stdin: conf })
  t.equal(epOut.exitCode, 0, epOut.stdout)
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: epId, netns: epPod.path, ifname: 'eth0', stdin: conf }).then(() => undefined))
  const eps = await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
  const mine = eps.endpoints.find((e) => e.endpoint?.networkServiceNames.includes(svc))
  t.equal(mine?.extension?.netnsPath, epPod.path, 'the registration names the pod\'s netns')
  const cid = `pctcl-${RUN}`
  const out = await mesh.cni({ command: 'ADD', containerId: cid, netns: client.path, ifname: 'net1', stdin: mesh.conf({ networkService: svc }) })
  t.equal(out.exitCode, 0, out.stdout)
  t.ok(linkNames(client.name).includes('net1'), 'the client interface is in the client netns')
  t.ok(linkNames(epPod.name).some((n) => n.startsWith('nsm-')), 'the endpoint side is in the endpoint pod')
  t.equal((await mesh.cni({ command: 'DEL', containerId: cid, netns: client.path, ifname: 'net1', stdin: mesh.conf({ networkService: svc }) })).exitCode, 0)
})

t.test('healing a client whose netns name has a % rebuilds it in that netns, not a look-alike', async (t) => {
  const svc = `pct-heal-${RUN}`
  await mesh.agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: svc, payload: 'IP', matches: [], pathIds: [] })
  const epA = makeNetns(t, 'ea')
  const epB = makeNetns(t, 'eb')
  const pod = netnsNamed(t, 'hl%2dx')
  const decoy = pod.name.replace('hl%2dx', 'hl-x')
  sh('ip', ['netns', 'add', decoy])
  t.teardown(() => removeNetns(decoy))
  const unregister = (name: string) => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name }).then(() => undefined, () => undefined)
  await mesh.endpoint({ name: `pa-${RUN}`, netns: epA.path, service: svc, pools: ['172.30.78.0/24'] })
  t.teardown(() => unregister(`pa-${RUN}`))
  const conf = mesh.conf({ networkService: svc })
  const id = `heal-${RUN}`
  resultOf(await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }))
  t.teardown(() => mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf }).then(() => undefined))
  await mesh.endpoint({ name: `pb-${RUN}`, netns: epB.path, service: svc, pools: ['172.30.79.0/24'] })
  t.teardown(() => unregister(`pb-${RUN}`))
  await unregister(`pa-${RUN}`)
  let healed = false
  for (let i = 0; i < 100 && !healed; i++) {
    const c = (await mesh.connections()).find((x) => x.id === `${id}-net1`)
    healed = c?.networkServiceEndpointName === `pb-${RUN}` && c.state === 0
    if (!healed) await new Promise((r) => setTimeout(r, 100))
  }
  t.ok(healed, 'the connection moved to the other endpoint and is UP')
  t.ok(linkNames(pod.name).includes('net1'), 'net1 is still in the client netns')
  t.same(linkNames(decoy), ['lo'], `nothing in ${decoy}`)
  t.ok(linkNames(epB.name).some((n) => n.startsWith('nsm-')), 'the new endpoint side is in the new endpoint')
})

t.test('endpoint pods relUPPER and relupper-f8c91628: two registrations, each DEL removes only its own', async (t) => {
  const svc = `names-${RUN}`
  await mesh.admit(svc, { namespace: 'names' })
  const conf = mesh.conf({ labels: {} })
  const ids = ['relUPPER', 'relupper-f8c91628']
  const pods = ids.map((id, i) => {
    const ns = makeNetns(t, 'n')
    mesh.pod('names', `pod${i}`, { annotations: { 'endpoint.networkservicemesh.io': `${svc}?cidr=172.30.${90 + i}.0/24` } })
    return { id, ns, args: `K8S_POD_NAMESPACE=names;K8S_POD_NAME=pod${i}` }
  })
  const mine = async () => (await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })).endpoints.filter((e) => e.endpoint?.networkServiceNames.includes(svc))
  for (const p of pods) {
    const out = await mesh.cni({ command: 'ADD', containerId: p.id, netns: p.ns.path, ifname: 'eth0', args: p.args, stdin: conf })
    t.equal(out.exitCode, 0, `${p.id}: ${out.stdout}`)
    t.teardown(() => mesh.cni({ command: 'DEL', containerId: p.id, netns: p.ns.path, ifname: 'eth0', stdin: conf }).then(() => undefined))
  }
  const both = await mine()
  t.equal(both.length, 2, 'two registrations')
  t.same(both.map((e) => e.extension?.netnsPath).sort(), pods.map((p) => p.ns.path).sort(), 'one per pod netns')
  const del = await mesh.cni({ command: 'DEL', containerId: pods[0]!.id, netns: pods[0]!.ns.path, ifname: 'eth0', stdin: conf })
  t.equal(del.exitCode, 0, del.stdout)
  t.same((await mine()).map((e) => e.extension?.netnsPath), [pods[1]!.ns.path], 'the other pod\'s registration stays')
})

t.test('an endpoint pod whose endpoint name is taken by another netns is refused (106), the other kept', async (t) => {
  const svc = `taken-${RUN}`
  await mesh.admit(svc, { namespace: 'names' })
  const other = makeNetns(t, 'o')
  const pod = makeNetns(t, 'n')
  const id = `taken-${RUN}`
  const name = `${svc}.cni-${id}`
  await mesh.endpoint({ name, netns: other.path, service: svc, pools: ['172.30.95.0/24'] })
  t.teardown(() => mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name }).then(() => undefined, () => undefined))
  mesh.pod('names', 'taken', { annotations: { 'endpoint.networkservicemesh.io': `${svc}?cidr=172.30.96.0/24` } })
  const conf = mesh.conf({ labels: {} })
  const out = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'eth0', args: 'K8S_POD_NAMESPACE=names;K8S_POD_NAME=taken', stdin: conf })
  t.equal(out.json?.code, 106, out.stdout)
  t.match(String(out.json?.msg), new RegExp(`endpoint ${name.replace(/\./g, '\\.')} .*registered already for netns ${other.path}`))
  const eps = await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: name })
  t.equal(eps.endpoints[0]?.extension?.netnsPath, other.path, 'the other registration is untouched')
})

t.test('permanent errors are not "try again" (11): CNI_IFNAME=lo, an interface named lo, a broken pod-info file', async (t) => {
  const pod = makeNetns(t, 'p')
  const conf = mesh.conf({ networkService: WEB })
  const lo = await mesh.cni({ command: 'ADD', containerId: `lo-${pod.name}`, netns: pod.path, ifname: 'lo', stdin: conf })
  t.equal(lo.json?.code, 4, `CNI_IFNAME=lo: ${lo.stdout}`)
  t.match(String(lo.json?.msg), /^CNI_IFNAME "lo"/, 'names the variable')
  t.same(await mesh.connectionIds().then((ids) => ids.filter((i) => i.startsWith('lo-'))), [], 'nothing made')

  const prev = { cniVersion: '1.1.0', interfaces: [{ name: 'eth0', sandbox: pod.path }], ips: [] }
  const loEntry = await mesh.cni({ command: 'ADD', containerId: `loe-${pod.name}`, netns: pod.path, ifname: 'eth0', stdin: mesh.conf({ networkServices: [`kernel://${WEB}/lo`], prevResult: prev }) })
  t.equal(loEntry.json?.code, 7, `chained, networkServices naming lo: ${loEntry.stdout}`)
  t.match(String(loEntry.json?.msg), /^networkServices: .*lo/, 'names the field')

  mesh.pod('bad', 'annot', { annotations: { 'networkservicemesh.io': `kernel://${WEB}/lo` } })
  const annot = await mesh.cni({ command: 'ADD', containerId: `loa-${pod.name}`, netns: pod.path, ifname: 'eth0', args: 'K8S_POD_NAMESPACE=bad;K8S_POD_NAME=annot', stdin: mesh.conf({ prevResult: prev }) })
  t.equal(annot.json?.code, 105, `an annotation naming lo: ${annot.stdout}`)

  writeFileSync(join(mesh.podInfoDir, 'bad_broken.json'), '{"labels": ')
  const broken = await mesh.cni({ command: 'ADD', containerId: `pi-${pod.name}`, netns: pod.path, ifname: 'net1', args: 'K8S_POD_NAMESPACE=bad;K8S_POD_NAME=broken', stdin: mesh.conf() })
  t.equal(broken.json?.code, 105, `invalid pod-info file: ${broken.stdout}`)
  t.match(String(broken.json?.msg), /bad_broken\.json/, 'names the file')
  writeFileSync(join(mesh.podInfoDir, 'bad_shape.json'), '{"labels": ["x"]}')
  const shape = await mesh.cni({ command: 'ADD', containerId: `pi2-${pod.name}`, netns: pod.path, ifname: 'net1', args: 'K8S_POD_NAMESPACE=bad;K8S_POD_NAME=shape', stdin: mesh.conf() })
  t.equal(shape.json?.code, 105, `pod-info file with a bad field: ${shape.stdout}`)
  t.match(String(shape.json?.msg), /bad_shape\.json.*labels/, 'names the file and the field')
  t.same(linkNames(pod.name), ['lo'], 'nothing was made')
})

t.test('calls over 64 KiB through dist/nsm: GC with 3,000 attachments, ADD with 1,200 labels; refusals are never 100', async (t) => {
  const pod = makeNetns(t, 'p')
  const labels: Record<string, string> = {}
  for (let i = 0; i < 1200; i++) labels[`example.com/label-number-${i}`] = `value-${i}-${'v'.repeat(20)}`
  const conf = mesh.conf({ networkService: WEB, labels })
  t.ok(JSON.stringify(conf).length > 64 * 1024, `the netconf is ${JSON.stringify(conf).length} bytes`)
  const id = `big-${pod.name}`
  const add = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
  t.equal(add.exitCode, 0, `ADD with 1,200 labels: ${add.stdout.slice(0, 300)}`)
  const made = (await mesh.connections()).find((c) => c.id === `${id}-net1`)
  t.equal(made?.labels['example.com/label-number-1199'], labels['example.com/label-number-1199'], 'the labels reached the agent')

  const valid = Array.from({ length: 3000 }, (_, i) => ({ containerID: `still-running-container-${i}`, ifname: 'eth0' }))
  valid.push({ containerID: id, ifname: 'net1' })
  const gcConf = { ...mesh.conf({ networkService: WEB }), 'cni.dev/valid-attachments': valid }
  t.ok(JSON.stringify(gcConf).length > 64 * 1024, `the GC netconf is ${JSON.stringify(gcConf).length} bytes`)
  const gc = await mesh.cni({ command: 'GC', stdin: gcConf })
  t.equal(gc.exitCode, 0, `GC with 3,000 attachments: ${gc.stdout}`)
  t.ok((await mesh.connectionIds()).includes(`${id}-net1`), 'the listed attachment is kept')

  const refusals: Array<[string, Parameters<typeof mesh.cni>[0]]> = [
    ['2 MiB of stdin', { command: 'ADD', containerId: id, netns: pod.path, ifname: 'net2', stdin: { ...conf, padding: 'x'.repeat(2 << 20) } }],
    ['100 KiB of CNI_ARGS', { command: 'ADD', containerId: id, netns: pod.path, ifname: 'net2', args: `PAD=${'y'.repeat(100 << 10)}`, stdin: conf }],
    ['a GC of 2 MiB', { command: 'GC', stdin: { ...gcConf, 'cni.dev/valid-attachments': Array.from({ length: 40000 }, (_, i) => ({ containerID: `c-${i}-${'z'.repeat(20)}`, ifname: 'eth0' })) } }],
  ]
  for (const [label, c] of refusals) {
    const out = await mesh.cni(c)
    t.equal(out.exitCode, 1, `${label}: refused`)
    t.not(out.json?.code, 100, `${label}: not "agent unreachable": ${out.stdout.slice(0, 300)}`)
    t.not(out.json?.code, 11, `${label}: not "try again"`)
  }
  const bigArgs = await mesh.cni({ command: 'ADD', containerId: id, netns: pod.path, ifname: 'net2', args: `IgnoreUnknown=1;PAD=${'y'.repeat(100 << 10)}`, stdin: mesh.conf({ networkService: WEB }) })
  t.equal(bigArgs.exitCode, 0, `100 KiB of CNI_ARGS the plugin may ignore: served: ${bigArgs.stdout.slice(0, 300)}`)
  t.equal((await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net2', stdin: conf })).exitCode, 0)
  const del = await mesh.cni({ command: 'DEL', containerId: id, netns: pod.path, ifname: 'net1', stdin: conf })
  t.equal(del.exitCode, 0, del.stdout)
})
