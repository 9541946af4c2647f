// The checks of the conformance suite, each with the spec's level (see suite.ts for the overview).
import { ip } from '../lib/netns'
import type { CniCall, CniOutcome } from './exec'
import { brief, CheckFailed, expect, NotApplicable, OUR_VERSIONS, vnum, type Attachment, type ConformanceRun, type Level } from './run'

export interface CheckDef {
  id: string
  level: Level
  title: string
  expect: string
  run(r: ConformanceRun): Promise<string>
}

/** An error check: the call fails with error JSON on stdout, a non-zero exit, a code in `codes` (any when empty), and nothing changed. */
function errorCheck(id: string, level: Level, title: string, codes: number[], make: (r: ConformanceRun, ns: { path: string }) => CniCall | undefined): CheckDef {
  return {
    id,
    level,
    title,
    expect: `error JSON on stdout, exit != 0, code ${codes.length === 0 ? 'any' : codes.join(' or ')}, nothing changed`,
    async run(r) {
      const ns = r.newNetns()
      let call: CniCall | undefined
      try {
        call = make(r, ns)
        if (call === undefined) throw new NotApplicable('not applicable to this plugin')
      } catch (err) {
        r.dropNetns(ns.name)
        throw err
      }
      const before = r.snapshot()
      const out = await r.call(call)
      const after = r.snapshot()
      if (out.exitCode === 0 && call.command === 'ADD') {
        // It accepted bad input: undo what it did so later checks start clean.
        await r.call({ ...call, command: 'DEL' })
      }
      r.dropNetns(ns.name)
      expect(out.exitCode !== 0, `accepted: ${brief(out)}`)
      expect(out.json !== undefined, `no JSON error on stdout: ${brief(out)}`)
      expect(Number.isInteger(out.json.code) && typeof out.json.msg === 'string', `error JSON lacks code/msg: ${brief(out)}`)
      const code = out.json.code as number
      expect(before === after, `code ${code}, but state changed: ${diffHint(before, after)}`)
      expect(codes.length === 0 || codes.includes(code), `code ${code} (${String(out.json.msg).slice(0, 100)})`)
      return `code ${code}: ${String(out.json.msg).slice(0, 90)}`
    },
  }
}

function diffHint(a: string, b: string): string {
  const x = JSON.parse(a) as Record<string, unknown>
  const y = JSON.parse(b) as Record<string, unknown>
  const parts: string[] = []
  for (const k of Object.keys(x)) {
    if (JSON.stringify(x[k]) === JSON.stringify(y[k])) continue
    if (k === 'data') {
      const dx = x[k] as Record<string, string>
      const dy = y[k] as Record<string, string>
      const files = [...new Set([...Object.keys(dx), ...Object.keys(dy)])].filter((f) => dx[f] !== dy[f])
      parts.push(`data dir: ${files.join(', ')}`)
    } else parts.push(k)
  }
  return parts.join('; ')
}

