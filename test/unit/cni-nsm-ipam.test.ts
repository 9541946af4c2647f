// nsm-ipam handlers in-process through pluginMain (the same code path as dist/nsm-ipam, without exec):
// the whole lifecycle, requested addresses and their precedence, GC, STATUS, and every bad input
// answered with the right code while the store on disk stays byte-for-byte the same.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { nsmIpamHandlers } from '../../cni/nsm-ipam/handlers'
import { MAX_STDIN_BYTES } from '../../cni/protocol/main'
import { callInProcess, snapshotTree, type CniCall } from '../conformance/exec'
import { makeNetns } from '../lib/netns'

function setup(t: Test) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-ipam-unit-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const ns = makeNetns(t)
  const conf = (extra: Record<string, unknown> = {}, ipam: Record<string, unknown> = {}) => ({
    cniVersion: '1.1.0',
    name: 'unitnet',
    type: 'ptp',
    ipam: { type: 'nsm-ipam', ranges: [[{ subnet: '10.77.0.0/29' }], [{ subnet: 'fd77::/125' }]], dataDir, ...ipam },
    ...extra,
  })
  const call = (c: Partial<CniCall> & { command: string }) =>
    callInProcess(nsmIpamHandlers, { containerId: 'ctr1', netns: ns.path, ifname: 'eth0', path: '/usr/lib/cni', stdin: conf(), ...c })
  return { dataDir, ns, conf, call }
}

t.test('lifecycle: ADD, ADD again, CHECK, DEL, DEL again', async (t) => {
  const { call, conf } = setup(t)
  const add = await call({ command: 'ADD' })
  t.equal(add.exitCode, 0, add.stdout)
  t.same(add.json, { cniVersion: '1.1.0', ips: [{ address: '10.77.0.2/29', gateway: '10.77.0.1' }, { address: 'fd77::2/125', gateway: 'fd77::1' }] })
  const again = await call({ command: 'ADD' })
  t.equal(again.exitCode, 1)
  t.equal(again.json?.code, 106, 'second ADD for the same container and interface fails')
  t.equal((await call({ command: 'ADD', ifname: 'eth1' })).exitCode, 0, 'another interface of the same container is another attachment')
  const check = await call({ command: 'CHECK', stdin: conf({ prevResult: add.json }) })
  t.equal(check.exitCode, 0, check.stdout)
  t.equal(check.stdout, '', 'CHECK prints nothing on success')
  const wrongPrev = await call({ command: 'CHECK', stdin: conf({ prevResult: { cniVersion: '1.1.0', ips: [{ address: '10.77.0.5/29' }] } }) })
  t.equal(wrongPrev.json?.code, 109, 'CHECK fails when prevResult does not list the reservation')
  t.equal((await call({ command: 'DEL' })).exitCode, 0)
  const del2 = await call({ command: 'DEL', netns: '' })
  t.equal(del2.exitCode, 0, 'DEL again (and without CNI_NETNS) succeeds')
  t.equal(del2.stdout, '')
  t.equal((await call({ command: 'CHECK', stdin: conf({ prevResult: add.json }) })).json?.code, 3, 'CHECK after DEL: container unknown')
  const readd = await call({ command: 'ADD' })
  t.same((readd.json?.ips as Array<{ address: string }>).map((i) => i.address), ['10.77.0.4/29', 'fd77::4/125'], 'round-robin: not the address just released')
})

