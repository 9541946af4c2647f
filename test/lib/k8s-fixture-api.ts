// The Kubernetes API rules the fixture (k8s-fixture.ts) follows, apart from its server: the resources it
// serves, field and label selectors, the watch event a stored change gives a watcher (selector transitions as
// the real API), the watch BOOKMARK, JSON merge patch (RFC 7386), and the Status and JSON answers.
import type { IncomingMessage, ServerResponse } from 'node:http'

export type Resource = 'pods' | 'networkservices' | 'networkserviceendpoints' | 'nsmaddressclaims' | 'nsmnodes'
export const RESOURCES: Record<Resource, { prefix: string; apiVersion: string; kind: string; fields: string[] }> = {
  pods: { prefix: 'api/v1', apiVersion: 'v1', kind: 'Pod', fields: ['spec.nodeName', 'status.phase'] },
  networkservices: { prefix: 'apis/networkservicemesh.io/v1', apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', fields: [] },
  networkserviceendpoints: { prefix: 'apis/networkservicemesh.io/v1', apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkServiceEndpoint', fields: [] },
  nsmaddressclaims: { prefix: 'apis/nsm-cni.io/v1', apiVersion: 'nsm-cni.io/v1', kind: 'NsmAddressClaim', fields: [] },
  nsmnodes: { prefix: 'apis/nsm-cni.io/v1', apiVersion: 'nsm-cni.io/v1', kind: 'NsmNode', fields: [] },
}
export const PREFIXES = new Set(Object.values(RESOURCES).map((r) => r.prefix))

/** A Kubernetes object as JSON; `metadata` is always present once stored. */
export type KObject = { metadata: { namespace: string; name: string; [k: string]: unknown }; [k: string]: unknown }
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED'
export interface Change { rv: number; resource: Resource; type: EventType; old: KObject | undefined; obj: KObject }
export interface Filter { match(o: KObject): boolean }

export function key(resource: Resource, namespace: string, name: string): string {
  return `${resource}/${namespace}/${name}`
}

/** The event a watcher with this filter sees for a change, or none (selector transitions as the real API). */
export function eventFor(c: Change, namespace: string | undefined, filter: Filter): { type: EventType; object: KObject } | undefined {
  const inScope = (o: KObject | undefined): boolean =>
    o !== undefined && (namespace === undefined || o.metadata.namespace === namespace) && filter.match(o)
  const was = c.type !== 'ADDED' && inScope(c.old)
  const is = c.type === 'DELETED' ? was : inScope(c.obj)
  if (c.type === 'DELETED') return was ? { type: 'DELETED', object: c.obj } : undefined
  if (was && is) return { type: 'MODIFIED', object: c.obj }
  if (is) return { type: 'ADDED', object: c.obj }
  if (was) return { type: 'DELETED', object: c.obj }
  return undefined
}

export function writeBookmark(res: ServerResponse, resource: Resource, rv: number): void {
  const object = { apiVersion: RESOURCES[resource].apiVersion, kind: RESOURCES[resource].kind, metadata: { resourceVersion: String(rv) } }
  res.write(`${JSON.stringify({ type: 'BOOKMARK', object })}\n`)
}

function fieldValue(o: KObject, path: string): string {
  let cur: unknown = o
  for (const part of path.split('.')) cur = typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>)[part] : undefined
  return typeof cur === 'string' ? cur : ''
}

/** fieldSelector and equality-based labelSelector; throws the real API's message on an unsupported field. */
export function makeFilter(resource: Resource, q: URLSearchParams): Filter {
  const tests: Array<(o: KObject) => boolean> = []
  for (const term of (q.get('fieldSelector') ?? '').split(',').filter((s) => s !== '')) {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term)
    if (m === null) throw new Error(`invalid field selector: ${term}`)
    const [, field = '', op, value = ''] = m
    if (!['metadata.name', 'metadata.namespace', ...RESOURCES[resource].fields].includes(field)) {
      throw new Error(`field label not supported: ${field}`)
    }
    tests.push((o) => (fieldValue(o, field) === value) === (op !== '!='))
  }
  for (const term of (q.get('labelSelector') ?? '').split(',').filter((s) => s !== '')) {
    const m = /^(!?)([A-Za-z0-9._/-]+)(?:(==|=|!=)([A-Za-z0-9._-]*))?$/.exec(term)
    if (m === null) throw new Error(`unable to parse requirement: ${term} (the fixture supports equality-based selectors only)`)
    const [, not, k = '', op, v] = m
    const labels = (o: KObject): Record<string, unknown> => (o.metadata['labels'] ?? {}) as Record<string, unknown>
    if (op === undefined) tests.push((o) => (k in labels(o)) === (not !== '!'))
    else tests.push((o) => (labels(o)[k] === v) === (op !== '!='))
  }
  return { match: (o) => tests.every((f) => f(o)) }
}

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {}
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k]
    else out[k] = mergePatch(out[k], v)
  }
  return out
}

export function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }
}

export function status(res: ServerResponse, code: number, reason: string, message: string): void {
  if (res.headersSent) return void res.end()
  json(res, code, statusBody(code, reason, message))
}

export function notFound(res: ServerResponse, resource: Resource, name: string): void {
  status(res, 404, 'NotFound', `${resource} "${name}" not found`)
}

export function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}
