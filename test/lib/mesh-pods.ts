// The mesh as a run drives it (scripts/demo-nodes.ts, bench/mesh.ts): test/lib/mesh-bed.ts's bed (nodes on
// a bridge underlay, etcd in the underlay namespace, a throwaway CA and node certificates, one dist/nsm-agent
// per node) with agents that can be SIGKILLed and started again, a pod-info directory per node (the stand-in
// for the Kubernetes API), and pods: namespaces ADDed and DELed through dist/nsm, the conflist [loopback,
// nsm] exec'd as a runtime does, to the agent of their node. Cleanups in a Teardowns (last in, first out,
// each on its own), run also on failure or a signal. Needs root and a built dist/.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import type { RunningAgent } from './agent'
import type { TestEtcd } from './etcd'
import { makeMeshBed, type MeshBed, type MeshNode as BedNode } from './mesh-bed'
import { RUN, sh } from './netns'
import { runConflist } from './conflist'
import { pollUntil, sleep } from './wait'

const ROOT = resolve(import.meta.dirname, '../..')
const NSMCTL = join(ROOT, 'dist/nsmctl')
/** Every namespace this run makes starts with it (test/lib/netns.ts): what a final check looks for. */
export const RUN_PREFIX = `t${RUN}`
/** The Kubernetes namespace of every pod (its pod-info file, K8S_POD_NAMESPACE). */
export const POD_NAMESPACE = 'demo'

// ------------------------------------------------------------------------------------ teardown

