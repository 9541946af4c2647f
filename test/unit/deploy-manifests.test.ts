// deploy/: every manifest parses, carries the fields Kubernetes requires, and its references resolve: the
// DaemonSet's service account and volumes, the RBAC binding, CRD names, NAD configs (parsed by our own
// CNI config parser), annotations (by our annotation parser), agent flags (by the agent's flag parser),
// and every kustomization entry (and every manifest is in a kustomization).
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { parseFlags } from '../../agent/config/settings'
import { AGENT_NODE_FLAGS } from '../../agent/node-flags'
import { parseNetConf } from '../../cni/protocol/config'
import { parseEndpointAnnotation } from '../../conf/annotations'

const DEPLOY = join(import.meta.dirname, '../../deploy')
type Obj = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any -- manifests are free-form YAML; each check states the shape it expects
interface Doc { file: string; obj: Obj }

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    if (statSync(p).isDirectory()) return yamlFiles(p)
    return /\.ya?ml$/.test(n) ? [p] : []
  })
}

const files = yamlFiles(DEPLOY)
const docs: Doc[] = []
for (const file of files) {
  for (const d of parseAllDocuments(readFileSync(file, 'utf8'))) {
    if (d.errors.length > 0) throw new Error(`${relative(DEPLOY, file)}: ${d.errors[0]?.message}`)
    const obj = d.toJS() as Obj | null
    if (obj !== null) docs.push({ file: relative(DEPLOY, file), obj })
  }
}
const manifests = docs.filter((d) => d.obj['kind'] !== 'Kustomization')
const ofKind = (kind: string): Doc[] => manifests.filter((d) => d.obj['kind'] === kind)
const one = (kind: string, name: string): Obj => {
  const found = ofKind(kind).filter((d) => d.obj['metadata']?.name === name)
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`)
  return found[0]!.obj
}

t.test('every manifest has apiVersion, kind and a DNS name', async (t) => {
  t.ok(files.length >= 8, 'the deploy tree has its manifests')
  for (const { file, obj } of manifests) {
    t.match(obj, { apiVersion: String, kind: String, metadata: { name: /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/ } }, file)
  }
  const namespaced = manifests.filter((d) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition'].includes(d.obj['kind']))
  for (const { file, obj } of namespaced) t.type(obj['metadata'].namespace, 'string', `${file}: ${obj['kind']} ${obj['metadata'].name} names its namespace`)
})

t.test('kustomizations list existing files, and every manifest is listed', async (t) => {
  const kustomizations = docs.filter((d) => d.obj['kind'] === 'Kustomization')
  t.same(kustomizations.map((k) => k.file).sort(), ['examples/kustomization.yaml', 'kustomization.yaml'])
  const listed = new Set<string>()
  for (const k of kustomizations) {
    t.equal(k.obj['apiVersion'], 'kustomize.config.k8s.io/v1beta1')
    for (const r of k.obj['resources'] as string[]) {
      const path = join(dirname(k.file), r)
      t.ok(files.includes(join(DEPLOY, path)), `${k.file}: ${r} exists`)
      listed.add(path)
    }
  }
  for (const file of new Set(manifests.map((d) => d.file))) t.ok(listed.has(file), `${file} is in a kustomization`)
  const images = (one('DaemonSet', 'nsm-agent')['spec'].template.spec.containers as Obj[]).map((c) => String(c['image']).split(':')[0])
  const base = kustomizations.find((k) => k.file === 'kustomization.yaml')!.obj
  t.ok(images.every((i) => (base['images'] as Obj[]).some((e) => e['name'] === i)), 'the kustomization can retag the agent image')
})

t.test('CRDs: name is plural.group, v1 served and stored, structural schema', async (t) => {
  const crds = ofKind('CustomResourceDefinition')
  t.same(crds.map((c) => c.obj['metadata'].name).sort(), ['networkserviceendpoints.networkservicemesh.io', 'networkservices.networkservicemesh.io', 'nsmaddressclaims.nsm-cni.io', 'nsmnodes.nsm-cni.io'])
  for (const { file, obj } of crds) {
    const spec = obj['spec']
    t.equal(obj['apiVersion'], 'apiextensions.k8s.io/v1', file)
    t.equal(obj['metadata'].name, `${spec.names.plural}.${spec.group}`, `${file}: metadata.name = plural.group`)
    t.ok(['networkservicemesh.io', 'nsm-cni.io'].includes(spec.group), `${file}: NSM's group or ours`)
    t.equal(spec.scope, 'Namespaced')
    t.equal(spec.names.listKind, `${spec.names.kind}List`)
    t.same(spec.versions.map((v: Obj) => [v['name'], v['served'], v['storage']]), [['v1', true, true]], `${file}: one version, v1`)
    const schema = spec.versions[0].schema.openAPIV3Schema
    t.equal(schema.type, 'object')
    t.equal(schema.properties.spec.type, 'object')
  }
  const nse = one('CustomResourceDefinition', 'networkserviceendpoints.networkservicemesh.io')['spec'].versions[0].schema.openAPIV3Schema.properties.spec.properties
  t.same(Object.keys(nse).sort(), ['expiration_time', 'initial_registration_time', 'name', 'network_service_labels', 'network_service_names', 'path_ids', 'url'], 'NSE fields as registry.proto')
  const ns = one('CustomResourceDefinition', 'networkservices.networkservicemesh.io')['spec'].versions[0].schema.openAPIV3Schema.properties.spec.properties
  t.same(Object.keys(ns).sort(), ['matches', 'name', 'path_ids', 'payload'], 'NetworkService fields as registry.proto')
  t.same(Object.keys(ns.matches.items.properties).sort(), ['fallthrough', 'metadata', 'routes', 'source_selector'], 'Match fields as registry.proto')
})

