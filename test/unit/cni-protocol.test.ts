// Unit tests for the CNI protocol layer (cni/protocol): environment rules, CNI_ARGS, version
// negotiation and command gating, result encoding per version and prevResult parsing.
import t from 'tap'
import { parseCniArgs, pickArg } from '../../cni/protocol/args'
import { parseNetConf, decodeJson } from '../../cni/protocol/config'
import { parseEnv, interfaceNameProblem, containerIdProblem } from '../../cni/protocol/env'
import { CniCode, CniError } from '../../cni/protocol/errors'
import { encodeResult, parseResult, type CniResult } from '../../cni/protocol/result'
import { assertCommandAllowed, negotiateVersion } from '../../cni/protocol/version'

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof CniError) return err.code
    throw err
  }
  return undefined
}
function msgOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    return (err as Error).message
  }
  return ''
}

const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc-1.x_y', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni:/opt/cni/bin' }

t.test('environment: required variables per command', async (t) => {
  const env = parseEnv(base)
  t.same(env.path, ['/usr/lib/cni', '/opt/cni/bin'])
  t.equal(env.command, 'ADD')
  t.equal(codeOf(() => parseEnv({ ...base, CNI_COMMAND: '' })), CniCode.INVALID_ENVIRONMENT)
  t.match(msgOf(() => parseEnv({ ...base, CNI_COMMAND: 'ATTACH' })), /CNI_COMMAND: unknown command "ATTACH"/)
  // ADD needs CONTAINERID, NETNS, IFNAME; all missing ones are named at once.
  t.match(msgOf(() => parseEnv({ CNI_COMMAND: 'ADD' })), /missing: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME/)
  // Empty counts as missing.
  t.match(msgOf(() => parseEnv({ ...base, CNI_NETNS: '' })), /missing: CNI_NETNS/)
  // DEL: netns optional (the container may be gone), CNI_PATH optional per spec.
  t.doesNotThrow(() => parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0' }))
  t.match(msgOf(() => parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c' })), /missing: CNI_IFNAME/)
  // CHECK also needs CNI_PATH; GC needs CNI_PATH only; STATUS and VERSION need nothing.
  t.match(msgOf(() => parseEnv({ ...base, CNI_COMMAND: 'CHECK', CNI_PATH: '' })), /missing: CNI_PATH/)
  t.match(msgOf(() => parseEnv({ CNI_COMMAND: 'GC' })), /missing: CNI_PATH/)
  t.doesNotThrow(() => parseEnv({ CNI_COMMAND: 'STATUS' }))
  t.doesNotThrow(() => parseEnv({ CNI_COMMAND: 'VERSION' }))
  t.equal(codeOf(() => parseEnv({ ...base, CNI_NETNS: 'relative/path' })), CniCode.INVALID_ENVIRONMENT)
})

t.test('environment: container id and interface name rules', async (t) => {
  for (const bad of ['-abc', '.abc', 'a b', 'a/b', 'a:b', 'ä']) t.ok(containerIdProblem(bad), `container id ${JSON.stringify(bad)} refused`)
  for (const good of ['a', '0', 'A-b_c.d', 'f'.repeat(64)]) t.equal(containerIdProblem(good), undefined, `container id ${good} accepted`)
  for (const bad of ['', '.', '..', 'a/b', 'a:b', 'a b', 'a\tb', 'x'.repeat(16)]) t.ok(interfaceNameProblem(bad), `ifname ${JSON.stringify(bad)} refused`)
  for (const good of ['eth0', 'x'.repeat(15), 'net-1.2', '...']) t.equal(interfaceNameProblem(good), undefined, `ifname ${good} accepted`)
  t.match(msgOf(() => parseEnv({ ...base, CNI_IFNAME: 'way-too-long-name0' })), /CNI_IFNAME "way-too-long-name0" is 18 characters long/)
  t.match(msgOf(() => parseEnv({ ...base, CNI_CONTAINERID: '_x' })), /CNI_CONTAINERID "_x"/)
})

t.test('CNI_ARGS: pairs, IgnoreUnknown, precedence of config args', async (t) => {
  t.same([...parseCniArgs('IP=10.0.0.5;K8S_POD_NAME=p', ['IP', 'K8S_POD_NAME'])], [['IP', '10.0.0.5'], ['K8S_POD_NAME', 'p']])
  t.same([...parseCniArgs('', ['IP'])], [])
  t.same([...parseCniArgs('IgnoreUnknown=1;FOO=bar;IP=1.2.3.4;', ['IP'])], [['IP', '1.2.3.4']], 'unknown dropped with IgnoreUnknown')
  t.same([...parseCniArgs('IgnoreUnknown=true;FOO=a=b', [])], [], 'value may contain =')
  t.equal(codeOf(() => parseCniArgs('FOO=bar', ['IP'])), CniCode.INVALID_ENVIRONMENT)
  t.match(msgOf(() => parseCniArgs('FOO=bar;IP=1', ['IP'])), /CNI_ARGS: unknown key FOO/)
  t.match(msgOf(() => parseCniArgs('IgnoreUnknown=0;FOO=bar', ['IP'])), /unknown key FOO/)
  t.match(msgOf(() => parseCniArgs('JUNK', ['IP'])), /"JUNK" is not a KEY=VALUE pair/)
  t.match(msgOf(() => parseCniArgs('IgnoreUnknown=maybe', [])), /IgnoreUnknown="maybe"/)
  const env = parseCniArgs('IP=10.0.0.5', ['IP'])
  t.same(pickArg({ ip: '10.0.0.9' }, 'ip', env, 'IP'), '10.0.0.9', 'config args win')
  t.same(pickArg({}, 'ip', env, 'IP'), '10.0.0.5', 'CNI_ARGS when config has none')
  t.equal(pickArg(undefined, 'ip', parseCniArgs('', ['IP']), 'IP'), undefined)
})

t.test('version negotiation and command gating', async (t) => {
  t.equal(negotiateVersion({ cniVersion: '0.3.1' }), '0.3.1')
  t.equal(negotiateVersion({ cniVersions: ['0.4.0', '1.0.0', '1.1.0', '2.0.0'] }), '1.1.0', 'highest common of a list')
  t.equal(negotiateVersion({ cniVersion: '1.0.0', cniVersions: ['1.0.0', '1.1.0'] }), '1.0.0', 'cniVersion (set by the runtime) wins')
  t.equal(codeOf(() => negotiateVersion({ cniVersion: '0.2.0' })), CniCode.INCOMPATIBLE_VERSION)
  t.equal(codeOf(() => negotiateVersion({ cniVersion: '9.9.9' })), CniCode.INCOMPATIBLE_VERSION)
  t.equal(codeOf(() => negotiateVersion({})), CniCode.INCOMPATIBLE_VERSION, 'missing means 0.1.0')
  t.equal(codeOf(() => negotiateVersion({ cniVersion: 'one' })), CniCode.DECODING_FAILURE)
  t.equal(codeOf(() => negotiateVersion({ cniVersion: 1 })), CniCode.DECODING_FAILURE)
  t.equal(codeOf(() => negotiateVersion({ cniVersions: ['0.1.0', '0.2.0'] })), CniCode.INCOMPATIBLE_VERSION)
  t.equal(codeOf(() => assertCommandAllowed('CHECK', '0.3.1')), CniCode.INCOMPATIBLE_VERSION)
  t.equal(codeOf(() => assertCommandAllowed('CHECK', '0.4.0')), undefined)
  for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const) {
    t.equal(codeOf(() => assertCommandAllowed('GC', v)), CniCode.INCOMPATIBLE_VERSION, `GC refused at ${v}`)
    t.equal(codeOf(() => assertCommandAllowed('STATUS', v)), CniCode.INCOMPATIBLE_VERSION, `STATUS refused at ${v}`)
  }
  t.equal(codeOf(() => assertCommandAllowed('GC', '1.1.0')), undefined)
})

t.test('configuration: name, type, args, valid attachments', async (t) => {
  const conf = parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x', args: { cni: { ips: ['1.2.3.4'] } }, 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] })
  t.same(conf.cniArgs, { ips: ['1.2.3.4'] })
  t.same(conf.validAttachments, [{ containerID: 'a', ifname: 'eth0' }])
  t.same(parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x', 'cni.dev/attachments': [] }).validAttachments, [], 'the older key is accepted')
  t.same(parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x' }).validAttachments, [], 'absent: the empty list')
  t.same(parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x', 'cni.dev/valid-attachments': null }).validAttachments, [], 'null: the empty list')
  t.match(msgOf(() => parseNetConf({ cniVersion: '1.1.0', type: 'x' })), /^name: missing/)
  t.match(msgOf(() => parseNetConf({ cniVersion: '1.1.0', name: 'a/b', type: 'x' })), /^name: "a\/b" is not a valid network name/)
  t.equal(codeOf(() => parseNetConf({ cniVersion: '1.1.0', name: 'n' })), CniCode.INVALID_CONFIG)
  t.equal(codeOf(() => parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x', args: [] })), CniCode.INVALID_CONFIG)
  t.match(msgOf(() => parseNetConf({ cniVersion: '1.1.0', name: 'n', type: 'x', 'cni.dev/valid-attachments': [{ containerID: 1 }] })), /cni.dev\/valid-attachments\[0\]/)
  t.equal(codeOf(() => decodeJson(Buffer.from('{"a":'))), CniCode.DECODING_FAILURE)
  t.equal(codeOf(() => decodeJson(Buffer.from('[1]'))), CniCode.DECODING_FAILURE)
})

t.test('results: shape per version, and parsed back from any version', async (t) => {
  const r: CniResult = {
    interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/var/run/netns/x', mtu: 1400, socketPath: '/s', pciID: '0000:00:01.0' }],
    ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }, { address: 'fd00::2/64', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1', mtu: 1300, table: 100 }],
    dns: { nameservers: ['10.0.0.1'] },
  }
  const v11 = encodeResult(r, '1.1.0')
  t.same(v11, { cniVersion: '1.1.0', ...r, ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }, { address: 'fd00::2/64', interface: 0 }] })
  const v10 = encodeResult(r, '1.0.0') as { interfaces: object[]; routes: object[]; ips: object[] }
  t.same(v10.interfaces[0], { name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/var/run/netns/x' }, '1.0.0 drops mtu/socketPath/pciID')
  t.same(v10.routes[0], { dst: '0.0.0.0/0', gw: '10.0.0.1' }, '1.0.0 drops route attributes')
  t.notOk('version' in (v10.ips[0] as object), '1.0.0 has no ips[].version')
  for (const v of ['0.3.0', '0.3.1', '0.4.0'] as const) {
    const old = encodeResult(r, v) as { cniVersion: string; ips: Array<{ version: string }> }
    t.equal(old.cniVersion, v)
    t.same(old.ips.map((i) => i.version), ['4', '6'], `${v} has ips[].version`)
    t.same(parseResult(old), { ...r, interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/var/run/netns/x' }], routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1' }] }, `${v} parses back`)
  }
  t.same(parseResult(v11), r, '1.1.0 round-trips')
  t.same(encodeResult({ ips: [] }, '1.0.0'), { cniVersion: '1.0.0', ips: [] }, 'IPAM result without interfaces, routes or dns')
  t.match(msgOf(() => parseResult({ ips: [{ address: '1.2.3.4/32', interface: 3 }] })), /prevResult.ips\[0\].interface: index 3/)
  t.match(msgOf(() => parseResult({ ips: [{ gateway: '1.2.3.4' }] })), /prevResult.ips\[0\].address: is required/)
  t.equal(codeOf(() => parseResult('x')), CniCode.DECODING_FAILURE)
})