/** Cleanups run last-in first-out, each on its own (one failing does not keep the others from running). */
export class Teardowns {
  private readonly fns: Array<() => void | Promise<void>> = []
  private running: Promise<void> | undefined
  readonly errors: string[] = []
  teardown(fn: () => void | Promise<void>): void {
    this.fns.push(fn)
  }
  /** Runs every cleanup; a second caller (a signal during the normal teardown) waits for the same run. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (let fn = this.fns.pop(); fn !== undefined; fn = this.fns.pop()) {
        try {
          await fn()
        } catch (err) {
          this.errors.push(err instanceof Error ? err.message : String(err))
        }
      }
      this.running = undefined
    })()
    return this.running
  }
}

/** Polls `check` every 20 ms until it holds; the time it took, or throws naming `what` after `ms`. */
export const until = (what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<number> => pollUntil(what, check, ms, 20)

// ------------------------------------------------------------------------------------ the mesh

/** One node of the mesh: test/lib/mesh-bed.ts's node, and whether its agent runs (SIGKILL and restart). */
export interface MeshNode {
  /** n1, n2, ...: the node name, its certificate's DNS SAN. */
  name: string
  /** The bed's node: its netns (`node.name`), underlay address, agent dir and flags. */
  node: BedNode
  /** The agent's socket (the same across restarts: the dir is reused). */
  socket: string
  /** The pod-info directory the agent reads (the demo's stand-in for the Kubernetes API). */
  podInfo: string
  /** The running agent (undefined while it is down). */
  agent: RunningAgent | undefined
  /** Starts the agent again (same dir, state and flags), ready when this resolves. */
  start(): Promise<RunningAgent>
  /** Sends `signal` (SIGKILL: a node's agent dying) and waits for the exit. */
  stop(signal: NodeJS.Signals): Promise<void>
}

export interface Mesh {
  bed: MeshBed
  /** The bed's underlay namespace (bridge br0, etcd). */
  underlay: string
  etcd: TestEtcd
  nodes: MeshNode[]
}

export interface MeshOptions {
  count: number
  /** The agents' YAML config (written once, shared). */
  config?: string
  /** More agent flags (e.g. shorter --node-ttl / --endpoint-ttl). */
  agentArgs?: string[]
}

/**
 * test/lib/mesh-bed.ts's bed (nodes on a bridge, etcd in the underlay namespace, a CA and node
 * certificates, one agent per node, every node seeing every other), with a shared config file, agents
 * that die with this process (setpriv --pdeathsig) and are stopped with SIGTERM at teardown.
 */
export async function startMesh(td: Teardowns, opts: MeshOptions): Promise<Mesh> {
  for (const bin of ['dist/nsm', 'dist/nsm-agent', 'dist/nsmctl']) if (!existsSync(join(ROOT, bin))) throw new Error(`${bin} is missing: run npm run build`)
  const dir = mkdtempSync(join(tmpdir(), `nsm-mesh-${RUN}-`))
  td.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const config = join(dir, 'agent.yaml')
  writeFileSync(config, opts.config ?? '{}\n')
  const bed = await makeMeshBed(td, opts.count, { args: ['--config', config, ...(opts.agentArgs ?? [])], agent: { wrap: ['setpriv', '--pdeathsig', 'KILL', '--'] } })
  // Last in, first out: this SIGTERM (a clean stop) runs before startAgent's own SIGKILL teardown.
  const stopAtTeardown = (a: RunningAgent): void => td.teardown(() => Promise.race([a.stop('SIGTERM').then(() => undefined), sleep(10_000)]))
  const nodes = bed.nodes.map((node): MeshNode => {
    const podInfo = join(node.dir, 'pods')
    mkdirSync(podInfo, { recursive: true })
    stopAtTeardown(node.agent)
    const m: MeshNode = {
      name: node.nodeName,
      node,
      socket: node.agent.socket,
      podInfo,
      agent: node.agent,
      async start() {
        const timeout = sleep(20_000).then(() => Promise.reject(new Error(`${node.nodeName}'s agent not ready after 20 s`)))
        const a = await Promise.race([bed.restart(node), timeout])
        stopAtTeardown(a)
        m.agent = a
        return a
      },
      async stop(signal) {
        const a = m.agent
        m.agent = undefined
        if (a !== undefined) await a.stop(signal)
      },
    }
    return m
  })
  return { bed, underlay: bed.bed.underlay.name, etcd: bed.etcd, nodes }
}

/** The node's running agent (throws while it is down). */
export const agentOf = (n: MeshNode): RunningAgent => {
  if (n.agent === undefined) throw new Error(`${n.name}'s agent is not running`)
  return n.agent
}

/** dist/nsmctl against a node's agent: its stdout. */
export const nsmctl = (n: MeshNode, ...args: string[]): string => sh(process.execPath, [NSMCTL, '--socket', n.socket, ...args])

// ------------------------------------------------------------------------------------ pods

export interface Pod {
  name: string
  /** The node it runs on (its agent's socket and pod-info dir). */
  on: MeshNode
  netns: string
  containerId: string
  labels: Record<string, string>
  annotations: Record<string, string>
}

/** A pod: its namespace (run prefix, removed at teardown) and its pod-info file on its node. */
export function makePod(td: Teardowns, p: { name: string; short: string; on: MeshNode; labels: Record<string, string>; annotations: Record<string, string> }): Pod {
  const netns = `${RUN_PREFIX}p-${p.short}`
  sh('ip', ['netns', 'add', netns])
  td.teardown(() => {
    if (existsSync(`/var/run/netns/${netns}`)) sh('ip', ['netns', 'del', netns])
  })
  sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up'])
  writeFileSync(join(p.on.podInfo, `${POD_NAMESPACE}_${p.name}.json`), JSON.stringify({ labels: p.labels, annotations: p.annotations }))
  return { name: p.name, on: p.on, netns, containerId: `${RUN_PREFIX}${p.short.replace(/-/g, '')}`, labels: p.labels, annotations: p.annotations }
}

/** The conflist [loopback, nsm] for a pod on its node's agent (./conflist.ts). */
export function cni(command: 'ADD' | 'DEL', pod: Pod): void {
  runConflist(command, { containerId: pod.containerId, netns: pod.netns, podNamespace: POD_NAMESPACE, podName: pod.name, socket: pod.on.socket, where: `on ${pod.on.name}` })
}

/** CNI DEL of each pod whose namespace is still there, last made first; each failure on stderr. False when one failed. */
export function delPods(pods: readonly Pod[]): boolean {
  let ok = true
  for (const p of [...pods].reverse()) {
    try {
      if (existsSync(`/var/run/netns/${p.netns}`)) cni('DEL', p)
    } catch (err) {
      ok = false
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`)
    }
  }
  return ok
}
