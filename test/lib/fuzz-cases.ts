// The steps of the CNI fuzz test (test/integration/hardening-fuzz.test.ts), generated from its seeded PRNG:
// mutations of valid calls (every CNI_* variable wrong in every way, unknown commands, CNI_ARGS, CNI_NETNS at
// things that are not network namespaces, stdin that is not a configuration, every field of the wrong type
// or value, random pairs of these) with whether each is certainly invalid, and valid ADD/CHECK/DEL sequences
// mixed in; and the order a run makes them in. The same seed gives the same steps: the PRNG is drawn from
// in one fixed order.
import { WEB } from '../integration/nsm-fixture'
import { preview, type Prng } from './fuzz'
import { deep, fieldMutations, GENERIC, Raw, serialize, setPath } from './fuzz-fields'
import { COMMANDS, envInvalid, SPEC_ID, VARS, type CniInputs, type Env, type FuzzCase, type FuzzWorld, type Step, type Target } from './fuzz-inputs'
import { RUN } from './netns'

/** Every step for each binary, in the PRNG's order (ids `nsm-001`, `ipam-001`, ...; `<target>-valid<n>`). */
export function generateSteps(w: FuzzWorld, inputs: CniInputs, rng: Prng): Record<Target, Step[]> {
  const { baseEnv, baseStdin } = inputs
  const { work, plainFile, plainDir, fifo, runFile, runDir, runFifo, toProc, toZero, dangling, blocking } = w.paths
  const { common: commonFields, nsm: nsmFields, ipam: ipamFields } = fieldMutations(w.mesh.socket, w.paths)
  const counter = { nsm: 0, ipam: 0 }
  const nextId = (target: Target): string => `${target}-${String(++counter[target]).padStart(3, '0')}`
  const steps: Record<Target, Step[]> = { nsm: [], ipam: [] }

  function add(target: Target, label: string, env: Env, stdin: unknown, mustFail = false): void {
    const id = nextId(target)
    const bytes = Buffer.isBuffer(stdin) ? stdin : Buffer.from(typeof stdin === 'string' ? stdin : JSON.stringify(stdin))
    steps[target].push({ id, target, label, env, stdin: bytes, mustFail })
  }

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
    ['the endpoint netns', w.endpointNetns, false],
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
      const b = rng.pick(pool.filter((x) => ![...blocking, '/proc/'].some((p) => x.stdin.includes(p))))
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
  return steps
}

/** A step that names a path a read, an open(2) or a recursive mkdir may block or spin on. */
export function mayBlock(s: Step, blocking: readonly string[]): boolean {
  return !('valid' in s) && (Object.values(s.env).some((v) => blocking.includes(v)) || blocking.some((p) => s.stdin.includes(JSON.stringify(p).slice(1, -1))))
}

/**
 * The steps a run makes, in order: both targets interleaved; the calls at things a read or open(2) may
 * block on first, so that a hang overlaps the rest of the work; then the mutations that found bugs before
 * (hardening reports), so that a run cut short by the budget on a busy machine still makes them; the valid
 * sequences; then the others in the seed's order up to `budget` steps in all.
 */
export function runQueue(steps: Record<Target, Step[]>, blocking: readonly string[], budget: number): Step[] {
  const interleaved: Step[] = []
  for (let i = 0; i < Math.max(steps.nsm.length, steps.ipam.length); i++) {
    const a = steps.nsm[i]
    const b = steps.ipam[i]
    if (a !== undefined) interleaved.push(a)
    if (b !== undefined) interleaved.push(b)
  }
  const blocks = (s: Step): boolean => mayBlock(s, blocking)
  const inStdin = (s: Step): boolean => !('valid' in s) && blocking.some((p) => s.stdin.includes(JSON.stringify(p).slice(1, -1)))
  const FOUND = /2 MiB|prevResult=.*bad|overlong/
  const found = (s: Step): boolean => !('valid' in s) && !blocks(s) && FOUND.test(s.label)
  const always: Step[] = [...interleaved.filter(inStdin), ...interleaved.filter((s) => blocks(s) && !inStdin(s)), ...interleaved.filter(found), ...interleaved.filter((s) => 'valid' in s)]
  return [...always, ...interleaved.filter((s) => !always.includes(s)).slice(0, Math.max(0, budget - always.length))]
}
