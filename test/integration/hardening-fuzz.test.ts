// A bounded, deterministic fuzz of the two CNI binaries, exec'd as a runtime execs them (env + stdin):
// dist/nsm against a real agent (startMesh) with an endpoint in a test netns, and dist/nsm-ipam with a
// temp dataDir. A few hundred mutations of valid calls (every CNI_* variable missing, empty, overlong,
// with "/", "%", spaces or NUL-free junk; unknown commands; CNI_ARGS repeats, no "=", unknown keys, huge
// values; stdin truncated, of the wrong type in every field, deeply nested, 2 MiB of padding; CNI_NETNS a
// regular file, a directory, a FIFO) are generated from a seeded PRNG (NSM_FUZZ_SEED, printed). Valid
// ADD/CHECK/DEL sequences are mixed in and must succeed.
//
//   NSM_FUZZ_SEED=<n>          another seed (decimal or 0x hex)
//   NSM_FUZZ_ONLY=<id>[,<id>]  run only these steps (ids as printed with a failure or by NSM_FUZZ_LIST)
//   NSM_FUZZ_LIST=1            print every step's id and mutation, run none
//   NSM_FUZZ_VERBOSE=1         print every exec: time, exit code, stdout
//   NSM_FUZZ_STEPS=<n>         how many steps to run (default 56 of the ~360 generated: the 54 that always run and 2 more; NSM_FUZZ_STEPS=1000 runs all)
//
// Every answer: the process exits within PER_CALL_MS; exit 0 with a CNI result (for ADD: addresses and
// routes that parse, ip.interface indexes in range), or nothing for commands that print nothing, or
// non-zero with exactly {cniVersion, code, msg} and a known code; no stack trace; an input that is invalid
// for certain is refused; the agent answers every call (a dropped connection is 11, "try again", to an
// input that fails every time).
// An ADD a mutation did not make invalid is DEL'd again right away. After all calls: the host's links,
// addresses and routes are unchanged, the agent's connections and endpoints are what they were, the
// endpoint and pod netns hold only lo, nsm-ipam holds no reservation, and everything the test made is
// removed (also at teardown when the test fails).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { stageNsmIpam } from '../conformance/exec'
import { fuzzSeed, judge, preview, Prng, rawExec, type RawOutcome } from '../lib/fuzz'
import { linkNames, makeNetns, removeNetns, RUN, sh, uniqueName } from '../lib/netns'
import { startMesh, WEB } from './nsm-fixture'

const SEED = fuzzSeed(0x5eed1)
const ONLY = new Set((process.env.NSM_FUZZ_ONLY ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''))
/** Per exec: a call that has not exited by then is killed and counted as a failure (a hang). */
const PER_CALL_MS = 10_000
/**
 * How many steps a run makes (NSM_FUZZ_STEPS overrides it): the calls at things that may block, the
 * mutations that found bugs before and the valid sequences always, then the others in the seed's order up
 * to this count, so the file stays within ~60 s on a 2-core machine (`npm test` runs it alone, after the
 * others: scripts/test.sh). Every step chosen runs; none is skipped.
 */
const STEPS = Number(process.env.NSM_FUZZ_STEPS ?? 56)
t.comment(`fuzz seed ${SEED} (0x${SEED.toString(16)}): NSM_FUZZ_SEED=${SEED} reproduces this run`)

// ---------------------------------------------------------------------------------------------------
// Host snapshot (root netns). Links, addresses and routes of concurrent test runs on this machine
// (podman bridges and veths, other runs' t<hex> links) are left out so that they cannot fail this test;
// everything this fuzz could leak on the host (CNI_IFNAME values, nsm-<hash>) is compared.

const FOREIGN = new RegExp(`^(?!t${RUN})(t[0-9a-f]{4}|veth|cni-podman|podman|nsmpod)`)

function hostSnapshot(): { links: string[]; addrs: string[]; routes: string[] } {
  const j = (args: string[]): Array<Record<string, unknown>> => JSON.parse(sh('ip', ['-j', ...args])) as Array<Record<string, unknown>>
  const links = j(['link', 'show'])
    .filter((l) => !FOREIGN.test(String(l.ifname)))
    .map((l) => JSON.stringify({ ifname: l.ifname, ifindex: l.ifindex, mtu: l.mtu, address: l.address, flags: l.flags, master: l.master }))
  const addrs = j(['addr', 'show'])
    .filter((l) => !FOREIGN.test(String(l.ifname)))
    .flatMap((l) => ((l.addr_info as Array<Record<string, unknown>>) ?? []).map((a) => `${String(l.ifname)} ${String(a.local)}/${String(a.prefixlen)}`))
  const routes = [...j(['route', 'show', 'table', 'all']), ...j(['-6', 'route', 'show', 'table', 'all'])]
    .filter((r) => !FOREIGN.test(String(r.dev)))
    .map((r) => JSON.stringify(r))
  return { links: links.sort(), addrs: addrs.sort(), routes: routes.sort() }
}

// ---------------------------------------------------------------------------------------------------
// The world: agent, endpoint, pod netns, nsm-ipam's dirs, and the odd files CNI_NETNS may point at.

const mesh = await startMesh(t)
const ep = makeNetns(t, 'fe')
await mesh.endpoint({ name: 'fuzz-ep', netns: ep.path, pools: ['172.30.77.0/24'] })
const pod = makeNetns(t, 'fp')
mesh.pod('fuzz', 'fz', { labels: { app: 'fuzz' } })
const ipamBinDir = await stageNsmIpam(t)
const ipamBinary = join(ipamBinDir, 'nsm-ipam')

