// deploy/: every built-in Kubernetes object validates against the Kubernetes OpenAPI schema (types,
// required fields, enums such as mountPropagation) through kubernetes-models' generated validators, which
// is what the API server would refuse at `kubectl apply`. Custom kinds (our CRs, Multus NADs) are checked
// by deploy-crd.test.ts and deploy-manifests.test.ts.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import * as apiextensionsV1 from 'kubernetes-models/apiextensions.k8s.io/v1'
import * as appsV1 from 'kubernetes-models/apps/v1'
import * as rbacV1 from 'kubernetes-models/rbac.authorization.k8s.io/v1'
import * as coreV1 from 'kubernetes-models/v1'

const DEPLOY = join(import.meta.dirname, '../../deploy')
type Model = new (data: unknown) => { validate(): void }
const MODELS: Record<string, Record<string, unknown>> = {
  v1: coreV1,
  'apps/v1': appsV1,
  'rbac.authorization.k8s.io/v1': rbacV1,
  'apiextensions.k8s.io/v1': apiextensionsV1,
}
const CUSTOM = new Set(['networkservicemesh.io/v1', 'k8s.cni.cncf.io/v1', 'kustomize.config.k8s.io/v1beta1'])

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? yamlFiles(p) : /\.ya?ml$/.test(n) ? [p] : []
  })
}

/** The schema problems of one object, or undefined when it validates. */
function problems(obj: { apiVersion: string; kind: string }): string | undefined {
  const Model = MODELS[obj.apiVersion]?.[obj.kind] as Model | undefined
  if (Model === undefined) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}: add its models to MODELS`)
  try {
    new Model(obj).validate()
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

t.test('every built-in object validates against the Kubernetes schema', async (t) => {
  let checked = 0
  for (const file of yamlFiles(DEPLOY)) {
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      const obj = doc.toJS() as { apiVersion: string; kind: string; metadata?: { name?: string } } | null
      if (obj === null || CUSTOM.has(obj.apiVersion)) continue
      t.equal(problems(obj), undefined, `${relative(DEPLOY, file)}: ${obj.kind} ${obj.metadata?.name ?? ''}`)
      checked += 1
    }
  }
  t.ok(checked >= 7, `${checked} objects checked (CRDs, namespace, RBAC, DaemonSet, pods)`)
})

t.test('the schema check refuses a broken DaemonSet', async (t) => {
  const ds = {
    apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'x' },
    spec: { selector: {}, template: { spec: { hostNetwork: 'yes', containers: [{ image: 'i', volumeMounts: [{ name: 'v', mountPath: '/m', mountPropagation: 'HostToContainers' }] }] } } },
  }
  const p = problems(ds) ?? ''
  t.match(p, /hostNetwork must be boolean/)
  t.match(p, /containers\/0 must have required property name/)
  t.match(p, /mountPropagation must be equal to one of the allowed values/)
})
