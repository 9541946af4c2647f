// dist/nsmctl against a real agent: apply -f (the seed's v1alpha1 YAML and the v1 form), register /
// unregister endpoints in real namespaces, get services|endpoints|connections as aligned tables and
// JSON, explain for the seed's two clients, and the exit codes of bad input (2), refusals (1) and an
// unreachable agent (3).
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { NetworkServiceDefinition, NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { makeNetns } from '../lib/netns.js'
import { startAgent, tempDir } from '../lib/agent.js'

const ROOT = resolve(import.meta.dirname, '../..')
const SEED = join(ROOT, 'conf/examples/secure-intranet-connectivity.yaml')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function nsmctl(socket: string, ...args: string[]): Run {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/nsmctl'), ...args], { encoding: 'utf8', env: { ...process.env, NSM_AGENT_SOCKET: socket } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** Every row's cells start where the header's columns start (cells hold no spaces except the last). */
function assertAligned(t: Test, text: string): void {
  const lines = text.trimEnd().split('\n')
  const header = lines[0] ?? ''
  const starts = [...header.matchAll(/\S+/g)].map((m) => m.index)
  for (const line of lines.slice(1)) {
    for (const s of starts.slice(1)) t.equal(line[s - 1], ' ', `column boundary at ${s} in "${line}"`)
  }
}

t.test('apply, register, get, explain, unregister', async (t) => {
  const agent = await startAgent(t)
  const fw = makeNetns(t, 'cf')
  const vpn = makeNetns(t, 'cv')
  const client = makeNetns(t, 'cc')
  const dir = tempDir(t)

  const applied = nsmctl(agent.socket, 'apply', '-f', SEED)
  t.equal(applied.code, 0, applied.stderr)
  t.match(applied.stdout, 'networkservice/secure-intranet-connectivity applied')

  const v1 = join(dir, 'v1.yaml')
  writeFileSync(
    v1,
    `apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: { name: plain-ip }\nspec:\n  payload: IP\n  matches:\n    - source_selector: {}\n      routes:\n        - destination_selector: { app: vpn-gateway }\n`,
  )
  t.equal(nsmctl(agent.socket, 'apply', '-f', v1).code, 0, 'v1 form applies')

  const services = nsmctl(agent.socket, 'get', 'services')
  t.equal(services.code, 0)
  t.match(services.stdout, /^NAME +PAYLOAD +MATCHES\n/)
  t.match(services.stdout, /secure-intranet-connectivity +IP +app=firewall->app=vpn-gateway/)
  assertAligned(t, services.stdout)
  const servicesJson = JSON.parse(nsmctl(agent.socket, 'get', 'services', '-o', 'json').stdout) as Array<{ name: string }>
  t.same(servicesJson.map((s) => s.name).sort(), ['plain-ip', 'secure-intranet-connectivity'])

  let r = nsmctl(agent.socket, 'register', 'fw-1', '--service', 'secure-intranet-connectivity?app=firewall', '--netns', fw.path, '--cidr', '172.30.1.0/24', '--ttl', '10m')
  t.equal(r.code, 0, r.stderr)
  r = nsmctl(agent.socket, 'register', 'vpn-1', '--service', 'secure-intranet-connectivity', '--labels', 'app=vpn-gateway', '--netns', vpn.path, '--cidr', '172.30.2.0/24', '--route', '10.0.0.0/8')
  t.equal(r.code, 0, r.stderr)

  const endpoints = nsmctl(agent.socket, 'get', 'endpoints')
  t.match(endpoints.stdout, /^NAME +SERVICES +LABELS +NETNS +POOLS +ROUTES +NODE +EXPIRES\n/)
  t.match(endpoints.stdout, new RegExp(`fw-1 +secure-intranet-connectivity +secure-intranet-connectivity:app=firewall +${fw.path} +172\\.30\\.1\\.0/24 +- +- +(10m|9m)`))
  t.match(endpoints.stdout, /vpn-1 .* 10\.0\.0\.0\/8 /)
  assertAligned(t, endpoints.stdout)
  const epJson = JSON.parse(nsmctl(agent.socket, 'get', 'endpoints', '-o', 'json').stdout) as Array<{ endpoint: { name: string }; extension: { cidrPools: string[] } }>
  t.same(epJson.map((e) => e.endpoint.name), ['fw-1', 'vpn-1'])
  t.same(epJson[0]?.extension.cidrPools, ['172.30.1.0/24'])

  // The seed: a plain client goes to the firewall, the firewall itself to the vpn gateway.
  const plain = nsmctl(agent.socket, 'explain', 'secure-intranet-connectivity')
  t.equal(plain.code, 0, plain.stderr)
  t.match(plain.stdout, /match\[0\] source app=firewall: not-applied/)
  t.match(plain.stdout, /match\[1\] source -: chosen/)
  t.match(plain.stdout, /chosen: +fw-1/)
  const firewall = nsmctl(agent.socket, 'explain', 'secure-intranet-connectivity', '--labels', 'app=firewall')
  t.match(firewall.stdout, /match\[0\] source app=firewall: chosen/)
  t.match(firewall.stdout, /chosen: +vpn-1/)
  const fwJson = JSON.parse(nsmctl(agent.socket, 'explain', 'secure-intranet-connectivity', '-l', 'app=firewall', '-o', 'json').stdout) as { chosen: string; qualified: string[] }
  t.equal(fwJson.chosen, 'vpn-1')

  // A connection shows in `get connections`.
  const conn = await agent.client.unary(
    NetworkServiceDefinition,
    NetworkServiceDefinition.methods.request,
    NetworkServiceRequest.fromPartial({
      connection: { id: 'ctl-conn-1', networkService: 'secure-intranet-connectivity' },
      mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-1', inodeURL: `file://${client.path}` } }],
    }),
  )
  t.teardown(() => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn).then(() => undefined, () => undefined))
  const conns = nsmctl(agent.socket, 'get', 'connections')
  t.match(conns.stdout, /^ID +SERVICE +ENDPOINT +STATE +MECHANISM +SRC +DST\n/)
  t.match(conns.stdout, /ctl-conn-1 +secure-intranet-connectivity +fw-1 +UP +KERNEL veth nsm-1 /)
  assertAligned(t, conns.stdout)
  const connsJson = JSON.parse(nsmctl(agent.socket, 'get', 'connections', '-o', 'json').stdout) as Array<{ id: string }>
  t.same(connsJson.map((c) => c.id), ['ctl-conn-1'])

  r = nsmctl(agent.socket, 'unregister', 'vpn-1')
  t.equal(r.code, 0, r.stderr)
  t.notMatch(nsmctl(agent.socket, 'get', 'endpoints').stdout, /vpn-1/)
  const noVpn = nsmctl(agent.socket, 'explain', 'secure-intranet-connectivity', '--labels', 'app=firewall')
  t.equal(noVpn.code, 1, 'explain exits 1 when nothing would be chosen')
  t.match(noVpn.stdout, /chosen: +-/)

  t.equal(nsmctl(agent.socket, 'delete', 'service', 'plain-ip').code, 0)
  t.equal(nsmctl(agent.socket, 'delete', 'service', 'plain-ip').code, 1, 'deleting twice is refused')
})

t.test('errors and exit codes', async (t) => {
  const agent = await startAgent(t)
  const dir = tempDir(t)
  const bad = join(dir, 'bad.yaml')
  writeFileSync(bad, 'apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: { name: x }\nspec:\n  matches:\n    - source_selector: { app: 3 }\n')
  const cases: Array<{ args: string[]; code: number; err: RegExp }> = [
    { args: ['frobnicate'], code: 2, err: /frobnicate: unknown command/ },
    { args: ['get', 'widgets'], code: 2, err: /unknown kind "widgets"/ },
    { args: ['get', 'services', '-o', 'yaml'], code: 2, err: /--output: must be table or json/ },
    { args: ['apply'], code: 2, err: /apply: needs -f FILE/ },
    { args: ['apply', '-f', join(dir, 'missing.yaml')], code: 2, err: /cannot read \(ENOENT\)/ },
    { args: ['apply', '-f', bad], code: 2, err: /spec\.matches\[0\]\.source_selector\.app/ },
    { args: ['register', 'x', '--service', 's', '--cidr', '10.0.0.0/40'], code: 2, err: /--cidr 10\.0\.0\.0\/40: not a CIDR/ },
    { args: ['register', 'x'], code: 2, err: /needs at least one --service/ },
    { args: ['register', 'x', '--service', 's', '--ttl', 'forever'], code: 2, err: /--ttl forever/ },
    { args: ['register', 'x', '--service', 's', '--bogus', '1'], code: 2, err: /--bogus: unknown flag/ },
    { args: ['register', 'x', '--service', 's', '--netns', '/etc/passwd'], code: 1, err: /INVALID_ARGUMENT: .*endpoint\.url: netns \/etc\/passwd is outside the allowlist/ },
    { args: ['unregister', 'nobody'], code: 1, err: /NOT_FOUND: .*nobody is not registered/ },
    { args: ['explain', 'no-such-service'], code: 1, err: /NOT_FOUND: .*no-such-service is not registered/ },
  ]
  for (const c of cases) {
    const r = nsmctl(agent.socket, ...c.args)
    t.equal(r.code, c.code, `${c.args.join(' ')}: exit ${c.code}`)
    t.match(r.stderr, c.err, `${c.args.join(' ')}: message`)
  }
  t.same(JSON.parse(nsmctl(agent.socket, 'get', 'endpoints', '-o', 'json').stdout), [], 'nothing registered by the failures')
  const down = nsmctl(join(dir, 'no-agent.sock'), 'status')
  t.equal(down.code, 3, 'unreachable agent: exit 3')
  t.match(down.stderr, /agent unreachable at .*no-agent\.sock: ENOENT/)
})

t.test('get connections -w streams updates and deletes until interrupted', async (t) => {
  const agent = await startAgent(t)
  const ep = makeNetns(t, 'wp')
  const client = makeNetns(t, 'wq')
  t.equal(nsmctl(agent.socket, 'apply', '-f', SEED).code, 0)
  t.equal(nsmctl(agent.socket, 'register', 'fw-w', '--service', 'secure-intranet-connectivity?app=firewall', '--netns', ep.path, '--cidr', '172.30.9.0/24').code, 0)

  const child = spawn(process.execPath, [join(ROOT, 'dist/nsmctl'), 'get', 'connections', '-w', '-o', 'json'], { env: { ...process.env, NSM_AGENT_SOCKET: agent.socket }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)))
  const lines: Array<{ event: string; connection: { id: string; state?: string } }> = []
  const waiters: Array<() => void> = []
  let partial = ''
  child.stdout.on('data', (d: Buffer) => {
    partial += d.toString()
    let nl: number
    while ((nl = partial.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(partial.slice(0, nl)) as (typeof lines)[number])
      partial = partial.slice(nl + 1)
      for (const w of waiters.splice(0)) w()
    }
  })
  const until = async (pred: (l: (typeof lines)[number]) => boolean): Promise<void> => {
    while (!lines.some(pred)) await new Promise<void>((res) => waiters.push(res))
  }
  // Race-free without knowing when the watch opened: the connection shows either in the initial state or
  // as an UPDATE, and it is closed only after that.
  const request = NetworkServiceRequest.fromPartial({
    connection: { id: 'watch-1', networkService: 'secure-intranet-connectivity' },
    mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-1', inodeURL: `file://${client.path}` } }],
  })
  const conn = await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, request)
  await until((l) => l.connection.id === 'watch-1' && (l.event === 'UPDATE' || l.event === 'INITIAL'))
  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn)
  await until((l) => l.connection.id === 'watch-1' && l.event === 'DELETE')
  t.ok(lines.some((l) => l.event === 'DELETE'), 'delete streamed')
  child.kill('SIGINT')
  t.equal(await exited, 0, 'exit 0 when interrupted')
})