const work = mkdtempSync(join(tmpdir(), 'nsm-fuzz-'))
const ipamRoot = join(work, 'ipam')
const dataDir = join(ipamRoot, 'data')
mkdirSync(dataDir, { recursive: true })
const plainFile = join(work, 'not-a-netns')
writeFileSync(plainFile, 'x\n')
const plainDir = join(work, 'a-dir')
mkdirSync(plainDir)
const fifo = join(work, 'a-fifo')
sh('mkfifo', [fifo])
// The same three under /var/run/netns, which the agent's netns policy allows by pattern.
mkdirSync('/var/run/netns', { recursive: true })
const runFile = `/var/run/netns/${uniqueName('ff')}`
const runDir = `/var/run/netns/${uniqueName('fd')}`
const runFifo = `/var/run/netns/${uniqueName('fo')}`
writeFileSync(runFile, '')
mkdirSync(runDir)
sh('mkfifo', [runFifo])
// Symlinks a path check could miss: into /proc, to /dev/zero, and one that leads nowhere.
const toProc = join(work, 'to-proc')
sh('ln', ['-s', '/proc', toProc])
const toZero = join(work, 'to-zero')
sh('ln', ['-s', '/dev/zero', toZero])
const dangling = join(work, 'dangling')
sh('ln', ['-s', join(work, 'nowhere'), dangling])
const made = [work, runFile, runDir, runFifo]
/** Paths a read, an open(2) or a recursive mkdir may block or spin on: calls naming them run first. */
const BLOCKING = [fifo, runFifo, '/dev/zero', '/proc/fuzz-nsm', '/proc/sys/net', '/proc/self/', toProc, toZero, dangling]
const removeMade = (): void => {
  for (const p of made) rmSync(p, { recursive: true, force: true })
}
t.teardown(removeMade)

const hostBefore = hostSnapshot()
const connsBefore = await mesh.connectionIds()
const endpointsBefore = await mesh.endpointNames()

// ---------------------------------------------------------------------------------------------------
// Cases.

type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]
type Target = 'nsm' | 'ipam'
type Env = Record<string, string>

interface FuzzCase {
  id: string
  target: Target
  label: string
  env: Env
  stdin: Buffer
  /** The input is certainly invalid: exit 0 is a finding. */
  mustFail: boolean
}

interface ValidSeq {
  id: string
  target: Target
  valid: true
  n: number
}

type Step = FuzzCase | ValidSeq

const rng = new Prng(SEED)
const VARS = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'] as const
const COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'] as const
const SPEC_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/
const ifnameBad = (s: string): boolean => s === '' || s.length > 15 || s === '.' || s === '..' || /[/:\s]/.test(s)
const REQUIRED: Record<string, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  STATUS: [],
  GC: ['CNI_PATH'],
}

const nsmConf = (extra: Record<string, unknown> = {}): Record<string, unknown> => mesh.conf({ networkService: WEB, ...extra })
const IPAM_NET = 'fuzz-ipam'
/** The valid sequences' networks (+ their number): a fuzzed GC of the fuzz networks cannot touch them, nor they one another. */
const VALID_NET = { nsm: 'nsm-valid', ipam: 'fuzz-ipam-valid' } as const
const IPAM_SUBNET = '10.213.0.0/24'
const ipamConf = (ipam: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> => ({
  cniVersion: '1.1.0',
  name: IPAM_NET,
  type: 'ptp',
  ipam: { type: 'nsm-ipam', subnet: IPAM_SUBNET, dataDir, ...ipam },
  ...top,
})

const counter = { nsm: 0, ipam: 0 }
const nextId = (target: Target): string => `${target}-${String(++counter[target]).padStart(3, '0')}`

function baseEnv(target: Target, command: string, id: string): Env {
  const cid = `fz${id.replace(/-/g, '')}`
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: cid,
    CNI_NETNS: pod.path,
    // An interface name of its own per case: accepted ADDs running at the same time never collide.
    CNI_IFNAME: `f${id.replace(/\D/g, '')}`,
    CNI_PATH: target === 'nsm' ? mesh.binDir : ipamBinDir,
  }
}

const baseStdin = (target: Target, command: string): Record<string, unknown> => {
  const conf = target === 'nsm' ? nsmConf() : ipamConf()
  if (command === 'GC') conf['cni.dev/valid-attachments'] = []
  return conf
}

/** Does this environment certainly fail parseEnv (spec rules only)? */
function envInvalid(env: Env): boolean {
  const cmd = env.CNI_COMMAND ?? ''
  if (!(cmd in REQUIRED)) return true
  for (const v of REQUIRED[cmd] ?? []) if ((env[v] ?? '') === '') return true
  const cid = env.CNI_CONTAINERID ?? ''
  if (cid !== '' && !SPEC_ID.test(cid)) return true
  const ifn = env.CNI_IFNAME ?? ''
  if (ifn !== '' && ifnameBad(ifn)) return true
  const ns = env.CNI_NETNS ?? ''
  if (ns !== '' && !ns.startsWith('/')) return true
  if ((cmd === 'ADD' || cmd === 'CHECK') && ns !== '' && !ns.startsWith('/var/run/netns/t') && !ns.startsWith('/proc/')) return true
  return false
}

function add(target: Target, label: string, env: Env, stdin: unknown, mustFail = false): void {
  const id = nextId(target)
  const bytes = Buffer.isBuffer(stdin) ? stdin : Buffer.from(typeof stdin === 'string' ? stdin : JSON.stringify(stdin))
  steps[target].push({ id, target, label, env, stdin: bytes, mustFail })
}

const steps: Record<Target, Step[]> = { nsm: [], ipam: [] }

/** A fresh base call for `target`: env + conf, ids derived from the case id about to be made. */
function base(target: Target, command: string): { env: Env; conf: Record<string, unknown> } {
  const id = `${target}-${String(counter[target] + 1).padStart(3, '0')}`
  return { env: baseEnv(target, command, id), conf: baseStdin(target, command) }
}

