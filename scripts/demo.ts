// `npm run demo`: the seed scenario (ARCHITECTURE §1) on one machine, on an embedded default.
//
// Starts dist/nsm-agent with its file store on a temporary socket and a pod-info directory, applies
// conf/examples/secure-intranet-connectivity.yaml with dist/nsmctl, makes one network namespace per
// "pod" (vpn-gateway with an intranet address behind it, firewall with an nftables counter on forwarded
// traffic, client), and for each runs the conflist [loopback, nsm] exactly as a runtime does (exec, CNI
// env, netconf on stdin, prevResult passed on): the vpn-gateway and the firewall register as endpoints
// through their pod annotations, the firewall (app=firewall) and the client ask for the service through
// theirs. Then it prints the topology, pings the intranet address from the client, shows the firewall's
// counter rising, and tears everything down (CNI DEL, agent SIGTERM, namespaces), checking that nothing
// is left. Needs root. The agent serves the live topology page on loopback while the demo runs (its address
// is printed); `--keep` keeps everything up after the ping until Ctrl-C, then tears down as usual.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js'
import { runConflist } from '../test/lib/conflist'

// `--nodes N` (N ≥ 3): the same scenario across N nodes (scripts/demo-nodes.ts) instead of this one-node run.
const nodesFlag = process.argv.findIndex((a) => a === '--nodes' || a.startsWith('--nodes='))
if (nodesFlag >= 0) {
  const arg = process.argv[nodesFlag] ?? ''
  const { runNodesDemo } = await import('./demo-nodes')
  process.exit(await runNodesDemo(Number(arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : process.argv[nodesFlag + 1])))
}

const ROOT = resolve(import.meta.dirname, '..')
const SERVICE = 'secure-intranet-connectivity'
const INTRANET = '10.60.0.1'
const tag = process.pid.toString(36).slice(-4)
const dir = mkdtempSync(join(tmpdir(), 'nsm-demo-'))
const socket = join(dir, 'agent.sock')
const podInfo = join(dir, 'pods')
const t0 = performance.now()
const keep = process.argv.includes('--keep')

/** A free loopback port for the topology page (the agent logs at warn here: its ready line is not printed). */
async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res))
  const { port } = srv.address() as { port: number }
  await new Promise((res) => srv.close(res))
  return port
}

interface Pod {
  name: string
  netns: string
  labels: Record<string, string>
  annotations: Record<string, string>
  containerId: string
  result?: CniResult | undefined
}
interface CniResult {
  interfaces?: Array<{ name: string; sandbox?: string; mac?: string }>
  ips?: Array<{ address: string; interface?: number; gateway?: string }>
  routes?: Array<{ dst: string; gw?: string }>
}

const pods: Pod[] = [
  {
    name: 'vpn-gateway',
    labels: { app: 'vpn-gateway', role: 'endpoint' },
    annotations: { 'endpoint.networkservicemesh.io': `${SERVICE}?app=vpn-gateway&cidr=172.16.2.0/24&route=10.60.0.0/16` },
  },
  {
    name: 'firewall',
    labels: { app: 'firewall', role: 'endpoint' },
    annotations: {
      'endpoint.networkservicemesh.io': `${SERVICE}?app=firewall&cidr=172.16.1.0/24&route=10.60.0.0/16`,
      'ns.networkservicemesh.io': `${SERVICE}/nsm0?app=firewall`,
    },
  },
  { name: 'client', labels: { app: 'web' }, annotations: { 'ns.networkservicemesh.io': `${SERVICE}/nsm0` } },
].map((p) => ({ ...p, netns: `demo-${tag}-${p.name}`, containerId: `demo${tag}${p.name.replace('-', '')}` }))

const sh = (cmd: string, args: string[], input?: string): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...(input === undefined ? {} : { input }) })
const inNs = (pod: Pod, cmd: string, args: string[], input?: string): string => sh('ip', ['netns', 'exec', pod.netns, cmd, ...args], input)
const say = (s = ''): void => {
  process.stdout.write(`${s}\n`)
}

/** Runs a conflist's plugins in order (ADD) or reverse (DEL), as a runtime does. */
function cni(command: 'ADD' | 'DEL', pod: Pod): CniResult | undefined {
  return runConflist(command, { containerId: pod.containerId, netns: pod.netns, podNamespace: 'demo', podName: pod.name, socket }) as CniResult | undefined
}

