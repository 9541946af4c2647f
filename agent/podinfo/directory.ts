// Pod-info directory: the pod-info source for runs without Kubernetes (the demo, podman, tests).
//
// One JSON file per pod, `<dir>/<namespace>_<name>.json`, read on every `get` (so an edit is seen by the
// next CNI ADD; files are tiny). Two shapes are accepted:
//   flat:  {"labels": {"app": "web"}, "annotations": {"networkservicemesh.io": "kernel://svc/nsm-1"},
//           "uid": "...", "nodeName": "...", "namespace": "...", "name": "..."}   (all optional)
//   a Pod as `kubectl get pod -o json` prints it (kind "Pod"): metadata.{labels,annotations,uid} and
//   spec.nodeName are taken, the rest ignored.
// In the flat shape an unknown key is an error (a typo like "label" must not silently drop labels);
// namespace/name, when present, must match the file name. A missing file means "no such pod" (undefined);
// a file that does not validate rejects with INVALID_FILE naming the file and the field.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { badLabelValue, badQualifiedName, checkPodRef, PodInfoError, podKey, type PodInfo, type PodInfoSource } from './types'

export interface DirectoryPodInfoOptions {
  dir: string
  /** nodeName reported for pods whose file does not say (the agent's own node). */
  nodeName?: string
}

export class DirectoryPodInfoSource implements PodInfoSource {
  private readonly dir: string
  private readonly nodeName: string

  constructor(opts: DirectoryPodInfoOptions) {
    this.dir = opts.dir
    this.nodeName = opts.nodeName ?? ''
  }

  /** The file a pod's info is read from. */
  pathOf(namespace: string, name: string): string {
    return join(this.dir, `${podKey(namespace, name)}.json`)
  }

  async get(namespace: string, name: string): Promise<PodInfo | undefined> {
    checkPodRef(namespace, name)
    const path = this.pathOf(namespace, name)
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new PodInfoError('UNAVAILABLE', `pod-info file ${path}: ${(err as Error).message}`, { cause: err })
    }
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch (err) {
      throw new PodInfoError('INVALID_FILE', `pod-info file ${path}: not valid JSON: ${(err as Error).message}`, { cause: err })
    }
    return parsePodInfoDocument(doc, { file: path, namespace, name, nodeName: this.nodeName })
  }

  close(): void {
    // Nothing runs in the background: every get reads its file.
  }
}

const FLAT_KEYS = new Set(['namespace', 'name', 'uid', 'nodeName', 'labels', 'annotations'])

interface ParseContext {
  /** Named in every error. */
  file: string
  namespace: string
  name: string
  nodeName: string
}

/** Validates one pod-info document (either shape) for the pod the file name says. */
export function parsePodInfoDocument(doc: unknown, ctx: ParseContext): PodInfo {
  const fail = (field: string, why: string): never => {
    throw new PodInfoError('INVALID_FILE', `pod-info file ${ctx.file}: ${field}: ${why}`)
  }
  if (!isObject(doc)) return fail('(top level)', `must be a JSON object, got ${describe(doc)}`)
  const isPod = doc['kind'] !== undefined || doc['metadata'] !== undefined
  let fields: Record<string, unknown>
  let nodeName: unknown
  let prefix: string
  if (isPod) {
    if (doc['kind'] !== 'Pod') fail('kind', `must be "Pod" for a Kubernetes object, got ${describe(doc['kind'])}`)
    const metadata = doc['metadata']
    if (!isObject(metadata)) return fail('metadata', `must be an object, got ${describe(metadata)}`)
    const spec = doc['spec'] ?? {}
    if (!isObject(spec)) return fail('spec', `must be an object, got ${describe(spec)}`)
    fields = metadata
    nodeName = spec['nodeName']
    prefix = 'metadata.'
  } else {
    for (const k of Object.keys(doc)) {
      if (!FLAT_KEYS.has(k)) fail(k, `unknown field (expected one of ${[...FLAT_KEYS].join(', ')})`)
    }
    fields = doc
    nodeName = doc['nodeName']
    prefix = ''
  }
  const optString = (field: string, v: unknown, fallback: string): string => {
    if (v === undefined) return fallback
    if (typeof v !== 'string') return fail(field, `must be a string, got ${describe(v)}`)
    return v
  }
  const namespace = optString(`${prefix}namespace`, fields['namespace'], ctx.namespace)
  if (namespace !== ctx.namespace) fail(`${prefix}namespace`, `is ${JSON.stringify(namespace)} but the file is for namespace ${JSON.stringify(ctx.namespace)}`)
  const name = optString(`${prefix}name`, fields['name'], ctx.name)
  if (name !== ctx.name) fail(`${prefix}name`, `is ${JSON.stringify(name)} but the file is for pod ${JSON.stringify(ctx.name)}`)
  return {
    namespace,
    name,
    uid: optString(`${prefix}uid`, fields['uid'], ''),
    nodeName: optString(isPod ? 'spec.nodeName' : 'nodeName', nodeName, ctx.nodeName),
    labels: stringMap(`${prefix}labels`, fields['labels'], true, fail),
    annotations: stringMap(`${prefix}annotations`, fields['annotations'], false, fail),
  }
}

function stringMap(field: string, v: unknown, isLabels: boolean, fail: (field: string, why: string) => never): Record<string, string> {
  if (v === undefined || v === null) return {}
  if (!isObject(v)) return fail(field, `must be an object of strings, got ${describe(v)}`)
  const out: Record<string, string> = {}
  for (const [k, val] of Object.entries(v)) {
    const at = `${field}[${JSON.stringify(k)}]`
    const badKey = badQualifiedName(k)
    if (badKey !== undefined) fail(at, `invalid key: ${badKey}`)
    if (typeof val !== 'string') fail(at, `must be a string, got ${describe(val)}`)
    const s = val as string
    if (isLabels) {
      const badValue = badLabelValue(s)
      if (badValue !== undefined) fail(at, `invalid value ${JSON.stringify(s)}: ${badValue}`)
    }
    out[k] = s
  }
  return out
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`
}