// 1. Every CNI_* variable, every way of being wrong, each with one command (ADD half the time).
const junkLen = (): number => rng.pick([4, 12, 40, 300])
function envMode(v: string, mode: string, value: string): string | undefined {
  switch (mode) {
    case 'missing':
      return undefined
    case 'empty':
      return ''
    case 'overlong':
      return (value === '' ? 'x' : value).padEnd(rng.pick([16, 256, 4096, 70_000]), v === 'CNI_COMMAND' ? 'D' : 'a')
    case 'slash':
      return v === 'CNI_NETNS' ? `${value}/../../../etc` : `${value}/x/../y`
    case 'percent':
      return `${value}%2F%00%n%s%`
    case 'spaces':
      return ` ${value} x `
    case 'junk':
      return rng.junk(junkLen())
    default:
      throw new Error(mode)
  }
}
for (const target of ['nsm', 'ipam'] as const) {
  for (const v of VARS) {
    for (const mode of ['missing', 'empty', 'overlong', 'slash', 'percent', 'spaces', 'junk']) {
      for (const command of [rng.next() < 0.5 ? 'ADD' : rng.pick(COMMANDS.filter((c) => c !== 'ADD'))]) {
        const b = base(target, command)
        const env = { ...b.env }
        if (v === 'CNI_ARGS') env.CNI_ARGS = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=fz'
        const value = envMode(v, mode, env[v] ?? '')
        if (value === undefined) delete env[v]
        else env[v] = value
        add(target, `${v} ${mode} (${command})`, env, b.conf, envInvalid(env))
      }
    }
  }
}

// 2. Unknown commands.
for (const target of ['nsm', 'ipam'] as const) {
  const others = ['ADD ', 'DELETE', 'VERSION\n', 'ADD;DEL', '../ADD', rng.junk(8)]
  for (const cmd of ['add', 'FOO', rng.pick(others), rng.pick(others)]) {
    const b = base(target, 'ADD')
    add(target, `CNI_COMMAND ${JSON.stringify(cmd)}`, { ...b.env, CNI_COMMAND: cmd }, b.conf, true)
  }
}

// 3. CNI_ARGS.
const HUGE = 'v'.repeat(70_000)
const argCases: Array<[string, boolean]> = [
  ['K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=a;K8S_POD_NAME=fz', false],
  ['IgnoreUnknown=1;IgnoreUnknown=0;FOO=bar', true],
  ['FOO', true],
  ['IgnoreUnknown=1;FOO', true],
  ['FOO=bar', true],
  ['IgnoreUnknown=1;FOO=bar', false],
  ['=', true],
  ['=x', true],
  [';;;', false],
  ['IgnoreUnknown=maybe', true],
  [`K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=${HUGE}`, false],
  [`IgnoreUnknown=1;${'A=b;'.repeat(5000)}`, false],
  ['K8S_POD_NAMESPACE=x;K8S_POD_NAME=/../../../../../../etc/passwd', false],
  ['K8S_POD_NAMESPACE=..;K8S_POD_NAME=..', false],
  ['K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=fz%2F..%2F', false],
  ['IgnoreUnknown=1;K8S_POD_NAME=fz;K8S_POD_NAME=fz;K8S_POD_NAME=fz', false],
]
const nsmArgCases: Array<[string, boolean]> = [
  ['K8S_POD_NAMESPACE=fuzz', true], // a namespace without a name: 4 (agent/cni/config.ts); nsm-ipam ignores K8S_*
  ['NSM_NETWORK_SERVICES=memif://x', false],
  ['NSM_NETWORK_SERVICES=,,,', false],
  [`NSM_NETWORK_SERVICES=${rng.junk(30).replace(/[;=]/g, '')}`, false],
  [`NSM_NETWORK_SERVICES=${WEB}/${'n'.repeat(40)}`, false],
]
const ipamArgCases: Array<[string, boolean]> = [
  ['IP=not-an-ip', true],
  ['IP=10.213.0.9,10.213.0.9', false],
  ['IP=10.99.0.1', true],
  ['IP=', false],
  ['IP=::1', true],
  ['IP=10.213.0.0', false],
  ['IP=10.213.0.255', false],
]
for (const target of ['nsm', 'ipam'] as const) {
  for (const [args, mustFail] of [...argCases, ...(target === 'nsm' ? nsmArgCases : ipamArgCases)]) {
    const command = rng.next() < 0.75 ? 'ADD' : rng.pick(COMMANDS)
    const b = base(target, command)
    add(target, `CNI_ARGS ${preview(args, 60)} (${command})`, { ...b.env, CNI_ARGS: args }, b.conf, mustFail && command === 'ADD')
  }
}

// 4. CNI_NETNS at things that are not network namespaces (and at namespaces it must not use).
const netnsCases: Array<[string, string, boolean]> = [
  ['a regular file', plainFile, true],
  ['a directory', plainDir, true],
  ['a FIFO', fifo, true],
  ['a regular file under /var/run/netns', runFile, true],
  ['a directory under /var/run/netns', runDir, true],
  ['a FIFO under /var/run/netns', runFifo, true],
  ['/dev/zero', '/dev/zero', true],
  ['/proc/1/ns/net (the host)', '/proc/1/ns/net', true],
  ['/proc/self/ns/net', '/proc/self/ns/net', true],
  ['relative', 'var/run/netns/x', true],
  ['absent under /var/run/netns', `/var/run/netns/t${RUN}gone`, true],
  ['the endpoint netns', ep.path, false],
]
for (const target of ['nsm', 'ipam'] as const) {
  for (const [what, path, invalid] of netnsCases) {
    if (target === 'ipam' && what === 'the endpoint netns') continue
    // ADD (the interesting one) for each; CHECK or DEL as well for the files that could block an open(2).
    const blocking = path === fifo || path === runFifo || path === '/dev/zero'
    for (const command of blocking ? ['ADD', 'CHECK', 'DEL'] : [rng.pick(['ADD', 'ADD', 'CHECK', 'DEL'])]) {
      const b = base(target, command)
      // The agent's own netns is refused by its policy; nsm-ipam has no policy and only checks nsfs.
      const fails = command !== 'DEL' && invalid && !(target === 'ipam' && path.startsWith('/proc/') && command === 'ADD')
      add(target, `CNI_NETNS ${what} (${command})`, { ...b.env, CNI_NETNS: path }, command === 'CHECK' ? { ...b.conf, prevResult: { cniVersion: '1.1.0', interfaces: [], ips: [] } } : b.conf, fails)
    }
  }
}