function topology(): void {
  const fw = pods[1] as Pod
  const client = pods[2] as Pod
  const addr = (p: Pod, ifname: string): string => {
    const r = p.result
    const idx = r?.interfaces?.findIndex((i) => i.name === ifname) ?? -1
    return (r?.ips ?? []).filter((i) => i.interface === idx).map((i) => i.address).join(', ')
  }
  const peerOf = (p: Pod): string => {
    const out = JSON.parse(sh('ip', ['-n', p.netns, '-j', 'addr'])) as Array<{ ifname: string; addr_info: Array<{ local: string; prefixlen: number; family: string }> }>
    return out
      .filter((l) => l.ifname.startsWith('nsm-'))
      .map((l) => `${l.ifname} ${l.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`).join(' ')}`)
      .join(', ')
  }
  say('Topology (client → firewall → vpn-gateway):')
  say(`  client       [${client.netns}]  nsm0 ${addr(client, 'nsm0')}`)
  say(`       │  veth`)
  say(`  firewall     [${fw.netns}]  ${peerOf(fw)}   (endpoint side)`)
  say(`               nsm0 ${addr(fw, 'nsm0')}   (client side, app=firewall)`)
  say(`       │  veth`)
  say(`  vpn-gateway  [${(pods[0] as Pod).netns}]  ${peerOf(pods[0] as Pod)}   intranet ${INTRANET} behind it`)
  say()
  say('Routes in the client:')
  for (const line of sh('ip', ['-n', client.netns, 'route']).trim().split('\n')) say(`  ${line}`)
  say()
}

function counter(): number {
  const out = inNs(pods[1] as Pod, 'nft', ['list', 'chain', 'inet', 'demo', 'forwarded'])
  return Number(/packets (\d+)/.exec(out)?.[1] ?? 'NaN')
}

let agent: ReturnType<typeof spawn> | undefined
let failed = false
try {
  for (const bin of ['dist/nsm', 'dist/nsm-agent', 'dist/nsmctl']) if (!existsSync(join(ROOT, bin))) throw new Error(`${bin} is missing: run npm run build`)
  mkdirSync(podInfo)
  for (const p of pods) writeFileSync(join(podInfo, `demo_${p.name}.json`), JSON.stringify({ labels: p.labels, annotations: p.annotations }))
  // The registration policy: the seed's service declares no namespace, so the agent's config says which
  // pods may offer it (the firewall and the VPN gateway of namespace demo) and the routes they may offer.
  const config = join(dir, 'agent.yaml')
  writeFileSync(
    config,
    `endpointPolicy:\n  - services: [${SERVICE}]\n    namespaces: [demo]\n    podSelector: { role: endpoint }\n    routes: [10.60.0.0/16]\n`,
  )
  const web = `127.0.0.1:${await freePort()}`
  agent = spawn(process.execPath, [...AGENT_NODE_FLAGS, join(ROOT, 'dist/nsm-agent'), '--config', config, '--socket', socket, '--state-dir', join(dir, 'state'), '--pod-info-dir', podInfo, '--log-level', 'warn', '--web-address', web], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  await new Promise<void>((res, rej) => {
    const timer = setInterval(() => {
      if (existsSync(socket)) {
        clearInterval(timer)
        res()
      }
    }, 20)
    agent?.on('exit', (code) => {
      clearInterval(timer)
      rej(new Error(`nsm-agent exited (code ${code})`))
    })
  })
  say(`nsm-agent running on ${socket}`)
  say(`topology page: http://${web}/ (also: node dist/nsmctl --socket ${socket} topology)`)
  say(sh(process.execPath, [join(ROOT, 'dist/nsmctl'), '--socket', socket, 'apply', '-f', join(ROOT, 'conf/examples/secure-intranet-connectivity.yaml')]).trim())

  for (const p of pods) sh('ip', ['netns', 'add', p.netns])
  inNs(pods[1] as Pod, 'nft', ['-f', '-'], 'add table inet demo\nadd chain inet demo forwarded { type filter hook forward priority 0; }\nadd rule inet demo forwarded counter\n')
  for (const p of pods) p.result = cni('ADD', p)
  // The intranet behind the gateway (after its CNI ADD: the loopback plugin refuses other addresses on lo).
  inNs(pods[0] as Pod, 'ip', ['addr', 'add', `${INTRANET}/32`, 'dev', 'lo'])
  say(`CNI ADD done for ${pods.map((p) => p.name).join(', ')} (conflist: loopback, nsm)`)
  say()
  topology()

  const before = counter()
  const ping = inNs(pods[2] as Pod, 'ping', ['-c', '3', '-i', '0.2', '-W', '1', INTRANET])
  const after = counter()
  say(`client$ ping -c 3 ${INTRANET}`)
  for (const line of ping.trim().split('\n').filter((l) => /bytes from|packets transmitted/.test(l))) say(`  ${line}`)
  say(`firewall forward counter: ${before} → ${after} packets`)
  if (!/3 received/.test(ping) || !(after >= before + 6)) {
    failed = true
    say('FAILED: the ping did not go through the firewall')
  }
  if (keep) {
    say()
    say(`--keep: the mesh stays up; the topology page is at http://${web}/ — Ctrl-C tears everything down`)
    await new Promise<void>((res) => {
      process.once('SIGINT', () => res())
      process.once('SIGTERM', () => res())
    })
  }
} catch (err) {
  failed = true
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`)
} finally {
  // Teardown as a runtime does: CNI DEL per pod (reverse order), then the agent, then the namespaces.
  for (const p of [...pods].reverse()) {
    try {
      if (existsSync(`/var/run/netns/${p.netns}`)) cni('DEL', p)
    } catch (err) {
      failed = true
      process.stderr.write(`${(err as Error).message}\n`)
    }
  }
  if (agent !== undefined && agent.exitCode === null) {
    const exited = new Promise((r) => agent?.on('exit', r))
    agent.kill('SIGTERM')
    await exited
  }
  const stateLeft = existsSync(join(dir, 'state', 'connections.json'))
    ? (JSON.parse(readFileSync(join(dir, 'state', 'connections.json'), 'utf8')) as { connections: unknown[] }).connections.length
    : 0
  const linksLeft = pods.filter((p) => existsSync(`/var/run/netns/${p.netns}`)).flatMap((p) => (JSON.parse(sh('ip', ['-n', p.netns, '-j', 'link'])) as Array<{ ifname: string }>).filter((l) => l.ifname !== 'lo'))
  for (const p of pods) {
    try {
      sh('ip', ['netns', 'del', p.netns])
    } catch {
      // not created
    }
  }
  rmSync(dir, { recursive: true, force: true })
  say()
  say(`torn down: ${linksLeft.length} links and ${stateLeft} connections were left before removing the namespaces; socket removed: ${!existsSync(socket)}`)
  if (linksLeft.length > 0 || stateLeft > 0) failed = true
  say(`${failed ? 'demo FAILED' : 'demo OK'} in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  process.exitCode = failed ? 1 : 0
}