t.test('results are encoded for the version asked', async (t) => {
  const { call, conf } = setup(t)
  const old = await call({ command: 'ADD', stdin: { ...conf(), cniVersion: '0.3.1' } })
  t.same(old.json, { cniVersion: '0.3.1', ips: [{ version: '4', address: '10.77.0.2/29', gateway: '10.77.0.1' }, { version: '6', address: 'fd77::2/125', gateway: 'fd77::1' }] })
  const listed = await call({ command: 'ADD', ifname: 'eth1', stdin: { ...conf(), cniVersion: undefined, cniVersions: ['0.4.0', '1.0.0'] } })
  t.equal(listed.json?.cniVersion, '1.0.0', 'highest common version of cniVersions')
  const routes = await call({ command: 'ADD', ifname: 'eth2', stdin: conf({}, { routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.77.0.1', priority: 5 }] }) })
  t.same(routes.json?.routes, [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.77.0.1', priority: 5 }])
})

t.test('requested addresses: args.cni.ips > runtimeConfig.ips > CNI_ARGS IP', async (t) => {
  const { call, conf } = setup(t)
  const addrs = (o: { json: Record<string, unknown> | undefined }) => (o.json?.ips as Array<{ address: string }> | undefined)?.map((i) => i.address)
  t.same(addrs(await call({ command: 'ADD', containerId: 'a', args: 'IP=10.77.0.6', stdin: conf({ args: { cni: { ips: ['10.77.0.5', 'fd77::7'] } }, runtimeConfig: { ips: ['10.77.0.4/29'] } }) })), ['10.77.0.5/29', 'fd77::7/125'])
  t.same(addrs(await call({ command: 'ADD', containerId: 'b', args: 'IP=10.77.0.6', stdin: conf({ runtimeConfig: { ips: ['10.77.0.4/29'] } }) })), ['10.77.0.4/29', 'fd77::2/125'])
  t.same(addrs(await call({ command: 'ADD', containerId: 'c', args: 'IgnoreUnknown=1;K8S_POD_NAME=x;FOO=1;IP=10.77.0.6' })), ['10.77.0.6/29', 'fd77::3/125'])
  const taken = await call({ command: 'ADD', containerId: 'd', stdin: conf({ args: { cni: { ips: ['10.77.0.6'] } } }) })
  t.equal(taken.json?.code, 107, 'a requested address held by another attachment')
})

t.test('GC releases what is not valid; STATUS reports exhaustion and an unusable store', async (t) => {
  const { call, conf, dataDir } = setup(t)
  t.equal((await call({ command: 'STATUS', containerId: '', netns: '', ifname: '' })).exitCode, 0)
  for (const id of ['a', 'b', 'c', 'd', 'e']) t.equal((await call({ command: 'ADD', containerId: id })).exitCode, 0)
  const full = await call({ command: 'STATUS', containerId: '', netns: '', ifname: '' })
  t.equal(full.json?.code, 50, 'pool exhausted → 50')
  t.match(full.json?.msg, /range set 0/)
  t.equal((await call({ command: 'ADD', containerId: 'f' })).json?.code, 102, 'ADD on a full pool → 102')
  const gc = await call({ command: 'GC', containerId: '', netns: '', ifname: '', stdin: conf({ 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }, { containerID: 'c', ifname: 'eth0' }] }) })
  t.equal(gc.exitCode, 0, gc.stdout)
  t.equal((await call({ command: 'ADD', containerId: 'a' })).json?.code, 106, 'a kept its reservation')
  t.equal((await call({ command: 'CHECK', containerId: 'b' })).json?.code, 3, 'b was released')
  const gcLegacy = await call({ command: 'GC', containerId: '', netns: '', ifname: '', stdin: conf({ 'cni.dev/attachments': [{ containerID: 'a', ifname: 'eth0' }] }) })
  t.equal(gcLegacy.exitCode, 0)
  t.equal((await call({ command: 'CHECK', containerId: 'c' })).json?.code, 3, 'the older key cni.dev/attachments works too')
  t.equal((await call({ command: 'STATUS' })).exitCode, 0)
  writeFileSync(join(dataDir, 'unitnet', 'FORMAT'), '{"format":"nsm-ipam-file-store","version":2}\n')
  const foreign = await call({ command: 'STATUS' })
  t.equal(foreign.json?.code, 50, 'a store of an unknown format version → 50')
  t.match(foreign.json?.msg, /format version 2 is not supported/)
  t.equal((await call({ command: 'ADD', containerId: 'g' })).json?.code, 108)
})

t.test('bad input: the right code, JSON on stdout, exit 1, nothing changed on disk', async (t) => {
  const { call, conf, dataDir, ns } = setup(t)
  t.equal((await call({ command: 'ADD', containerId: 'existing' })).exitCode, 0, 'a store with one reservation')
  const cases: Array<{ name: string; call: Partial<CniCall> & { command: string }; code: number; msg: RegExp }> = [
    { name: 'malformed JSON', call: { command: 'ADD', stdin: '{"cniVersion": "1.1.0", "name": ' }, code: 6, msg: /not valid JSON/ },
    { name: 'missing CNI_COMMAND', call: { command: '', unset: ['CNI_COMMAND'] }, code: 4, msg: /CNI_COMMAND/ },
    { name: 'unknown CNI_COMMAND', call: { command: 'INIT' }, code: 4, msg: /CNI_COMMAND: unknown command "INIT"/ },
    { name: 'empty CNI_CONTAINERID', call: { command: 'ADD', containerId: '' }, code: 4, msg: /CNI_CONTAINERID/ },
    { name: 'missing CNI_NETNS', call: { command: 'ADD', netns: '' }, code: 4, msg: /CNI_NETNS/ },
    { name: 'missing CNI_IFNAME', call: { command: 'DEL', ifname: '' }, code: 4, msg: /CNI_IFNAME/ },
    { name: 'missing CNI_PATH for CHECK', call: { command: 'CHECK', path: '' }, code: 4, msg: /CNI_PATH/ },
    { name: 'unsupported version', call: { command: 'ADD', stdin: { ...conf(), cniVersion: '0.2.0' } }, code: 1, msg: /cniVersion "0.2.0" is not supported/ },
    { name: 'CHECK before 0.4.0', call: { command: 'CHECK', stdin: { ...conf(), cniVersion: '0.3.1' } }, code: 1, msg: /CHECK needs cniVersion 0.4.0/ },
    { name: 'GC before 1.1.0', call: { command: 'GC', stdin: { ...conf({ 'cni.dev/valid-attachments': [] }), cniVersion: '1.0.0' } }, code: 1, msg: /GC needs cniVersion 1.1.0/ },
    { name: 'STATUS before 1.1.0', call: { command: 'STATUS', stdin: { ...conf(), cniVersion: '1.0.0' } }, code: 1, msg: /STATUS needs/ },
    { name: 'interface name too long', call: { command: 'ADD', ifname: 'a-very-long-name' }, code: 4, msg: /CNI_IFNAME "a-very-long-name" is 16 characters/ },
    { name: 'interface name with /', call: { command: 'ADD', ifname: 'a/b' }, code: 4, msg: /CNI_IFNAME "a\/b"/ },
    { name: 'interface name ..', call: { command: 'ADD', ifname: '..' }, code: 4, msg: /CNI_IFNAME "\.\."/ },
    { name: 'bad container id', call: { command: 'ADD', containerId: '-oops' }, code: 4, msg: /CNI_CONTAINERID "-oops"/ },
    { name: 'netns does not exist', call: { command: 'ADD', netns: `${ns.path}-gone` }, code: 4, msg: /CNI_NETNS ".*-gone" does not exist/ },
    { name: 'netns is not a namespace', call: { command: 'ADD', netns: dataDir }, code: 4, msg: /is not a network namespace/ },
    { name: '10 MB of stdin', call: { command: 'ADD', stdin: conf({ padding: 'x'.repeat(10 * 1024 * 1024) }) }, code: 5, msg: new RegExp(`larger than ${MAX_STDIN_BYTES} bytes`) },
    { name: 'unknown CNI_ARGS', call: { command: 'ADD', args: 'FOO=bar' }, code: 4, msg: /CNI_ARGS: unknown key FOO/ },
    { name: 'missing name', call: { command: 'ADD', stdin: { ...conf(), name: undefined } }, code: 7, msg: /^name: missing/ },
    { name: 'missing ipam', call: { command: 'ADD', stdin: { ...conf(), ipam: undefined } }, code: 7, msg: /^ipam: missing/ },
    { name: 'bad subnet', call: { command: 'ADD', stdin: conf({}, { ranges: [[{ subnet: '10.77.0.0/33' }]] }) }, code: 7, msg: /ipam.ranges\[0\]\[0\].subnet: "10.77.0.0\/33" is not a CIDR/ },
    { name: 'old-style subnet too small', call: { command: 'ADD', stdin: conf({}, { ranges: undefined, subnet: '10.77.0.0/31' }) }, code: 7, msg: /^ipam.subnet: 10.77.0.0\/31 is too small/ },
    { name: 'unknown ipam field', call: { command: 'ADD', stdin: conf({}, { rangestart: '10.77.0.3' }) }, code: 2, msg: /ipam.rangestart: unsupported field \(value "10.77.0.3"\)/ },
    { name: 'bad route', call: { command: 'ADD', stdin: conf({}, { routes: [{ dst: 'default' }] }) }, code: 7, msg: /ipam.routes\[0\].dst: "default" is not a CIDR/ },
    { name: 'bad args.cni.ips', call: { command: 'ADD', stdin: conf({ args: { cni: { ips: ['10.77.0.300'] } } }) }, code: 7, msg: /args.cni.ips\[0\]: "10.77.0.300"/ },
    { name: 'requested address outside the ranges', call: { command: 'ADD', stdin: conf({ args: { cni: { ips: ['10.1.1.1'] } } }) }, code: 7, msg: /10.1.1.1 is not an allocatable address/ },
    { name: 'bad CNI_ARGS IP', call: { command: 'ADD', args: 'IP=banana' }, code: 4, msg: /CNI_ARGS: IP=banana/ },
    { name: 'relative dataDir', call: { command: 'ADD', stdin: conf({}, { dataDir: 'rel' }) }, code: 7, msg: /ipam.dataDir: expected an absolute path/ },
  ]
  for (const c of cases) {
    const before = snapshotTree(dataDir)
    const out = await call(c.call)
    t.equal(out.exitCode, 1, `${c.name}: exit 1`)
    t.equal(out.json?.code, c.code, `${c.name}: code ${c.code} (${out.stdout.slice(0, 200)})`)
    t.match(out.json?.msg, c.msg, `${c.name}: message names the problem`)
    t.equal(out.json?.cniVersion !== undefined, true, `${c.name}: error has cniVersion`)
    t.same(snapshotTree(dataDir), before, `${c.name}: nothing changed on disk`)
  }
  // A store that does not exist yet is not created by a refused call.
  const fresh = join(dataDir, 'fresh')
  const out = await call({ command: 'ADD', args: 'FOO=1', stdin: conf({}, { dataDir: fresh }) })
  t.equal(out.json?.code, 4)
  const outside = await call({ command: 'ADD', stdin: conf({ args: { cni: { ips: ['10.1.1.1'] } } }, { dataDir: fresh }) })
  t.equal(outside.json?.code, 7)
  t.same(snapshotTree(fresh), {}, 'no store directory was created')
  mkdirSync(fresh)
})

t.test('resolvConf: DNS in the ADD result; DEL does not need the file any more', async (t) => {
  const { call, conf, dataDir } = setup(t)
  const resolv = join(dataDir, 'resolv.conf')
  writeFileSync(resolv, '# test\nnameserver 10.77.0.53\nnameserver fd77::53\nsearch a.example b.example\ndomain a.example\noptions ndots:2 edns0\n')
  const add = await call({ command: 'ADD', stdin: conf({}, { resolvConf: resolv }) })
  t.same(add.json?.dns, { nameservers: ['10.77.0.53', 'fd77::53'], search: ['a.example', 'b.example'], domain: 'a.example', options: ['ndots:2', 'edns0'] })
  rmSync(resolv)
  t.equal((await call({ command: 'DEL', stdin: conf({}, { resolvConf: resolv }) })).exitCode, 0, 'DEL succeeds without the file')
  const bad = await call({ command: 'ADD', stdin: conf({}, { resolvConf: resolv }) })
  t.equal(bad.json?.code, 7)
  t.match(bad.json?.msg, /ipam.resolvConf: cannot read .*ENOENT/)
})

t.test('DEL, CHECK and GC on a network never used create no store', async (t) => {
  const { call, conf, dataDir } = setup(t)
  const fresh = join(dataDir, 'never-used')
  t.equal((await call({ command: 'DEL', stdin: conf({}, { dataDir: fresh }) })).exitCode, 0, 'DEL succeeds')
  t.equal((await call({ command: 'CHECK', stdin: conf({}, { dataDir: fresh }) })).json?.code, 3, 'CHECK: container unknown')
  t.equal((await call({ command: 'GC', stdin: conf({ 'cni.dev/valid-attachments': [] }, { dataDir: fresh }) })).exitCode, 0, 'GC succeeds')
  t.same(snapshotTree(fresh), {}, 'nothing was created')
})

t.test('VERSION echoes the asked version and lists ours', async (t) => {
  const { call } = setup(t)
  const v = await call({ command: 'VERSION', stdin: { cniVersion: '0.4.0' } })
  t.same(v.json, { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] })
  const empty = await call({ command: 'VERSION', stdin: '' })
  t.equal(empty.json?.cniVersion, '1.1.0', 'no input: our newest')
})
