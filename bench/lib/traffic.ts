// Shared by the benchmarks that measure traffic between namespaces (bench/vxlan.ts, bench/mesh.ts): a
// command run in a namespace without blocking, iperf3 from one namespace to another, and the reference
// they compare against, raw VXLAN between two node namespaces (one `ip link add ... type vxlan` per node,
// addressed in the node netns itself).
import { spawn } from 'node:child_process'
import { ip } from '../../test/lib/netns'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** A network namespace by name (test/lib/netns.ts TestNetns, a node of test/lib/nodes.ts). */
interface Netns {
  name: string
}

/** Runs a command in a namespace to completion without blocking (Ctrl-C stays handled); its stdout. */
export function runIn(ns: Netns, cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.once('error', reject)
    child.once('exit', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} in ${ns.name}: exit ${code ?? signal}: ${out.slice(0, 400)}${err}`))))
  })
}

/**
 * iperf3 TCP for `seconds` from `client` to `addr` (served in `server`), Gbit/s received. The server is
 * ready before the client starts.
 */
export async function iperf(server: Netns, client: Netns, addr: string, seconds: number): Promise<number> {
  // --forceflush: the "Server listening" line reaches the pipe at once (not at exit).
  const s = spawn('ip', ['netns', 'exec', server.name, 'iperf3', '-s', '-1', '-B', addr, '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((res) => s.once('exit', () => res()))
  try {
    await new Promise<void>((res, rej) => {
      let out = ''
      s.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('Server listening')) res()
      })
      s.once('exit', (code) => rej(new Error(`iperf3 server exited (${String(code)}) before listening: ${out}`)))
    })
    const out = await runIn(client, 'iperf3', ['-c', addr, '-t', String(seconds), '-J', '--connect-timeout', '3000'], (seconds + 20) * 1000)
    return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9
  } finally {
    if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL')
    await exited
  }
}

/**
 * Raw VXLAN between two node namespaces: a device `vxraw` in each (VNI `vni`, UDP 4789, the other node's
 * underlay address as its one remote), MTU `mtu`, addressed `subnet`.1/24 on `a` and `subnet`.2/24 on
 * `b`; removed at teardown. The address on `b` (where an iperf3 server from `a` listens).
 */
export function rawVxlan(t: Teardown, a: Netns & { underlay: string }, b: Netns & { underlay: string }, o: { vni: number; mtu: number; subnet: string }): string {
  for (const [node, peer, addr] of [[a, b, `${o.subnet}.1/24`], [b, a, `${o.subnet}.2/24`]] as const) {
    ip(node.name, 'link', 'add', 'vxraw', 'type', 'vxlan', 'id', String(o.vni), 'local', node.underlay, 'remote', peer.underlay, 'dstport', '4789', 'nolearning')
    t.teardown(() => void ip(node.name, 'link', 'del', 'vxraw'))
    ip(node.name, 'link', 'set', 'vxraw', 'mtu', String(o.mtu), 'up')
    ip(node.name, 'addr', 'add', addr, 'dev', 'vxraw')
  }
  return `${o.subnet}.2`
}