// 5. stdin: bytes that are not a configuration.
/** A JSON fragment placed verbatim into a configuration (deep nesting: JSON.stringify would overflow). */
class Raw {
  constructor(readonly json: string) {}
}
function serialize(conf: Record<string, unknown>): Buffer {
  const raws: string[] = []
  const text = JSON.stringify(conf, (_k, v: unknown) => {
    if (v instanceof Raw) {
      raws.push(v.json)
      return `\u0001RAW${raws.length - 1}\u0001`
    }
    return v
  })
  return Buffer.from(text.replace(/"\\u0001RAW(\d+)\\u0001"/g, (_m, i: string) => raws[Number(i)] ?? ''))
}
function deep(depth: number, open = '[', close = ']', inner = '1'): string {
  return open.repeat(depth) + inner + close.repeat(depth)
}
for (const target of ['nsm', 'ipam'] as const) {
  const whole = JSON.stringify(baseStdin(target, 'ADD'))
  const raw: Array<[string, string | Buffer]> = [
    ['empty', ''],
    ['whitespace', ' \n\t '],
    ['null', 'null'],
    ['array', '[]'],
    ['string', '"x"'],
    ['number', '1'],
    ['true', 'true'],
    ['{', '{'],
    ['{}', '{}'],
    ['BOM + conf', `\ufeff${whole}`],
    ['invalid UTF-8', Buffer.concat([Buffer.from(whole.slice(0, 20)), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), Buffer.from(whole.slice(20))])],
    ['NUL in cniVersion', whole.replace('"1.1.0"', '"1.1.0\\u0000"')],
    ['trailing garbage', `${whole}}}`],
    ['two documents', `${whole}\n${whole}`],
    ['top-level nesting 100000', deep(100_000)],
    ['object nesting 50000', deep(50_000, '{"a":', '}')],
    ['2 MiB of padding', JSON.stringify({ ...baseStdin(target, 'ADD'), pad: 'x'.repeat(2 << 20) })],
    ['2 MiB of whitespace after the conf', whole + ' '.repeat(2 << 20)],
  ]
  for (let i = 0; i < 3; i++) {
    const cut = rng.int(1, whole.length - 1)
    raw.push([`truncated at ${cut}/${whole.length}`, whole.slice(0, cut)])
  }
  for (const [what, bytes] of raw) {
    const command = rng.next() < 0.7 ? 'ADD' : rng.pick(COMMANDS)
    const b = base(target, command)
    const fine = what === 'BOM + conf' // a BOM may be accepted
    add(target, `stdin ${what} (${command})`, b.env, bytes, !fine && what !== 'trailing garbage' ? true : false)
  }
}