t.test('RBAC: the binding binds the role to the service account the DaemonSet uses', async (t) => {
  const ds = one('DaemonSet', 'nsm-agent')
  const sa = ds['spec'].template.spec.serviceAccountName as string
  const account = one('ServiceAccount', sa)
  t.equal(account['metadata'].namespace, ds['metadata'].namespace, 'service account in the DaemonSet namespace')
  const binding = one('ClusterRoleBinding', 'nsm-agent')
  t.equal(binding['roleRef'].apiGroup, 'rbac.authorization.k8s.io')
  t.equal(binding['roleRef'].kind, 'ClusterRole')
  const role = one('ClusterRole', binding['roleRef'].name)
  t.same(binding['subjects'], [{ kind: 'ServiceAccount', name: sa, namespace: ds['metadata'].namespace }])
  const allows = (group: string, resource: string, verb: string): boolean =>
    (role['rules'] as Obj[]).some((r) => r['apiGroups'].includes(group) && r['resources'].includes(resource) && r['verbs'].includes(verb))
  for (const verb of ['get', 'list', 'watch']) t.ok(allows('', 'pods', verb), `pods ${verb}`)
  t.notOk(allows('', 'pods', 'delete'), 'pods are read-only')
  for (const crd of ofKind('CustomResourceDefinition')) {
    for (const verb of ['get', 'list', 'watch', 'create', 'update', 'delete']) t.ok(allows(crd.obj['spec'].group, crd.obj['spec'].names.plural, verb), `${crd.obj['spec'].names.plural} ${verb}`)
  }
  const nsDoc = one('Namespace', ds['metadata'].namespace)
  t.equal(nsDoc['metadata'].labels['pod-security.kubernetes.io/enforce'], 'privileged', 'the namespace admits a privileged pod')
})

