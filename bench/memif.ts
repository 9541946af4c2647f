// memif through the agent's forwarder against memif without one, in one run, plus the forwarder's idle CPU
// and ADD/DEL latency of a memif beside a veth.
//
// Throughput, 64-byte and 1,500-byte frames, each measured for BENCH_SECONDS:
// - through the forwarder: a memif pod made by dist/nsm ADD (`memif://`), its client a DPDK testpmd in the pod's
//   netns sending at full rate (txonly) into the socket; the agent's forwarder (testpmd io mode, memif server +
//   af_packet) hands the frames to the veth whose other end is the endpoint's interface; counted as that
//   interface's received packets (the kernel's counters, so what the endpoint's netns actually got).
// - directly: the same client against a testpmd memif *server* (rxonly) on its own socket: what memif alone
//   does here, no forwarder and no kernel in between; counted by the server.
// Each sender and receiver polls on its own CPU (client on CPU 0, forwarder or server on CPU 1): this machine
// has two, and more pollers than CPUs collapses the numbers (../shared measurements).
//
// Idle CPU: the forwarder process's user+system time over BENCH_IDLE_SECONDS with its pairs attached and no
// client connected (forwarding stopped), then with a client connected that sends nothing (forwarding on).
//
//   npx tsx bench/memif.ts      (root; BENCH_SECONDS default 5, BENCH_IDLE_SECONDS default 10, BENCH_N default 20)
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startMesh, WEB, resultOf } from '../test/integration/nsm-fixture'
import { startMemifPeer, type MemifPeer } from '../test/lib/memif-peer'
import { findForwarderProcesses } from '../agent/mechanisms/memif/forwarder-identity'
import { CLK_TCK, latencyTable, machine, ms, stats, writeSection } from './lib/report'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 10)
const N = Number(process.env.BENCH_N ?? 20)
const SIZES = [64, 1500] as const

const cleanups: Array<() => void | Promise<void>> = []
const teardown = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
async function cleanup(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c()
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanup().then(() => process.exit(130)))

const tag = `bm${process.pid % 10000}`
const run = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
const sleep = (s: number): Promise<void> => new Promise((r) => setTimeout(r, s * 1000))

/** user+system CPU of a process, ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK
}

function rxPackets(netns: string, ifname: string): number {
  const out = JSON.parse(run('ip', ['-n', netns, '-j', '-s', 'link', 'show', 'dev', ifname])) as Array<{ stats64: { rx: { packets: number } } }>
  return out[0]?.stats64.rx.packets ?? 0
}

/** Sends `size`-byte frames from `sender` for SECONDS; `count` reads the receiving side's counter. */
async function measure(sender: MemifPeer, size: number, count: () => Promise<number>): Promise<{ mpps: number; gbps: number; sent: number; received: number }> {
  await sender.stopForwarding()
  await sender.setMode('txonly')
  await sender.run(`set txpkts ${size}`)
  const tx0 = (await sender.stats()).txPackets
  const rx0 = await count()
  await sender.startForwarding()
  const t0 = performance.now()
  await sleep(SECONDS)
  const rx1 = await count()
  const dt = (performance.now() - t0) / 1000
  await sender.stopForwarding()
  const sent = (await sender.stats()).txPackets - tx0
  const received = rx1 - rx0
  const mpps = received / dt / 1e6
  return { mpps, gbps: (mpps * size * 8) / 1000, sent, received }
}