// 6. stdin: every field of the wrong type or value.
const GENERIC: unknown[] = [null, 0, -1, 1.5, 1e300, true, '', 'x', [], [1], {}, { a: {} }]
const commonFields: Record<string, Array<[unknown, boolean]>> = {
  cniVersion: [[1, true], [1.1, true], ['', true], ['1.1', true], ['9.9.9', true], ['0.1.0', true], ['x.y.z', true], ['1.1.0 ', true], [{}, true]],
  name: [['', true], [5, true], ['a/b', true], ['../x', true], [' ', true], ['x'.repeat(5000), false], ['ü', true], [null, true]],
  type: [[5, true], ['', true], [null, true]],
  args: [['x', true], [5, true], [[], true], [{ cni: 'x' }, true], [{ cni: { ips: 5, networkServices: 5 } }, true]],
  runtimeConfig: [['x', true], [[], true], [{ deviceID: 5, ips: 5 }, true]],
  prevResult: [[{ ips: [{ address: 'bad' }] }, false], [new Raw(deep(20_000, '{"interfaces":[', ']}', '{}')), false], ['x', true], [5, true], [[], true], [{ cniVersion: 5 }, false], [{ interfaces: 'x' }, false], [{ interfaces: [{ name: 5 }] }, false], [{ ips: [{ address: '10.0.0.1/24', interface: 99 }] }, false], [{ routes: [{ dst: 'x' }] }, false], [{ dns: 'x' }, false]],
  'cni.dev/valid-attachments': [['x', false], [5, false], [[1], false], [[{ containerID: 5, ifname: 'a' }], false], [[{}], false], [{}, false]],
  cniVersions: [['x', false], [[1], false]],
  capabilities: [['x', false]],
}
const nsmFields: Record<string, Array<[unknown, boolean]>> = {
  networkService: [[{}, true], [{ name: WEB }, true], [5, true], [[], true], [[WEB], true], ['', false], [' ', true], [`memif://${WEB}`, true], ['a,b', true], [`${WEB}/ifname-way-too-long`, true], [`${WEB}?bad key=v`, true], [`${WEB}?a=b&a=c`, false], ['kernel://', true], ['://x', true], ['x'.repeat(10_000), true], ['unknown-svc', true], [new Raw(deep(50_000)), true]],
  networkServices: [[5, true], [[1], true], [['', WEB], true], [`${WEB},,${WEB}`, false], [{}, true], [[WEB, WEB], false]],
  labels: [[{ 'bad key!': 'v' }, true], [[], true], ['x', true], [{ '': 'v' }, true], [{ k: 1 }, true], [{ k: null }, true], [{ k: 'v'.repeat(64) }, true], [{ 'a/b/c': 'x' }, true], [{ '-a': 'b' }, true], [{ k: 'bad value!' }, true], [{ ['x'.repeat(300)]: 'v' }, true], [JSON.parse('{"__proto__":{"polluted":"1"}}') as unknown, false], [{ constructor: 'x' }, false], [new Raw(deep(10_000, '{"a":', '}', '"v"')), true]],
  socket: [['agent.sock', true], [`${mesh.socket}\u0000`, true], ['', false], [5, true], [[], true], ['/nonexistent/agent.sock', true], ['/dev/zero', true], [plainDir, true], [fifo, true], [plainFile, true], [`/${'a'.repeat(300)}`, true], [`${mesh.socket}/..`, true]],
  agentSocket: [['/other/agent.sock', true], [5, true]],
  timeoutMs: [[-1, true], [0, true], [1.5, true], ['100', true], [1e12, true], [{}, true], [600_001, true], [-1e308, true]],
  deviceID: [[5, true], ['0000:00:01.0', true], ['', false]],
}
const ipamFields: Record<string, Array<[unknown, boolean]>> = {
  'ipam': [[null, true], ['x', true], [[], true], [5, true], [{}, true], [new Raw(deep(50_000)), true]],
  'ipam.type': [[5, false], ['', false], ['host-local', false]],
  'ipam.subnet': [['x', true], ['10.0.0.0/33', true], ['10.213.0.1/24', false], ['::/129', true], [5, true], ['', true], ['10.213.0.0/32', true], ['10.213.0.0/31', false], ['fe80::/64', false], [[IPAM_SUBNET], true]],
  'ipam.rangeStart': [['10.9.9.9', true], ['x', true], [5, true], ['10.213.0.250', false]],
  'ipam.rangeEnd': [['10.213.0.1', false], ['x', true], ['10.213.1.1', true]],
  'ipam.gateway': [['x', true], ['10.9.9.9', false], ['10.213.0.0', false], [5, true]],
  'ipam.ranges': [[[[]], true], [[[{ subnet: 5 }]], true], [[], false], ['x', true], [[[{ subnet: IPAM_SUBNET }, { subnet: '10.213.0.0/25' }]], true], [[[{ subnet: IPAM_SUBNET }], [{ subnet: IPAM_SUBNET }]], true], [new Raw(deep(40_000)), true]],
  'ipam.routes': [['x', true], [[{ dst: 'x' }], true], [[{ dst: '10.0.0.0/8', gw: '::1' }], true], [[{ dst: '10.0.0.0/8', mtu: -1 }], true], [[5], true], [[{}], true]],
  'ipam.dataDir': [['/proc/fuzz-nsm', true], ['relative/dir', true], ['', true], [5, true], ['/sys/fuzz-nsm', true], ['/dev/null', true], [plainFile, true], [join(dataDir, '..', 'escape'), false]],
  'ipam.resolvConf': [['/dev/zero', false], [fifo, false], ['/nonexistent', true], [plainDir, true], [5, true], ['/dev/null', false]],
  'ipam.unknownField': [['x', true]],
  'args.cni.ips': [['x', true], [['x'], true], [[5], true], [['10.99.0.1'], true], [['10.213.0.7', '10.213.0.7'], false]],
  'runtimeConfig.ips': [['x', true], [['x'], true], [['10.213.0.0/24'], false]],
  'runtimeConfig.ipRanges': [['x', true], [[[{ subnet: 'x' }]], true], [[5], true]],
}
function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  if (path === 'cni.dev/valid-attachments') {
    obj[path] = value
    return
  }
  const parts = path.split('.')
  let cur = obj
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {}
    cur = cur[p] as Record<string, unknown>
  }
  const last = parts[parts.length - 1] as string
  if (path === 'ipam.ranges') delete cur.subnet
  cur[last] = value
}
for (const target of ['nsm', 'ipam'] as const) {
  const fields = { ...commonFields, ...(target === 'nsm' ? nsmFields : ipamFields) }
  for (const [field, values] of Object.entries(fields)) {
    // The first two values of each list (the ones the brief names first) always, one more from the rest
    // and, a quarter of the time, one generic wrong value, picked by the PRNG.
    const rest = values.slice(2)
    const chosen: Array<[unknown, boolean]> = [...values.slice(0, 2)]
    if (rest.length > 0) chosen.push(rng.pick(rest))
    if (rng.next() < 0.25) chosen.push([rng.pick(GENERIC), false])
    for (const [i, [value, mustFail]] of chosen.entries()) {
      // The named values (first two) go through ADD, the command that uses every field.
      let command: string = i < 2 || rng.next() < 0.7 ? 'ADD' : rng.pick(COMMANDS)
      if (field === 'prevResult') command = rng.pick(['ADD', 'CHECK'])
      if (field === 'cni.dev/valid-attachments') command = 'GC'
      if (field.startsWith('ipam.resolvConf')) command = 'ADD' // read for ADD only
      const b = base(target, command)
      const conf = JSON.parse(JSON.stringify(b.conf)) as Record<string, unknown>
      setPath(conf, field, value)
      // STATUS reads no configuration beyond the common fields; DEL/GC/STATUS may accept what ADD refuses.
      const fails = mustFail && (command === 'ADD' || ['cniVersion', 'name', 'type'].includes(field))
      add(target, `${field}=${value instanceof Raw ? `<nesting of ${value.json.length} bytes>` : preview(JSON.stringify(value) ?? 'undefined', 60)} (${command})`, b.env, serialize(conf), fails)
    }
  }
}

