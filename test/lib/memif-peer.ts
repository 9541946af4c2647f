// A pod-side DPDK memif client for tests (or a server: `role`): dpdk-testpmd with one `net_memif` port (plus any extra vdevs)
// on a given socket, in a test netns (`ip netns exec`) or in this one, driven over its prompt (stdin and
// stdout are pipes to this process; the same reply framing as the forwarder's, agent/mechanisms/memif/testpmd-console.ts).
// Modes are testpmd forwarding modes: icmpecho answers ARP and ping for any address (a pod stand-in that
// pings work against), rxonly counts, txonly sends, io forwards between its ports (looped back on itself
// when it has only the memif port).
//
// A DPDK memif client (22.11) does not reconnect by itself: after the server
// restarts, `reopen()` (port stop / port start) connects it again. Every peer is SIGKILLed at teardown,
// also when the test fails.
import { spawn } from 'node:child_process'
import { rmSync } from 'node:fs'
import { TestpmdConsole } from '../../agent/mechanisms/memif/testpmd-console'
import { parsePortStats, parsePortSummary, type PortCounters } from '../../agent/mechanisms/memif/testpmd-replies'
import { RUN } from './netns'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export type PeerMode = 'icmpecho' | 'rxonly' | 'txonly' | 'io'

export interface MemifPeerOptions {
  socket: string
  /** client (default: a pod's application) or server (it binds `socket`; a stale file there is removed first). */
  role?: 'client' | 'server'
  /** A netns name (`ip netns exec`); this process's netns when absent. */
  netns?: string
  /** Forwarding mode, default icmpecho. */
  mode?: PeerMode
  /** Start forwarding once the link is up (default true; txonly then sends at full rate). */
  start?: boolean
  /** CPU of both lcores, default 0 (the forwarder's default is the last CPU). */
  cpu?: number
  /** More vdevs (ports 1..), e.g. `net_tap0,iface=pod0`. */
  extraVdevs?: string[]
  /** testpmd, default dpdk-testpmd. */
  testpmd?: string
  /** Wait for the link to come up before resolving (default true). */
  waitUp?: boolean
}