function checkResultShape(r: ConformanceRun, out: CniOutcome, version: string, att: Attachment): string {
  expect(out.exitCode === 0, `ADD failed: ${brief(out)}`)
  const res = out.json
  expect(res !== undefined, 'ADD printed no JSON result')
  expect(res.cniVersion === version, `result cniVersion ${JSON.stringify(res.cniVersion)}, asked ${version}`)
  const ips = res.ips
  expect(Array.isArray(ips) && ips.length > 0, 'result has no ips')
  const ifaces = res.interfaces
  if (r.target.kind === 'ipam') expect(ifaces === undefined, 'an IPAM result must not list interfaces')
  else {
    expect(Array.isArray(ifaces), 'result has no interfaces list')
    const sandboxIdx = (ifaces as Array<{ name?: unknown; sandbox?: unknown }>).findIndex((i) => i.name === att.ifname && i.sandbox === att.netns)
    expect(sandboxIdx >= 0, `no interface ${att.ifname} with sandbox ${att.netns} in the result`)
  }
  for (const [n, raw] of (ips as Array<Record<string, unknown>>).entries()) {
    const a = raw.address
    expect(typeof a === 'string' && /^[0-9a-f.:]+\/\d+$/i.test(a), `ips[${n}].address ${JSON.stringify(a)} is not a CIDR`)
    const fam = a.includes(':') ? '6' : '4'
    if (vnum(version) < vnum('1.0.0')) expect(raw.version === fam, `ips[${n}].version is ${JSON.stringify(raw.version)}, ${version} requires "${fam}"`)
    else expect(raw.version === undefined, `ips[${n}] has "version", removed in 1.0.0`)
    if (raw.interface !== undefined) {
      expect(Number.isInteger(raw.interface) && Array.isArray(ifaces) && (raw.interface as number) < ifaces.length, `ips[${n}].interface ${JSON.stringify(raw.interface)} is not an index of interfaces`)
    }
    if (r.target.kind === 'main') {
      const have = ip(att.netnsName, '-br', 'addr', 'show', 'dev', att.ifname)
      expect(have.includes(a), `${a} is not on ${att.ifname} in the netns (${have.trim()})`)
    }
  }
  return `${(ips as Array<{ address: string }>).map((i) => i.address).join(', ')}`
}

const resultCheck = (v: string): CheckDef => ({
  id: `result-${v}`,
  level: 'MUST',
  title: `ADD result in the ${v} shape`,
  expect: `exit 0, cniVersion ${v}, ips${vnum(v) < vnum('1.0.0') ? ' with version' : ' without version'}${''}; DEL then succeeds`,
  async run(r) {
    if (!r.supported.includes(v)) throw new NotApplicable(`plugin does not list ${v}`)
    const { out, att } = await r.add(v)
    const detail = checkResultShape(r, out, v, att)
    const del = await r.del(att, { prevResult: out.json })
    expect(del.exitCode === 0, `DEL after ADD failed: ${brief(del)}`)
    return detail
  },
})

const needs = (r: ConformanceRun, v: string): void => {
  if (!r.supported.includes(v)) throw new NotApplicable(`plugin does not list ${v}`)
}