// 6b. nsm-ipam's store and resolv.conf at places a path check may not see for what they are (Node 20's
// recursive mkdir spins forever on /proc's ENOENT; /dev/zero never ends; a FIFO blocks open(2)). ADD each.
for (const [field, value] of [
  ['ipam.dataDir', '//proc/fuzz-nsm'],
  ['ipam.dataDir', `${work}/../../proc/fuzz-nsm`],
  ['ipam.dataDir', `${toProc}/fuzz-nsm`],
  ['ipam.dataDir', `${dangling}/data`],
  ['ipam.dataDir', '/proc/sys/net'],
  ['ipam.resolvConf', toZero],
  ['ipam.resolvConf', '/proc/self/fd/0'],
  ['ipam.resolvConf', '/proc/self/mem'],
] as const) {
  const b = base('ipam', 'ADD')
  const conf = JSON.parse(JSON.stringify(b.conf)) as Record<string, unknown>
  setPath(conf, field, value)
  add('ipam', `${field}=${preview(value, 80)} (ADD)`, b.env, conf, field === 'ipam.dataDir')
}

// 7. A few random pairs of mutations (env + stdin), for what the lists above do not combine.
for (const target of ['nsm', 'ipam'] as const) {
  const pool = steps[target].filter((s): s is FuzzCase => !('valid' in s))
  for (let i = 0; i < 6; i++) {
    const a = rng.pick(pool)
    // Not a stdin that blocks (resolvConf, dataDir): those hang already once each, above.
    const b = rng.pick(pool.filter((x) => ![...BLOCKING, '/proc/'].some((p) => x.stdin.includes(p))))
    const id = nextId(target)
    const cid = `fz${id.replace(/-/g, '')}`
    const env = { ...a.env }
    if (env.CNI_CONTAINERID !== undefined && SPEC_ID.test(env.CNI_CONTAINERID)) env.CNI_CONTAINERID = cid
    steps[target].push({ id, target, label: `combined: env of ${a.id} [${a.label}] + stdin of ${b.id} [${b.label}]`, env, stdin: b.stdin, mustFail: a.mustFail && envInvalid(env) })
  }
}

// 8. Valid sequences (ADD, CHECK with its result, DEL), mixed in at PRNG positions.
for (const target of ['nsm', 'ipam'] as const) {
  const list = steps[target]
  for (let n = 1; n <= 3; n++) {
    const at = n === 1 ? 0 : n === 3 ? list.length : rng.int(1, list.length - 1)
    list.splice(at, 0, { id: `${target}-valid${n}`, target, valid: true, n })
  }
}

// 9. One queue, both targets interleaved, run by CONCURRENCY workers. The calls are independent of one
// another, so the order they happen to run in does not change what each one sees: every case has its own
// container id and interface name; the valid sequences use networks of their own (a fuzzed GC closes only
// its network's connections); a hang (a FIFO, /dev/zero) holds one worker only.
// Calls at things a read or open(2) may block on go first, so that a hang overlaps the rest of the work.
const CONCURRENCY = 4
const interleaved: Step[] = []
for (let i = 0; i < Math.max(steps.nsm.length, steps.ipam.length); i++) {
  const a = steps.nsm[i]
  const b = steps.ipam[i]
  if (a !== undefined) interleaved.push(a)
  if (b !== undefined) interleaved.push(b)
}
const mayBlock = (s: Step): boolean => !('valid' in s) && (Object.values(s.env).some((v) => BLOCKING.includes(v)) || BLOCKING.some((p) => s.stdin.includes(JSON.stringify(p).slice(1, -1))))
const inStdin = (s: Step): boolean => !('valid' in s) && BLOCKING.some((p) => s.stdin.includes(JSON.stringify(p).slice(1, -1)))
// Then the mutations that found bugs before (hardening reports), so that a run cut short by the budget on
// a busy machine still makes them.
const FOUND = /2 MiB|prevResult=.*bad|overlong/
const found = (s: Step): boolean => !('valid' in s) && !mayBlock(s) && FOUND.test(s.label)
const always: Step[] = [...interleaved.filter(inStdin), ...interleaved.filter((s) => mayBlock(s) && !inStdin(s)), ...interleaved.filter(found), ...interleaved.filter((s) => 'valid' in s)]
const queue: Step[] = [...always, ...interleaved.filter((s) => !always.includes(s)).slice(0, Math.max(0, STEPS - always.length))]
// NSM_FUZZ_LIST=1: print every step (id and mutation) and run none.
if (process.env.NSM_FUZZ_LIST !== undefined) {
  for (const s of queue) t.comment(`${s.id} ${'valid' in s ? 'valid ADD, CHECK, DEL' : s.label}`)
  ONLY.add('(none)')
}

// ---------------------------------------------------------------------------------------------------
// Running.

const binaryOf = (target: Target): string => (target === 'nsm' ? mesh.binary : ipamBinary)
const execEnv = (env: Env): Env => ({ PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env })

interface Finding {
  id: string
  label: string
  why: string
  env: Env
  stdin: string
  exit: number | null
  signal: string | null
  ms: number
  stdout: string
  stderr: string
}

const findings: Finding[] = []
const accepted: string[] = []
const codes: Record<string, number> = {}
/** Codes worth a look whatever the input (transient, internal, agent unreachable): listed in the output. */
const RARE = new Set([5, 11, 100, 111])
const rare: string[] = []
let calls = 0
let slowest = { id: '', ms: 0 }

