// A test bed of several "nodes" on one machine (TESTBED.md, "Several nodes"): one underlay namespace holding
// a Linux bridge, and per node a network namespace with a veth `ul0` to that bridge, an IPv4 and an IPv6
// underlay address, loopback up. Processes run inside a node through `ip netns exec` (an agent per node:
// `startAgentInNode`); pods are ordinary test namespaces (./netns.ts makeNetns). Tests may use `ip`.
//
// Isolation: the bridge, the veths and every address live in namespaces the bed made, so nothing reaches
// the host or other runs. The addresses are made run-unique anyway (10.<2 bytes of the run's hash>.<node>
// and fdxx:xxxx:<bed>::<node>), so a capture or a leftover names its run; the namespaces carry the run
// prefix like every test namespace. Everything is removed in t.teardown (processes first: teardowns run
// last-in first-out), also when the test fails.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createHash } from 'node:crypto'
import { startAgent, type AgentOptions, type RunningAgent } from './agent'
import { ip, removeNetns, RUN, sh, uniqueName, type TestNetns } from './netns'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface TestNode extends TestNetns {
  /** 1-based position on the underlay. */
  index: number
  /** The node's underlay addresses (no prefix length): what an agent's --underlay-address names. */
  underlay: string
  underlay6: string
  /** Its interface to the bridge, in its netns. */
  ifname: string
}

export interface TestBed {
  /** The namespace holding the bridge `br0` (and the bridge ends of the nodes' veths). */
  underlay: TestNetns
  nodes: TestNode[]
  /** The IPv4 underlay prefix length (/24) and IPv6 (/64). */
  prefix: { v4: number; v6: number }
}

const hash = createHash('sha256').update(`nodes:${RUN}`).digest()
let beds = 0

/** `count` nodes (1..250) on a fresh bridge underlay, all removed at teardown. */
export function makeNodes(t: Teardown, count: number): TestBed {
  if (!Number.isInteger(count) || count < 1 || count > 250) throw new Error(`makeNodes: ${count} nodes (1..250)`)
  beds += 1
  const underlay = namespace(t, 'u')
  ip(underlay.name, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0')
  ip(underlay.name, 'link', 'set', 'br0', 'up')
  // Canonical text (no leading zeros), as the kernel and the agent print it.
  const v6net = `fd${hex(hash[0])}:${(((hash[1] ?? 0) << 8) | (hash[2] ?? 0)).toString(16)}:${beds.toString(16)}`
  const nodes: TestNode[] = []
  for (let index = 1; index <= count; index++) {
    const ns = namespace(t, 'n')
    const node: TestNode = { ...ns, index, underlay: `10.${hash[3] ?? 0}.${hash[4] ?? 0}.${index}`, underlay6: `${v6net}::${index.toString(16)}`, ifname: 'ul0' }
    const port = `n${index}`
    ip(underlay.name, 'link', 'add', port, 'type', 'veth', 'peer', 'name', node.ifname, 'netns', node.name)
    ip(underlay.name, 'link', 'set', port, 'master', 'br0', 'up')
    ip(node.name, 'addr', 'add', `${node.underlay}/24`, 'dev', node.ifname)
    ip(node.name, 'addr', 'add', `${node.underlay6}/64`, 'dev', node.ifname, 'nodad')
    ip(node.name, 'link', 'set', node.ifname, 'up')
    nodes.push(node)
  }
  return { underlay, nodes, prefix: { v4: 24, v6: 64 } }
}

function namespace(t: Teardown, kind: string): TestNetns {
  const name = uniqueName(kind)
  sh('ip', ['netns', 'add', name])
  t.teardown(() => removeNetns(name))
  ip(name, 'link', 'set', 'lo', 'up')
  return { name, path: `/var/run/netns/${name}` }
}

const hex = (b: number | undefined): string => (b ?? 0).toString(16).padStart(2, '0')

/** `ip netns exec` prefix for a node (or any test namespace). */
export const inNode = (node: TestNetns): string[] => ['ip', 'netns', 'exec', node.name]

/**
 * Spawns `cmd args` inside the node's netns (`ip netns exec` execs it: the child's pid is the command's).
 * Killed (SIGKILL) at teardown if still running; teardown waits for its exit.
 */
export function runInNode(t: Teardown, node: TestNetns, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', node.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
  const exited = new Promise<void>((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res()
    child.once('exit', () => res())
    child.once('error', () => res())
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGKILL')
      await exited
    }
  })
  return child
}

/** Runs `cmd args` inside the node's netns to completion; its stdout (throws with stderr on failure). */
export function execInNode(node: TestNetns, cmd: string, args: string[]): string {
  return sh('ip', ['netns', 'exec', node.name, cmd, ...args])
}

/** A real agent process (test/lib/agent.ts startAgent) inside the node's netns. */
export function startAgentInNode(t: Teardown, node: TestNetns, opts: AgentOptions = {}): Promise<RunningAgent> {
  return startAgent(t, { ...opts, wrap: [...inNode(node), ...(opts.wrap ?? [])] })
}