t.test('DaemonSet: host access, mounts, installer and agent flags', async (t) => {
  const ds = one('DaemonSet', 'nsm-agent')
  const pod = ds['spec'].template.spec
  t.same(ds['spec'].selector.matchLabels, Object.fromEntries(Object.entries(ds['spec'].template.metadata.labels).filter(([k]) => k in ds['spec'].selector.matchLabels)), 'selector matches the template labels')
  t.ok(Object.keys(ds['spec'].selector.matchLabels).length > 0)
  t.equal(pod.hostNetwork, true)
  t.equal(pod.hostPID, true)
  const volumes = new Map<string, Obj>((pod.volumes as Obj[]).map((v) => [v['name'], v]))
  t.equal(volumes.size, (pod.volumes as Obj[]).length, 'volume names are unique')
  const containers = [...pod.initContainers, ...pod.containers] as Obj[]
  for (const c of containers) {
    t.equal(c['securityContext']?.privileged, true, `${c['name']} is privileged`)
    for (const m of c['volumeMounts'] as Obj[]) t.ok(volumes.has(m['name']), `${c['name']}: volumeMount ${m['name']} has a volume`)
  }
  const hostPaths = [...volumes.values()].map((v) => v['hostPath']?.path)
  t.same(hostPaths.sort(), ['/etc/cni/net.d', '/opt/cni/bin', '/run/nsm', '/var/lib/nsm', '/var/run/netns'])
  const mountOf = (c: Obj, hostPath: string): Obj | undefined =>
    (c['volumeMounts'] as Obj[]).find((m) => volumes.get(m['name'])?.['hostPath']?.path === hostPath)

  const [install] = pod.initContainers as Obj[]
  const env = Object.fromEntries((install!['env'] as Obj[]).map((e) => [e['name'], e['value']]))
  t.equal(mountOf(install!, '/opt/cni/bin')?.['mountPath'], env['CNI_BIN_DIR'], 'the installer writes where the host /opt/cni/bin is mounted')
  t.equal(mountOf(install!, '/etc/cni/net.d')?.['mountPath'], env['CNI_CONF_DIR'], 'the installer edits where the host net.d is mounted')
  t.match(install!['command'].join(' '), /install-cni\.sh$/)
  t.equal(env['NSM_CHAIN_PRIMARY'], 'false', 'chaining is opt-in')

  const agent = (pod.containers as Obj[]).find((c) => c['name'] === 'nsm-agent')!
  // V8 heap sizes only work on node's command line (agent/node-flags.ts): the DaemonSet and the image both pass them.
  t.same(agent['command'], ['node', ...AGENT_NODE_FLAGS, '/opt/nsm-cni/dist/nsm-agent'], 'node runs the agent with its heap options')
  const entrypoint = /^ENTRYPOINT (.*)$/m.exec(readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8'))?.[1]
  t.same(JSON.parse(entrypoint ?? 'null'), agent['command'], "the image's entrypoint is the DaemonSet's command")
  t.equal((agent['env'] as Obj[]).find((e) => e['name'] === 'NODE_NAME')?.['valueFrom'].fieldRef.fieldPath, 'spec.nodeName', 'NODE_NAME from the downward API')
  // The kubelet expands $(VAR) from the container env before the agent sees its arguments.
  const declared = new Set((agent['env'] as Obj[]).map((e) => e['name'] as string))
  const args = (agent['args'] as string[]).map((a) => a.replace(/\$\((\w+)\)/g, (_, v: string) => {
    t.ok(declared.has(v), `$(${v}) is declared in the container env`)
    return v === 'NODE_NAME' ? 'worker-1' : v === 'POD_IP' ? '10.0.0.5' : `value-of-${v}`
  }))
  const { overrides } = parseFlags(args)
  t.equal(overrides.kubernetes, true, 'the agent watches pods through the API')
  t.equal(overrides.nodeName, 'worker-1', 'the node name is the pod spec.nodeName')
  t.equal(mountOf(agent, '/run/nsm')?.['mountPath'], dirname(overrides.socket!), 'the agent socket is in the host /run/nsm')
  t.equal(mountOf(agent, '/var/lib/nsm')?.['mountPath'], overrides.stateDir, 'the state dir survives restarts on the host')
  t.equal(mountOf(agent, '/var/run/netns')?.['mountPropagation'], 'HostToContainer', 'netns created later are visible')
  t.same(agent['readinessProbe'].exec.command, ['test', '-S', overrides.socket])
  // Metrics on the node address, at the port the scrape annotations and the container port name.
  const annotations = ds['spec'].template.metadata.annotations as Record<string, string>
  t.equal(overrides.metricsAddress, `10.0.0.5:${annotations['prometheus.io/port']}`, 'metrics on the pod (node) IP at the annotated port')
  t.equal(annotations['prometheus.io/scrape'], 'true')
  t.equal(annotations['prometheus.io/path'], '/metrics')
  t.equal((agent['env'] as Obj[]).find((e) => e['name'] === 'POD_IP')?.['valueFrom'].fieldRef.fieldPath, 'status.podIP')
  t.same((agent['ports'] as Obj[]).find((p) => p['name'] === 'metrics'), { name: 'metrics', containerPort: Number(annotations['prometheus.io/port']), protocol: 'TCP' })
})

t.test('NADs: config JSON is an nsm netconf our CNI parser accepts; pods reference existing NADs', async (t) => {
  const nads = ofKind('NetworkAttachmentDefinition')
  t.ok(nads.length >= 1)
  for (const { file, obj } of nads) {
    t.equal(obj['apiVersion'], 'k8s.cni.cncf.io/v1', file)
    const config = JSON.parse(obj['spec'].config as string) as Record<string, unknown>
    t.equal(config['type'], 'nsm', `${file}: type nsm`)
    t.equal(config['name'], obj['metadata'].name, `${file}: netconf name is the NAD name`)
    t.type(config['networkService'], 'string', `${file}: attachment mode names its service`)
    t.doesNotThrow(() => parseNetConf(config), `${file}: a valid CNI netconf`)
    t.ok(ofKind('NetworkService').some((s) => s.obj['metadata'].name === config['networkService']), `${file}: the service exists as a CR`)
  }
  for (const { file, obj } of ofKind('Pod')) {
    const ann = obj['metadata'].annotations ?? {}
    const nets = String(ann['k8s.v1.cni.cncf.io/networks'] ?? '').split(',').filter((s) => s !== '')
    for (const n of nets) t.ok(nads.some((d) => d.obj['metadata'].name === n && d.obj['metadata'].namespace === obj['metadata'].namespace), `${file}: NAD ${n} exists in the pod namespace`)
    if (ann['endpoint.networkservicemesh.io'] !== undefined) {
      const offers = parseEndpointAnnotation(ann['endpoint.networkservicemesh.io'])
      t.ok(offers.length > 0, `${file}: endpoint annotation parses`)
    }
  }
})