function envDiff(target: Target, id: string, env: Env): Env {
  const b = baseEnv(target, 'ADD', id)
  const d: Env = {}
  for (const k of new Set([...Object.keys(b), ...Object.keys(env)])) {
    if (k === 'CNI_CONTAINERID' && env[k] === b[k]) continue
    if (env[k] !== b[k]) d[k] = env[k] === undefined ? '<unset>' : preview(env[k] ?? '', 80)
  }
  return d
}

function record(c: { id: string; label: string; target: Target; env: Env; stdin: Buffer }, o: RawOutcome, why: string): void {
  findings.push({
    id: c.id,
    label: c.label,
    why,
    env: envDiff(c.target, c.id, c.env),
    stdin: preview(c.stdin, 200),
    exit: o.exitCode,
    signal: o.signal,
    ms: o.ms,
    stdout: preview(o.stdout, 400),
    stderr: preview(o.stderr, 600),
  })
}

async function run(c: FuzzCase): Promise<RawOutcome> {
  const o = await rawExec(binaryOf(c.target), execEnv(c.env), c.stdin, PER_CALL_MS)
  calls++
  if (o.ms > slowest.ms) slowest = { id: c.id, ms: o.ms }
  if (process.env.NSM_FUZZ_VERBOSE !== undefined) t.comment(`${c.id} ${o.ms} ms exit ${String(o.exitCode)} ${c.label.slice(0, 60)} -> ${preview(o.stdout, 300)}`)
  return o
}

async function fuzzCase(c: FuzzCase): Promise<void> {
  const command = c.env.CNI_COMMAND ?? ''
  const o = await run(c)
  const v = judge(command, o)
  if (!v.ok) {
    record(c, o, v.why)
  } else {
    const key = `${c.target} ${v.kind === 'error' ? `code ${String(v.code)}` : `exit 0 (${v.kind})`}`
    codes[key] = (codes[key] ?? 0) + 1
    if (v.kind === 'error' && RARE.has(v.code ?? 0)) rare.push(`${c.id} [${c.label}] -> ${String(v.code)}: ${(JSON.parse(o.stdout) as { msg: string }).msg.slice(0, 140)}`)
    if (v.kind !== 'error' && c.mustFail) record(c, o, `accepted an invalid input (exit 0)`)
    // The agent dropped the call (closed the connection without an answer, ECONNRESET/EPIPE): the shim can
    // only say 11, "try again", to an input that will fail every time; a plugin process answers it.
    if (v.kind === 'error' && v.code === 11 && /ECONNRESET|EPIPE|without an answer/.test(o.stdout)) record(c, o, 'the agent dropped the call without an answer: 11 (try again) for an input that fails every time')
  }
  // An ADD that succeeded (or timed out: it may have done its work) is DEL'd again with the same input.
  if (command === 'ADD' && (o.exitCode === 0 || o.timedOut)) {
    if (o.exitCode === 0) accepted.push(`${c.id} [${c.label}]`)
    const del = { ...c, id: `${c.id}/del`, label: `${c.label}: cleanup DEL`, env: { ...c.env, CNI_COMMAND: 'DEL' }, mustFail: false }
    const d = await run(del)
    const dv = judge('DEL', d)
    if (!dv.ok || d.exitCode !== 0) {
      record(del, d, dv.ok ? `cleanup DEL of an accepted ADD failed (code ${String(dv.code)})` : dv.why)
      // Fall back to the base configuration so that the later checks see only the real leak, if any.
      const b = baseStdin(c.target, 'DEL')
      await run({ ...del, id: `${c.id}/del2`, stdin: Buffer.from(JSON.stringify(b)) })
    }
  }
}

/** ADD, CHECK with the ADD's result, DEL: each must succeed, and the datapath/reservation is there and gone. */
async function validSeq(s: ValidSeq, tt: TapTest): Promise<void> {
  const ifname = s.target === 'nsm' ? `v${s.n}` : `eth${s.n}`
  const env: Env = { ...baseEnv(s.target, 'ADD', s.id), CNI_IFNAME: ifname, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=fz' }
  const net = `${VALID_NET[s.target]}${s.n}`
  const conf = s.target === 'nsm' ? nsmConf({ name: net }) : ipamConf({}, { name: net })
  const c: FuzzCase = { id: s.id, target: s.target, label: `valid ADD ${s.n}`, env, stdin: Buffer.from(JSON.stringify(conf)), mustFail: false }
  const bad = (step: string, o: RawOutcome, why: string): void => {
    record({ ...c, label: `valid ${step} ${s.n}` }, o, why)
    tt.fail(`${s.id}: the valid ${step} failed: ${why}`, { stdout: o.stdout, stderr: o.stderr })
  }
  const a = await run(c)
  const av = judge('ADD', a)
  if (!av.ok || a.exitCode !== 0) return bad('ADD', a, av.ok ? `exit ${String(a.exitCode)}` : av.why)
  const result = JSON.parse(a.stdout) as { ips?: Array<{ address: string }>; interfaces?: Array<{ name: string; sandbox?: string }> }
  if (s.target === 'nsm') {
    if (!(result.interfaces ?? []).some((i) => i.name === ifname && i.sandbox === pod.path)) bad('ADD', a, 'result lacks the pod interface')
    if (!linkNames(pod.name).includes(ifname)) bad('ADD', a, `${ifname} not in the pod netns`)
  } else {
    const addr = result.ips?.[0]?.address ?? ''
    if (!addr.startsWith('10.213.0.')) bad('ADD', a, `address ${addr} not from ${IPAM_SUBNET}`)
    if (reservationRecords(net).length !== 1) bad('ADD', a, `expected one reservation, found ${reservationRecords(net).length}`)
  }
  const ch = await run({ ...c, env: { ...env, CNI_COMMAND: 'CHECK' }, stdin: Buffer.from(JSON.stringify({ ...conf, prevResult: result })) })
  const chv = judge('CHECK', ch)
  if (!chv.ok || ch.exitCode !== 0) bad('CHECK', ch, chv.ok ? `exit ${String(ch.exitCode)}` : chv.why)
  const d = await run({ ...c, env: { ...env, CNI_COMMAND: 'DEL' } })
  const dv = judge('DEL', d)
  if (!dv.ok || d.exitCode !== 0) bad('DEL', d, dv.ok ? `exit ${String(d.exitCode)}` : dv.why)
  if (s.target === 'nsm' && linkNames(pod.name).includes(ifname)) bad('DEL', d, `${ifname} still in the pod netns`)
  if (s.target === 'ipam' && reservationRecords(net).length !== 0) bad('DEL', d, 'a reservation remains')
  codes[`${s.target} valid sequences`] = (codes[`${s.target} valid sequences`] ?? 0) + 1
}

/** Every reservation record under the nsm-ipam root (dataDir and anywhere a mutated dataDir led). */
function reservationRecords(network?: string): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    for (const n of names) {
      const p = join(dir, n)
      let st
      try {
        st = statSync(p)
      } catch {
        continue
      }
      if (st.isDirectory()) walk(p)
      else if (n.startsWith('o.') && dir.includes('/reservations/')) out.push(p)
    }
  }
  walk(network === undefined ? ipamRoot : join(dataDir, network))
  return out
}