try {
  const work = mkdtempSync(join(tmpdir(), 'nsm-bench-memif-'))
  cleanups.push(() => rmSync(work, { recursive: true, force: true }))
  const memifRoot = join(work, 'memif')
  for (const ns of [`${tag}ep`, `${tag}p`, `${tag}d`]) {
    run('ip', ['netns', 'add', ns])
    cleanups.push(() => void spawnSync('ip', ['netns', 'del', ns]))
  }
  const mesh = await startMesh(teardown, { network: 'bench', agentArgs: ['--memif-root', memifRoot, '--memif-cpu', '1'] })
  const runDir = join(mesh.agent.stateDir, 'memif-fwd')
  // Runs before the agent's teardown (LIFO): forwarders outlive an agent on purpose.
  cleanups.unshift(() => {
    for (const [pid, name] of findForwarderProcesses(runDir)) {
      spawnSync('kill', ['-9', String(pid)])
      rmSync(`/var/run/dpdk/${name}`, { recursive: true, force: true })
    }
  })
  const epNs = `${tag}ep`
  await mesh.endpoint({ name: 'bench-ep', netns: `/var/run/netns/${epNs}`, pools: ['172.22.0.0/16'] })
  const pod = `/var/run/netns/${tag}p`

  // The pod for throughput and idle CPU; its ADD starts the forwarder process.
  const confs = { veth: mesh.conf({ networkService: WEB }), memif: mesh.conf({ networkService: `memif://${WEB}` }) }
  const first0 = performance.now()
  const res = resultOf(await mesh.cni({ command: 'ADD', containerId: 'tput', netns: pod, ifname: 'net1', stdin: confs.memif }))
  const firstAddMs = performance.now() - first0
  cleanups.push(async () => {
    await mesh.cni({ command: 'DEL', containerId: 'tput', netns: pod, ifname: 'net1', stdin: confs.memif })
  })

  const socket = String(res.interfaces?.[0]?.socketPath ?? '')
  const epIf = (JSON.parse(run('ip', ['-n', epNs, '-j', 'link', 'show'])) as Array<{ ifname: string }>).map((l) => l.ifname).find((n) => n.startsWith('nsm-'))
  if (epIf === undefined) throw new Error("no endpoint interface")
  const [fwdPid] = findForwarderProcesses(runDir).keys()
  if (fwdPid === undefined) throw new Error('no forwarder process')

  // ADD/DEL latency: memif beside veth, interleaved, with the throughput pod's forwarder running (a node with memif pods).
  const lat = { veth: { add: [] as number[], del: [] as number[] }, memif: { add: [] as number[], del: [] as number[] } }
  for (let i = -3; i < N; i++) {
    for (const kind of ['veth', 'memif'] as const) {
      const id = `${kind}-${i + 3}`
      for (const command of ['ADD', 'DEL'] as const) {
        const t0 = performance.now()
        const out = await mesh.cni({ command, containerId: id, netns: pod, ifname: 'net1', stdin: confs[kind] })
        const dt = performance.now() - t0
        if (out.exitCode !== 0) throw new Error(`${kind} ${command}: ${out.stdout} ${out.stderr}`)
        if (i >= 0) lat[kind][command === 'ADD' ? 'add' : 'del'].push(dt)
      }
    }
  }

  const idle0 = cpuMs(fwdPid)
  await sleep(IDLE_SECONDS)
  const idleNoClient = (cpuMs(fwdPid) - idle0) / (IDLE_SECONDS * 10)
  const client = await startMemifPeer(teardown, { socket, netns: `${tag}p`, mode: 'rxonly', cpu: 0, start: false })
  await sleep(1) // the forwarder's poll sees the link and starts forwarding
  const conn0 = cpuMs(fwdPid)
  await sleep(IDLE_SECONDS)
  const idleConnected = (cpuMs(fwdPid) - conn0) / (IDLE_SECONDS * 10)
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${fwdPid}/status`, 'utf8'))?.[1] ?? 0) / 1024

  const through: Record<number, Awaited<ReturnType<typeof measure>>> = {}
  const direct: Record<number, Awaited<ReturnType<typeof measure>>> = {}
  // Direct memif: a server on a socket of its own, in another netns, on the forwarder's CPU (the forwarder
  // is idle meanwhile: its client sends nothing).
  const dsock = join(work, 'direct.sock')
  const server = await startMemifPeer(teardown, { socket: dsock, role: 'server', netns: `${tag}d`, mode: 'rxonly', cpu: 1, waitUp: false, start: false })
  const dclient = await startMemifPeer(teardown, { socket: dsock, netns: `${tag}d`, mode: 'txonly', cpu: 0, start: false })
  await server.waitLinkUp(10_000)
  await server.startForwarding()
  for (const size of SIZES) {
    // Interleaved per size: through the forwarder, then directly.
    await dclient.stopForwarding()
    through[size] = await measure(client, size, async () => rxPackets(epNs, epIf))
    direct[size] = await measure(dclient, size, async () => (await server.stats()).rxPackets)
  }
  await client.stop()
  await dclient.stop()
  await server.stop()

  const tput = (label: string, size: number, m: { mpps: number; gbps: number; sent: number; received: number }): string =>
    `| ${label} | ${size} | ${m.mpps.toFixed(3)} | ${m.gbps.toFixed(2)} | ${(m.sent / 1e6).toFixed(2)} M | ${(m.received / 1e6).toFixed(2)} M |`
  const md = [
    '## memif: throughput through the forwarder against memif directly, the forwarder idle, ADD / DEL',
    '',
    `\`bench/memif.ts\`, ${machine()}, Debian's DPDK 22.11 testpmd on both sides, no hugepages. One run.`,
    '',
    `Throughput, ${SECONDS} s per row, interleaved per frame size. *Through the forwarder*: a pod made by \`dist/nsm\` ADD ` +
      '(`memif://`), its client a testpmd in the pod netns sending at full rate (txonly, CPU 0) into its socket; the ' +
      "agent's forwarder (testpmd io mode: memif server + af_packet, CPU 1) hands the frames to the veth whose other " +
      "end is the endpoint's interface, where they are counted (the kernel's rx counter). *Directly*: the same kind " +
      'of client against a testpmd memif server (rxonly, CPU 1) on a socket of its own, counted by the server. ' +
      'Gbit/s = frames × size × 8 (Ethernet frame without FCS, preamble or gap).',
    '',
    '| path | frame bytes | Mpps | Gbit/s | sent | received |',
    '|---|---|---|---|---|---|',
    ...SIZES.flatMap((size) => [tput('through the forwarder (memif → af_packet → veth)', size, through[size] as never), tput('memif → memif directly', size, direct[size] as never)]),
    '',
    "What bounds the forwarder's path is its kernel side: af_packet hands every frame to the veth with a system " +
      'call and a copy, where memif alone is shared memory on both ends. The endpoint here is a kernel network ' +
      "namespace, so that crossing is the path's own cost; a sender held back by it sees its memif ring full " +
      '(sent = received: nothing is dropped on the way).',
    '',
    `The forwarder's CPU (user + system of its process over ${IDLE_SECONDS} s, % of one CPU): **${idleNoClient.toFixed(1)} %** ` +
      `with its pair attached and no client connected (forwarding stopped), ${idleConnected.toFixed(1)} % with a client ` +
      'connected that sends nothing (forwarding on: DPDK polls). Its resident memory: ' +
      `${rss.toFixed(0)} MiB.`,
    '',
    `ADD and DEL through \`dist/nsm\`, interleaved (veth ADD, veth DEL, memif ADD, memif DEL), ${N} rounds after 3 warm-up rounds, ` +
      'the same pod netns and endpoint, while another memif pod is attached (its forwarder process running, as on a node ' +
      'with memif pods): a memif ADD makes the pod directory and a veth to the endpoint, attaches the pair to the running ' +
      'forwarder and waits until the socket is served; DEL detaches it (every pair of that process pauses for the port ' +
      `list change) and removes the rest. The first memif pod of a node also starts the forwarder process: its ADD took ${ms(firstAddMs)} ms here. ` +
      'Milliseconds, wall time of the exec.',
    '',
    latencyTable([
      ['veth ADD (KERNEL)', lat.veth.add],
      ['memif ADD (MEMIF)', lat.memif.add],
      ['veth DEL (KERNEL)', lat.veth.del],
      ['memif DEL (MEMIF)', lat.memif.del],
    ]),
  ].join('\n')
  writeSection('memif', md)
  process.stdout.write(`${md}\n`)
} finally {
  await cleanup()
}
