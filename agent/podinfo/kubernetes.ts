// Kubernetes pod-info source: a cache of the pods of one node, kept by list + watch through the API
// server with @kubernetes/client-node (agent only: never imported by the CNI plugins).
//
// Contract (beyond PodInfoSource in types.ts):
// - Lists `/api/v1/pods?fieldSelector=spec.nodeName=<node>`, then watches from the list's resourceVersion
//   (asking the server to end the watch after `watchTimeoutSeconds`, then resuming from the last version
//   seen). A 410 Gone (an ERROR event or an HTTP 410: the version was compacted) re-lists, replacing the
//   cache. A watch still open `watchStallMs` after it started (the server should have ended it: a dead
//   connection that never closed) is abandoned and reopened. Any other failure (connection refused, 5xx, 401) retries with exponential backoff and jitter
//   (`backoff`), reset by the next successful list or event.
// - `get` answers from the cache; a pod not in it yet is waited for up to `getWaitMs`, because the CNI ADD
//   of a pod can arrive before the watch event that tells us about it. After the wait: undefined when the
//   cache has been synced at least once, else UNAVAILABLE with the last connection error.
// - Pods on other nodes are ignored even if the server sends them.
// - `close` aborts the watch, cancels retries, settles waiting `get`s with undefined.
import { CoreV1Api, KubeConfig, Watch, type V1Pod } from '@kubernetes/client-node'
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { checkPodRef, PodInfoError, podKey, type PodInfo, type PodInfoSource } from './types'

export interface KubernetesPodInfoOptions {
  /** The node whose pods are watched (the agent's node: spec.nodeName). */
  nodeName: string
  /** A client configuration; when absent, loadKubeConfig(kubeconfig) builds one. */
  kubeConfig?: KubeConfig
  /** Path of a kubeconfig file (else in-cluster service account, else $KUBECONFIG / ~/.kube/config). */
  kubeconfig?: string
  /** How long `get` waits for a pod not seen yet. Default 3000 ms. */
  getWaitMs?: number
  /** Retry delays: first, and cap. Default 250 ms doubling up to 30 s. */
  backoff?: { initialMs: number; maxMs: number }
  /** The server ends each watch after this long; we resume from the last version. Default 300 s. */
  watchTimeoutSeconds?: number
  /** A watch open this long is presumed dead and reopened. Default watchTimeoutSeconds + 30 s. */
  watchStallMs?: number
  /** Where connection problems are reported. Default: one JSON line on stderr. */
  log?: (msg: string, fields: Record<string, unknown>) => void
}

/**
 * Builds a client configuration: an explicit kubeconfig file; else the in-cluster service account when
 * KUBERNETES_SERVICE_HOST is set (files under `inClusterRoot`, '' in a real pod); else $KUBECONFIG or
 * ~/.kube/config. Throws CONFIG when none applies (rather than the library's silent localhost:8080).
 */
export function loadKubeConfig(opts: { kubeconfig?: string; inClusterRoot?: string } = {}): KubeConfig {
  const kc = new KubeConfig()
  try {
    if (opts.kubeconfig !== undefined) {
      kc.loadFromFile(opts.kubeconfig)
    } else if ((process.env['KUBERNETES_SERVICE_HOST'] ?? '') !== '') {
      kc.loadFromCluster(opts.inClusterRoot ?? '')
    } else if ((process.env['KUBECONFIG'] ?? '') !== '' || existsSync(join(homedir(), '.kube', 'config'))) {
      kc.loadFromDefault()
    } else {
      throw new PodInfoError('CONFIG', 'no Kubernetes configuration: give a kubeconfig path, set KUBECONFIG, or run in a pod with a service account')
    }
  } catch (err) {
    if (err instanceof PodInfoError) throw err
    throw new PodInfoError('CONFIG', `Kubernetes configuration ${opts.kubeconfig ?? '(default)'}: ${(err as Error).message}`, { cause: err })
  }
  if (kc.getCurrentCluster() === null) {
    throw new PodInfoError('CONFIG', `Kubernetes configuration ${opts.kubeconfig ?? '(default)'}: no current cluster (check current-context)`)
  }
  return kc
}

interface Waiter {
  resolve(info: PodInfo | undefined): void
  reject(err: Error): void
  timer: NodeJS.Timeout
}

type WatchEnd = { kind: 'gone' } | { kind: 'ended'; events: number } | { kind: 'error'; err: unknown } | { kind: 'closed' }

export class KubernetesPodInfoSource implements PodInfoSource {
  private readonly nodeName: string
  private readonly kc: KubeConfig
  private readonly api: CoreV1Api
  private readonly getWaitMs: number
  private readonly backoff: { initialMs: number; maxMs: number }
  private readonly watchTimeoutSeconds: number
  private readonly watchStallMs: number
  private readonly log: (msg: string, fields: Record<string, unknown>) => void
  private readonly pods = new Map<string, PodInfo>()
  private readonly waiters = new Map<string, Set<Waiter>>()
  private closed = false
  private synced = false
  private lastError: unknown
  /** Ends the current watch: aborts its request, or settles it as closed while the request is pending. */
  private stopWatch: (() => void) | undefined
  private wakeSleep: (() => void) | undefined
  private readonly syncWaiters: Array<() => void> = []
  private readonly done: Promise<void>