const total = steps.nsm.length + steps.ipam.length
t.comment(`${steps.nsm.length} nsm steps, ${steps.ipam.length} nsm-ipam steps (${total}), ${CONCURRENCY} at a time; ${PER_CALL_MS} ms per call; ${queue.length} steps run (NSM_FUZZ_STEPS)`)

t.test('fuzz: every answer exits, has the CNI shape and a known code, and no stack trace', async (tt) => {
  const started = Date.now()
  const runAll = async (steps: Step[]): Promise<void> => {
    let next = 0
    const worker = async (): Promise<void> => {
      for (;;) {
        const s = steps[next++]
        if (s === undefined) return
        if (ONLY.size > 0 && !ONLY.has(s.id)) continue
        if ('valid' in s) await validSeq(s, tt)
        else await fuzzCase(s)
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  }
  // The steps naming a path that may block or an entry this file put under /var/run/netns run first; then
  // those entries go at once, not at teardown: iproute2 opens every entry there to name a link's peer netns
  // (`ip link show`), and would wait on the FIFO for ever if a kill left it behind.
  const runEntries = [runFile, runDir, runFifo]
  const usesRunEntries = (s: Step): boolean => !('valid' in s) && (Object.values(s.env).some((v) => runEntries.includes(v)) || runEntries.some((p) => s.stdin.includes(p)))
  const first = new Set(queue.filter((s) => mayBlock(s) || usesRunEntries(s)))
  await runAll([...first])
  for (const p of runEntries) rmSync(p, { recursive: true, force: true })
  await runAll(queue.filter((s) => !first.has(s)))
  const ms = Date.now() - started
  tt.comment(`${calls} execs in ${ms} ms (slowest ${slowest.id}: ${slowest.ms} ms)`)
  for (const [k, n] of Object.entries(codes).sort()) tt.comment(`  ${k}: ${n}`)
  tt.comment(`${accepted.length} mutated ADDs were accepted (and DEL'd): ${accepted.slice(0, 40).join('; ')}${accepted.length > 40 ? ' ...' : ''}`)
  for (const r of rare.sort()) tt.comment(`  ${r}`)
  for (const f of findings) {
    tt.fail(`${f.id} [${f.label}]: ${f.why}`, { repro: `NSM_FUZZ_SEED=${SEED} NSM_FUZZ_ONLY=${f.id.replace(/\/.*/, '')} npx tap test/integration/hardening-fuzz.test.ts`, ...f })
  }
  tt.equal(findings.length, 0, 'no findings')
})

t.test('afterwards: nothing leaked on the host, in the agent, in the namespaces or in nsm-ipam\'s store', async (tt) => {
  const host = hostSnapshot()
  tt.same(host.links, hostBefore.links, 'host links unchanged')
  tt.same(host.addrs, hostBefore.addrs, 'host addresses unchanged')
  tt.same(host.routes, hostBefore.routes, 'host routes unchanged')
  tt.same(await mesh.connectionIds(), connsBefore, 'the agent\'s connections are what they were')
  tt.same(await mesh.endpointNames(), endpointsBefore, 'the agent\'s endpoints are what they were')
  tt.same(linkNames(ep.name), ['lo'], 'the endpoint netns holds only lo')
  tt.same(linkNames(pod.name), ['lo'], 'the pod netns holds only lo')
  tt.same(reservationRecords(), [], 'nsm-ipam holds no reservation')
  let alive = true
  try {
    process.kill(mesh.agent.pid, 0)
  } catch {
    alive = false
  }
  tt.ok(alive, 'the agent is still running')
  // The agent still serves a valid call after all of it.
  const s = await rawExec(mesh.binary, execEnv({ CNI_COMMAND: 'STATUS', CNI_PATH: mesh.binDir }), Buffer.from(JSON.stringify(nsmConf())), PER_CALL_MS)
  tt.equal(s.exitCode, 0, `STATUS after the fuzz: ${s.stdout}`)
})

t.test('everything the test made is removed', async (tt) => {
  removeMade()
  removeNetns(pod.name)
  removeNetns(ep.name)
  for (const p of [...made, pod.path, ep.path]) tt.notOk(existsSync(p), `${p} removed`)
  // A netns this run made under another name (none expected) would carry the run prefix.
  const left = readdirSync('/var/run/netns').filter((n) => n.startsWith(`t${RUN}f`))
  tt.same(left, [], 'no netns of this run remains')
})
