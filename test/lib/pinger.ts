// A ping running in a namespace, every reply kept with its time and IP TTL: what a heal looks like from
// the client (the first reply through the new endpoint, the silent gap before it). Two endpoints holding
// the same address tell themselves apart by the TTL they answer with (`net.ipv4.ip_default_ttl`).
import type { ChildProcess } from 'node:child_process'
import { runInNode } from './nodes'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface PingReply {
  /** When the reply came (epoch ms, ping's -D timestamp). */
  at: number
  /** Its IP TTL. */
  ttl: number
}

export interface Pinger {
  /** The replies so far, in order (filled while the ping runs). */
  replies: PingReply[]
  child: ChildProcess
  /** Kills the ping (SIGKILL) and waits for its exit; also done at teardown. */
  stop(): Promise<void>
}

/** `ping -D` every `intervalMs` from the namespace named `netns` to `addr` (`ip netns exec`); killed at teardown. */
export function startPinger(t: Teardown, netns: string, addr: string, intervalMs: number): Pinger {
  const child = runInNode(t, { name: netns, path: `/var/run/netns/${netns}` }, 'ping', ['-n', '-D', '-i', String(intervalMs / 1000), '-W', '1', addr], { stdio: ['ignore', 'pipe', 'ignore'] })
  const exited = new Promise<void>((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res()
    child.once('exit', () => res())
    child.once('error', () => res())
  })
  const replies: PingReply[] = []
  let partial = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    partial += d
    for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
      const r = /^\[(\d+\.\d+)\] .* ttl=(\d+)/.exec(partial.slice(0, nl))
      if (r !== null) replies.push({ at: Number(r[1]) * 1000, ttl: Number(r[2]) })
      partial = partial.slice(nl + 1)
    }
  })
  return {
    replies,
    child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
  }
}