export const CHECKS: CheckDef[] = [
  {
    id: 'version-reply',
    level: 'MUST',
    title: 'VERSION prints cniVersion and supportedVersions',
    expect: 'exit 0, {"cniVersion", "supportedVersions": [...]}',
    async run(r) {
      const out = await r.call({ command: 'VERSION', stdin: { cniVersion: '0.4.0' } })
      expect(out.exitCode === 0, brief(out))
      expect(out.json !== undefined && Array.isArray(out.json.supportedVersions) && out.json.supportedVersions.length > 0, brief(out))
      expect(typeof out.json.cniVersion === 'string', 'no cniVersion')
      return `supports ${(out.json.supportedVersions as string[]).join(', ')}`
    },
  },
  {
    id: 'version-echo',
    level: 'SHOULD',
    title: 'VERSION answers in the version asked',
    expect: 'cniVersion of the reply = cniVersion on stdin (0.4.0)',
    async run(r) {
      const out = await r.call({ command: 'VERSION', stdin: { cniVersion: '0.4.0' } })
      expect(out.json?.cniVersion === '0.4.0', `replied ${JSON.stringify(out.json?.cniVersion)}`)
      return 'replied 0.4.0'
    },
  },
  ...OUR_VERSIONS.map(resultCheck),
  {
    id: 'add-twice',
    level: 'MUST',
    title: 'a second ADD of the same container and interface fails',
    expect: 'error JSON, exit != 0; the first attachment still works',
    async run(r) {
      const { out, att } = await r.add(r.version)
      expect(out.exitCode === 0, `first ADD failed: ${brief(out)}`)
      const again = await r.call({ command: 'ADD', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: att.conf })
      expect(again.exitCode !== 0, `second ADD succeeded: ${brief(again)}`)
      expect(again.json !== undefined && Number.isInteger(again.json.code), `no error JSON: ${brief(again)}`)
      if (vnum(r.version) >= vnum('0.4.0')) {
        const check = await r.call({ command: 'CHECK', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: { ...att.conf, prevResult: out.json } })
        expect(check.exitCode === 0, `CHECK of the first attachment fails after the refused ADD: ${brief(check)}`)
      }
      await r.del(att)
      return `code ${String(again.json.code)}: ${String(again.json.msg).slice(0, 80)}`
    },
  },
  {
    id: 'check-after-add',
    level: 'MUST',
    title: 'CHECK right after ADD succeeds and prints nothing',
    expect: 'exit 0, empty stdout',
    async run(r) {
      needs(r, '0.4.0')
      const { out, att } = await r.add(r.version)
      expect(out.exitCode === 0, `ADD failed: ${brief(out)}`)
      const check = await r.call({ command: 'CHECK', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: { ...att.conf, prevResult: out.json } })
      await r.del(att)
      expect(check.exitCode === 0 && check.stdout.trim() === '', brief(check))
      return 'ok'
    },
  },
  {
    id: 'del-twice',
    level: 'SHOULD',
    title: 'DEL twice succeeds (idempotent)',
    expect: 'both exit 0',
    async run(r) {
      const { out, att } = await r.add(r.version)
      expect(out.exitCode === 0, `ADD failed: ${brief(out)}`)
      const conf = att.conf
      const d1 = await r.call({ command: 'DEL', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: conf })
      const d2 = await r.call({ command: 'DEL', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: conf })
      await r.del(att)
      expect(d1.exitCode === 0, `first DEL: ${brief(d1)}`)
      expect(d2.exitCode === 0, `second DEL: ${brief(d2)}`)
      return 'ok'
    },
  },
  {
    id: 'del-netns-gone',
    level: 'SHOULD',
    title: 'DEL after the netns is gone succeeds and releases the address',
    expect: 'exit 0; the address can be requested again',
    async run(r) {
      const { out, att } = await r.add(r.version)
      expect(out.exitCode === 0, `ADD failed: ${brief(out)}`)
      const addr = ((out.json?.ips as Array<{ address: string }>)[0] as { address: string }).address.split('/')[0] as string
      r.dropNetns(att.netnsName)
      const del = await r.del(att)
      expect(del.exitCode === 0, `DEL: ${brief(del)}`)
      const again = await r.add(r.version, { extra: { args: { cni: { ips: [addr] } } } })
      if (again.out.exitCode === 0) await r.del(again.att)
      expect(again.out.exitCode === 0, `${addr} is still held after DEL: ${brief(again.out)}`)
      return `${addr} released`
    },
  },
  {
    id: 'del-no-netns',
    level: 'SHOULD',
    title: 'DEL without CNI_NETNS succeeds',
    expect: 'exit 0',
    async run(r) {
      const { out, att } = await r.add(r.version)
      expect(out.exitCode === 0, `ADD failed: ${brief(out)}`)
      const del = await r.call({ command: 'DEL', containerId: att.containerId, ifname: att.ifname, stdin: att.conf })
      await r.del(att)
      expect(del.exitCode === 0, brief(del))
      return 'ok'
    },
  },
  ...(['cni.dev/valid-attachments', 'cni.dev/attachments'] as const).map(
    (key): CheckDef => ({
      id: key === 'cni.dev/valid-attachments' ? 'gc-removes-stale' : 'gc-legacy-key',
      level: 'SHOULD',
      title: `GC releases what ${key} does not list, keeps what it lists`,
      expect: 'exit 0; the stale address is free again, the valid one is still held',
      async run(r) {
        needs(r, '1.1.0')
        const a = await r.add('1.1.0')
        const b = await r.add('1.1.0')
        expect(a.out.exitCode === 0 && b.out.exitCode === 0, `ADD failed: ${brief(a.out)} / ${brief(b.out)}`)
        const addrOf = (o: CniOutcome): string => (((o.json?.ips as Array<{ address: string }>)[0] as { address: string }).address.split('/')[0] as string)
        const gc = await r.call({ command: 'GC', stdin: { ...r.conf('1.1.0'), [key]: [{ containerID: a.att.containerId, ifname: a.att.ifname }] } })
        expect(gc.exitCode === 0, `GC: ${brief(gc)}`)
        const reuseB = await r.add('1.1.0', { extra: { args: { cni: { ips: [addrOf(b.out)] } } } })
        const reuseA = await r.add('1.1.0', { extra: { args: { cni: { ips: [addrOf(a.out)] } } } })
        if (reuseB.out.exitCode === 0) await r.del(reuseB.att)
        if (reuseA.out.exitCode === 0) await r.del(reuseA.att)
        await r.del(b.att)
        await r.del(a.att)
        expect(reuseB.out.exitCode === 0, `stale ${addrOf(b.out)} still held after GC: ${brief(reuseB.out)}`)
        expect(reuseA.out.exitCode !== 0, `valid ${addrOf(a.out)} was released by GC`)
        return `released ${addrOf(b.out)}, kept ${addrOf(a.out)}`
      },
    }),
  ),
  {
    id: 'status-ready',
    level: 'MUST',
    title: 'STATUS succeeds when the plugin can serve ADD',
    expect: 'exit 0, empty stdout',
    async run(r) {
      needs(r, '1.1.0')
      const out = await r.call({ command: 'STATUS', stdin: r.conf('1.1.0') })
      expect(out.exitCode === 0 && out.stdout.trim() === '', brief(out))
      return 'ok'
    },
  },
  {
    id: 'status-exhausted',
    level: 'SHOULD',
    title: 'STATUS answers 50 when the address pool is exhausted',
    expect: 'code 50 once the only address is taken',
    async run(r) {
      needs(r, '1.1.0')
      const tiny = { subnet: `${r.prefix}.0/24`, rangeStart: `${r.prefix}.250`, rangeEnd: `${r.prefix}.250` }
      const a = await r.add('1.1.0', { ipamExtra: tiny })
      expect(a.out.exitCode === 0, `ADD failed: ${brief(a.out)}`)
      const out = await r.call({ command: 'STATUS', stdin: r.conf('1.1.0', tiny) })
      await r.del(a.att)
      expect(out.exitCode !== 0 && out.json?.code === 50, brief(out))
      return String(out.json?.msg).slice(0, 90)
    },
  },
  {
    id: 'gc-below-1.1',
    level: 'SHOULD',
    title: 'GC with a pre-1.1.0 configuration is refused',
    expect: 'code 1 (incompatible version)',
    async run(r) {
      needs(r, '1.1.0')
      const before = r.snapshot()
      const out = await r.call({ command: 'GC', stdin: { ...r.conf('1.0.0'), 'cni.dev/valid-attachments': [] } })
      expect(out.exitCode !== 0 && out.json?.code === 1, brief(out))
      expect(r.snapshot() === before, 'state changed')
      return 'code 1'
    },
  },
  errorCheck('err-malformed-json', 'MUST', 'malformed JSON on stdin', [6], (r, ns) => ({ command: 'ADD', containerId: 'bad-json', netns: ns.path, ifname: 'eth0', stdin: '{"cniVersion": "1.0.0", "name": ' })),
  errorCheck('err-missing-command', 'MUST', 'CNI_COMMAND missing', [4], (r, ns) => ({ command: '', unset: ['CNI_COMMAND'], containerId: 'no-cmd', netns: ns.path, ifname: 'eth0', stdin: r.conf(r.version) })),
  errorCheck('err-empty-containerid', 'MUST', 'CNI_CONTAINERID empty', [4], (r, ns) => ({ command: 'ADD', containerId: '', netns: ns.path, ifname: 'eth0', stdin: r.conf(r.version) })),
  errorCheck('err-missing-netns', 'MUST', 'CNI_NETNS missing on ADD', [4], (r) => ({ command: 'ADD', containerId: 'no-netns', ifname: 'eth0', stdin: r.conf(r.version) })),
  errorCheck('err-missing-ifname', 'MUST', 'CNI_IFNAME missing', [4], (r, ns) => ({ command: 'ADD', containerId: 'no-ifname', netns: ns.path, stdin: r.conf(r.version) })),
  errorCheck('err-del-missing-ifname', 'MUST', 'DEL without CNI_IFNAME', [4], (r, ns) => ({ command: 'DEL', containerId: 'del-no-ifname', netns: ns.path, stdin: r.conf(r.version) })),
  errorCheck('err-check-missing-path', 'MUST', 'CHECK without CNI_PATH', [4], (r, ns) => (needs(r, '0.4.0'), { command: 'CHECK', containerId: 'check-no-path', netns: ns.path, ifname: 'eth0', path: '', unset: ['CNI_PATH'], stdin: r.conf(r.version) })),
  errorCheck('err-gc-missing-path', 'MUST', 'GC without CNI_PATH', [4], (r) => (needs(r, '1.1.0'), { command: 'GC', path: '', unset: ['CNI_PATH'], stdin: { ...r.conf('1.1.0'), 'cni.dev/valid-attachments': [] } })),
  errorCheck('err-unsupported-version', 'MUST', 'cniVersion the plugin does not support (9.9.9)', [1], (r, ns) => ({ command: 'ADD', containerId: 'bad-version', netns: ns.path, ifname: 'eth0', stdin: r.conf('9.9.9') })),
  errorCheck('err-check-below-0.4', 'MUST', 'CHECK with a 0.3.1 configuration', [1], (r, ns) => (needs(r, '0.3.1'), { command: 'CHECK', containerId: 'old-check', netns: ns.path, ifname: 'eth0', stdin: r.conf('0.3.1') })),
  errorCheck('err-ifname-too-long', 'MUST', 'CNI_IFNAME of 16 characters', [4], (r, ns) => ({ command: 'ADD', containerId: 'long-ifname', netns: ns.path, ifname: 'abcdefghijklmnop', stdin: r.conf(r.version) })),
  errorCheck('err-ifname-slash', 'MUST', 'CNI_IFNAME with "/"', [4], (r, ns) => ({ command: 'ADD', containerId: 'slash-ifname', netns: ns.path, ifname: 'a/b', stdin: r.conf(r.version) })),
  errorCheck('err-bad-containerid', 'MUST', 'CNI_CONTAINERID not starting with an alphanumeric', [4], (r, ns) => ({ command: 'ADD', containerId: '-bad', netns: ns.path, ifname: 'eth0', stdin: r.conf(r.version) })),
  errorCheck('err-netns-missing', 'MUST', 'CNI_NETNS names no namespace', [], (r, ns) => ({ command: 'ADD', containerId: 'gone-netns', netns: `${ns.path}-missing`, ifname: 'eth0', stdin: r.conf(r.version) })),
  errorCheck('err-stdin-10mb', 'ROBUST', '10 MB of stdin (a valid config padded)', [5, 6, 7], (r, ns) => ({ command: 'ADD', containerId: 'huge-stdin', netns: ns.path, ifname: 'eth0', stdin: { ...r.conf(r.version), padding: 'x'.repeat(10 * 1024 * 1024) } })),
  errorCheck('err-unknown-cni-args', 'SHOULD', 'unknown CNI_ARGS key without IgnoreUnknown', [4], (r, ns) => ({ command: 'ADD', containerId: 'unknown-args', netns: ns.path, ifname: 'eth0', args: 'NSM_CONFORMANCE_UNKNOWN=1', stdin: r.conf(r.version) })),
  {
    id: 'err-has-cniversion',
    level: 'SHOULD',
    title: 'error JSON carries cniVersion',
    expect: '{"cniVersion", "code", "msg"}',
    async run(r) {
      const out = await r.call({ command: 'ADD', containerId: 'bad-json2', netns: '/nonexistent', ifname: 'eth0', stdin: '{' })
      expect(out.json !== undefined, brief(out))
      expect(typeof out.json.cniVersion === 'string', `no cniVersion: ${brief(out)}`)
      return `cniVersion ${String(out.json.cniVersion)}`
    },
  },
]