  constructor(opts: KubernetesPodInfoOptions) {
    if (opts.nodeName === '') throw new PodInfoError('CONFIG', 'nodeName: required to watch the pods of this node')
    this.nodeName = opts.nodeName
    this.kc = opts.kubeConfig ?? loadKubeConfig(opts.kubeconfig === undefined ? {} : { kubeconfig: opts.kubeconfig })
    this.api = this.kc.makeApiClient(CoreV1Api)
    this.getWaitMs = opts.getWaitMs ?? 3000
    this.backoff = opts.backoff ?? { initialMs: 250, maxMs: 30_000 }
    this.watchTimeoutSeconds = opts.watchTimeoutSeconds ?? 300
    this.watchStallMs = opts.watchStallMs ?? this.watchTimeoutSeconds * 1000 + 30_000
    this.log = opts.log ?? ((msg, fields) => process.stderr.write(`${JSON.stringify({ level: 'warn', component: 'podinfo', msg, ...fields })}\n`))
    // Supervised: run() catches everything itself; this catch is the last resort that still logs.
    this.done = this.run().catch((err: unknown) => this.log('pod watch stopped', { error: String(err) }))
  }

  async get(namespace: string, name: string): Promise<PodInfo | undefined> {
    checkPodRef(namespace, name)
    const key = podKey(namespace, name)
    const hit = this.pods.get(key)
    if (hit !== undefined || this.closed) return hit
    return new Promise<PodInfo | undefined>((resolve, reject) => {
      const set = this.waiters.get(key) ?? new Set<Waiter>()
      this.waiters.set(key, set)
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          set.delete(waiter)
          if (set.size === 0) this.waiters.delete(key)
          if (this.synced || this.closed) resolve(this.pods.get(key))
          else reject(new PodInfoError('UNAVAILABLE', `pod ${namespace}/${name}: the Kubernetes API has not been reached yet (${describeError(this.lastError)})`, { cause: this.lastError }))
        }, this.getWaitMs),
      }
      set.add(waiter)
    })
  }

  /** The cached pod now, without waiting (for callers that must not block, e.g. a CNI DEL). */
  cached(namespace: string, name: string): PodInfo | undefined {
    return this.pods.get(podKey(namespace, name))
  }

  /** Resolves once the first list has filled the cache (or at close). */
  whenSynced(): Promise<void> {
    if (this.synced || this.closed) return Promise.resolve()
    return new Promise((resolve) => this.syncWaiters.push(resolve))
  }

  /** Number of pods in the cache (this node's). */
  get size(): number {
    return this.pods.size
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.stopWatch?.()
    this.wakeSleep?.()
    for (const [key, set] of this.waiters) {
      for (const w of set) {
        clearTimeout(w.timer)
        w.resolve(this.pods.get(key))
      }
    }
    this.waiters.clear()
    for (const r of this.syncWaiters.splice(0)) r()
  }

  /** Resolves when the background loop has stopped after close() (for orderly shutdown and tests). */
  stopped(): Promise<void> {
    return this.done
  }

  private async run(): Promise<void> {
    let rv: string | undefined
    let attempt = 0
    while (!this.closed) {
      try {
        if (rv === undefined) {
          rv = await this.relist()
          attempt = 0
          if (this.closed) return
        }
        const end = await this.watchOnce(rv, (next) => {
          rv = next
          attempt = 0
        })
        if (end.kind === 'closed') return
        if (end.kind === 'gone') {
          // The version we hold was compacted away: only a fresh list is consistent again.
          rv = undefined
          continue
        }
        if (end.kind === 'ended' && end.events > 0) continue
        if (end.kind === 'error') throw end.err
      } catch (err) {
        if (this.closed) return
        if (statusOf(err) === 410) {
          rv = undefined
          continue
        }
        this.lastError = err
        this.log('Kubernetes API: retrying', { node: this.nodeName, attempt, error: describeError(err) })
      }
      await this.sleep(this.delay(attempt))
      attempt += 1
    }
  }

  private delay(attempt: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(attempt, 20))
    return base / 2 + Math.random() * (base / 2)
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeSleep = undefined
        resolve()
      }, ms)
      this.wakeSleep = () => {
        clearTimeout(timer)
        this.wakeSleep = undefined
        resolve()
      }
    })
  }

  private async relist(): Promise<string> {
    const list = await this.api.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${this.nodeName}` })
    if (this.closed) return ''
    const seen = new Set<string>()
    for (const pod of list.items) {
      const info = this.upsert(pod)
      if (info !== undefined) seen.add(podKey(info.namespace, info.name))
    }
    for (const key of [...this.pods.keys()]) if (!seen.has(key)) this.pods.delete(key)
    if (!this.synced) {
      this.synced = true
      for (const r of this.syncWaiters.splice(0)) r()
      // Waiters for pods that the list did not have keep waiting for a watch event until their timeout.
    }
    const rv = list.metadata?.resourceVersion
    if (rv === undefined || rv === '') throw new Error('pod list without metadata.resourceVersion')
    return rv
  }

  private watchOnce(rv: string, onVersion: (rv: string) => void): Promise<WatchEnd> {
    return new Promise<WatchEnd>((resolve) => {
      let gone = false
      let abandoned = false
      let eventError: Error | undefined
      let events = 0
      let controller: AbortController | undefined
      // Settles this watch at once (close or stall): the request may still await its headers, and the
      // library hands out its AbortController only after them, so it is aborted when it arrives.
      const abandon = (end: WatchEnd): void => {
        abandoned = true
        clearTimeout(stall)
        controller?.abort()
        if (this.stopWatch === stop) this.stopWatch = undefined
        resolve(end)
      }
      const stop = (): void => abandon({ kind: 'closed' })
      this.stopWatch = stop
      const stall = setTimeout(() => abandon({ kind: 'error', err: new Error(`watch stalled: still open after ${this.watchStallMs} ms`) }), this.watchStallMs)
      const done = (err: unknown): void => {
        clearTimeout(stall)
        if (this.stopWatch === stop) this.stopWatch = undefined
        if (this.closed) resolve({ kind: 'closed' })
        else if (gone || statusOf(err) === 410) resolve({ kind: 'gone' })
        else if (eventError !== undefined) resolve({ kind: 'error', err: eventError })
        else if (err !== null && err !== undefined) resolve({ kind: 'error', err })
        else resolve({ kind: 'ended', events })
      }
      // The library types event objects as `any`; onEvent checks the shape before using it.
      const onEvent = (phase: string, obj: unknown): void => {
        if (abandoned) return
        if (phase === 'ERROR') {
          if (statusOf(obj) === 410) gone = true
          else eventError = new Error(`watch ERROR event: ${JSON.stringify(obj)}`)
          controller?.abort()
          return
        }
        const next = resourceVersionOf(obj)
        if (phase === 'ADDED' || phase === 'MODIFIED') this.upsert(obj as V1Pod)
        else if (phase === 'DELETED') this.remove(obj as V1Pod)
        else if (phase !== 'BOOKMARK') return
        events += 1
        if (next !== undefined) onVersion(next)
      }
      new Watch(this.kc)
        .watch(
          '/api/v1/pods',
          {
            fieldSelector: `spec.nodeName=${this.nodeName}`,
            resourceVersion: rv,
            allowWatchBookmarks: true,
            timeoutSeconds: this.watchTimeoutSeconds,
          },
          onEvent,
          done,
        )
        .then(
          (c) => {
            controller = c
            if (this.closed || gone || abandoned) c.abort()
          },
          (err: unknown) => done(err),
        )
    })
  }

  private upsert(pod: V1Pod): PodInfo | undefined {
    const info = toPodInfo(pod)
    if (info === undefined || info.nodeName !== this.nodeName) return undefined
    const key = podKey(info.namespace, info.name)
    this.pods.set(key, info)
    const set = this.waiters.get(key)
    if (set !== undefined) {
      this.waiters.delete(key)
      for (const w of set) {
        clearTimeout(w.timer)
        w.resolve(info)
      }
    }
    return info
  }

  private remove(pod: V1Pod): void {
    const ns = pod.metadata?.namespace
    const name = pod.metadata?.name
    if (typeof ns === 'string' && typeof name === 'string') this.pods.delete(podKey(ns, name))
  }
}

/** The fields we keep of a Pod, or undefined for an object that is not a well-formed Pod. */
export function toPodInfo(pod: V1Pod): PodInfo | undefined {
  const m = pod?.metadata
  if (typeof m?.namespace !== 'string' || typeof m.name !== 'string') return undefined
  return {
    namespace: m.namespace,
    name: m.name,
    uid: typeof m.uid === 'string' ? m.uid : '',
    nodeName: typeof pod.spec?.nodeName === 'string' ? pod.spec.nodeName : '',
    labels: strings(m.labels),
    annotations: strings(m.annotations),
  }
}

function strings(v: unknown): Record<string, string> {
  const out: Record<string, string> = {}
  if (typeof v !== 'object' || v === null) return out
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val
  return out
}

function resourceVersionOf(obj: unknown): string | undefined {
  const m = (obj as { metadata?: { resourceVersion?: unknown } } | null)?.metadata
  return typeof m?.resourceVersion === 'string' && m.resourceVersion !== '' ? m.resourceVersion : undefined
}

/** The HTTP status of a failed call or a Status object: ApiException.code, Watch's statusCode, Status.code. */
export function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const e = err as { statusCode?: unknown; code?: unknown }
  if (typeof e.statusCode === 'number') return e.statusCode
  if (typeof e.code === 'number') return e.code
  return undefined
}

function describeError(err: unknown): string {
  if (err === undefined) return 'no response yet'
  const code = statusOf(err)
  const msg = err instanceof Error ? err.message : String(err)
  return code === undefined ? msg : `HTTP ${code}: ${msg.split('\n')[0] ?? ''}`
}