export interface MemifPeer {
  readonly pid: number
  /** One command at the prompt; its reply. */
  run(command: string, timeoutMs?: number): Promise<string>
  /** Is the memif port's (port 0) link up? */
  linkUp(): Promise<boolean>
  /** Polls until the link is up (throws after `ms`). */
  waitLinkUp(ms?: number): Promise<void>
  /** Counters of a port (default the memif port). */
  stats(port?: number): Promise<PortCounters>
  /** `port stop` + `port start`: what a DPDK client must do after its server restarted; forwarding restarted if it ran. */
  reopen(port?: number): Promise<void>
  /** `start` (or `start tx_first n`: n bursts of 32 frames first). */
  startForwarding(txFirst?: number): Promise<void>
  stopForwarding(): Promise<void>
  setMode(mode: PeerMode): Promise<void>
  /** Has the process exited (crashed or stopped)? */
  readonly exited: boolean
  /** How it exited ('killed by SIGSEGV', 'exit code 0'), '' while it runs. */
  readonly exitReason: string
  /** All output so far. */
  output(): string
  /** `quit`, SIGKILL if it does not exit within 2 s; resolves once it has exited. */
  stop(): Promise<void>
  /** Sends a signal (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>
}

let peers = 0

export async function startMemifPeer(t: Teardown, opts: MemifPeerOptions): Promise<MemifPeer> {
  peers += 1
  const mode = opts.mode ?? 'icmpecho'
  const prefix = `nsmpeer-${RUN}-${process.pid}-${peers}`
  const role = opts.role ?? 'client'
  if (role === 'server') rmSync(opts.socket, { force: true })
  const vdevs = [`net_memif0,role=${role},socket=${opts.socket},socket-abstract=no`, ...(opts.extraVdevs ?? [])]
  const args = [
    '-oL', '-eL', opts.testpmd ?? 'dpdk-testpmd',
    '--no-huge', '-m', '32', '--no-pci', '--no-shconf', '--file-prefix', prefix, '--lcores', `(0,1)@${opts.cpu ?? 0}`,
    ...vdevs.map((v) => `--vdev=${v}`),
    '--', '-i', `--forward-mode=${mode}`, '--total-num-mbufs=2048', '--no-mlockall', '--disable-link-check',
    ...(vdevs.length === 1 ? ['--port-topology=loop'] : []),
  ]
  const child = opts.netns === undefined ? spawn('stdbuf', args, { stdio: ['pipe', 'pipe', 'pipe'] }) : spawn('ip', ['netns', 'exec', opts.netns, 'stdbuf', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let all = ''
  let running = true
  let exitReason = ''
  const exited = new Promise<void>((res) => {
    child.once('exit', (code, signal) => {
      running = false
      exitReason = signal !== null ? `killed by ${signal}` : `exit code ${String(code)}`
      res()
    })
    child.once('error', () => {
      running = false
      res()
    })
  })
  const prompt = new TestpmdConsole({ write: (text) => child.stdin?.write(text) }, 10_000)
  const onData = (d: string): void => {
    all += d
    prompt.feed(d)
  }
  child.stdout?.setEncoding('utf8').on('data', onData)
  child.stderr?.setEncoding('utf8').on('data', onData)
  child.stdin?.on('error', () => undefined)
  void exited.then(() => prompt.fail(new Error(`memif peer ${child.pid} exited (${exitReason}); output: ${all.slice(-400)}`)))
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (running) child.kill(signal)
    await exited
  }
  t.teardown(async () => {
    await kill()
    // --no-shconf leaves an empty runtime directory behind; a killed server leaves its socket.
    rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true })
    if (role === 'server') rmSync(opts.socket, { force: true })
  })
  const pid = child.pid
  if (pid === undefined) throw new Error('cannot spawn the memif peer')

  const linkUp = async (): Promise<boolean> => parsePortSummary(await prompt.run('show port summary all')).find((p) => p.port === 0)?.up === true
  let forwarding = false
  const peer: MemifPeer = {
    pid,
    run: (command, timeoutMs) => prompt.run(command, timeoutMs),
    linkUp,
    async waitLinkUp(ms = 5000) {
      const deadline = Date.now() + ms
      while (!(await linkUp())) {
        if (Date.now() > deadline) throw new Error(`memif peer on ${opts.socket}: link not up within ${ms} ms`)
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    async stats(port = 0) {
      const s = parsePortStats(await prompt.run(`show port stats ${port}`))
      if (s === undefined) throw new Error(`memif peer: no stats for port ${port}`)
      return s
    },
    async reopen(port = 0) {
      const was = forwarding
      if (was) await peer.stopForwarding()
      await prompt.run(`port stop ${port}`)
      await prompt.run(`port start ${port}`)
      if (was) await peer.startForwarding()
    },
    async startForwarding(txFirst) {
      await prompt.run(txFirst === undefined ? 'start' : `start tx_first ${txFirst}`)
      forwarding = true
    },
    async stopForwarding() {
      // Waits for the forwarding lcore, which shares its CPU with the console's (--lcores (0,1)@cpu): slow under load.
      await prompt.run('stop', 30_000)
      forwarding = false
    },
    async setMode(m) {
      await prompt.run(`set fwd ${m}`)
    },
    get exited() {
      return !running
    },
    get exitReason() {
      return exitReason
    },
    output: () => all,
    async stop() {
      if (running) child.stdin?.write('quit\n')
      const timer = setTimeout(() => {
        if (running) child.kill('SIGKILL')
      }, 2000)
      await exited
      clearTimeout(timer)
    },
    kill,
  }
  // The first marker comes back once the prompt is up.
  await prompt.run('', 15_000)
  if (opts.waitUp ?? true) await peer.waitLinkUp()
  if (opts.start ?? true) await peer.startForwarding()
  return peer
}
