// Hardening of nsm-ipam (in-process through pluginMain, the same code path as dist/nsm-ipam): Multus'
// repeated CNI_ARGS keys, GC with a null or missing valid-attachments list, resolvConf and dataDir paths
// that would hang or spin, and a full dataDir that must leave no reservation and no claim behind.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { nsmIpamHandlers } from '../../cni/nsm-ipam/handlers'
import { callInProcess, type CniCall } from '../conformance/exec'
import { makeNetns } from '../lib/netns'

/** What Multus sends a delegate: its own keys from the runtime conf, then the keys it received. */
export const MULTUS_ARGS = 'IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u'

function setup(t: Test) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-ipam-hard-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const ns = makeNetns(t)
  const conf = (extra: Record<string, unknown> = {}, ipam: Record<string, unknown> = {}) => ({
    cniVersion: '1.1.0',
    name: 'hardnet',
    type: 'ptp',
    ipam: { type: 'nsm-ipam', ranges: [[{ subnet: '10.78.0.0/29' }]], dataDir, ...ipam },
    ...extra,
  })
  const call = (c: Partial<CniCall> & { command: string }) =>
    callInProcess(nsmIpamHandlers, { containerId: 'ctr1', netns: ns.path, ifname: 'eth0', path: '/usr/lib/cni', stdin: conf(), ...c })
  return { dataDir, ns, conf, call }
}

t.test('Multus CNI_ARGS with every key twice: accepted, the last one wins', async (t) => {
  const { call } = setup(t)
  const add = await call({ command: 'ADD', args: MULTUS_ARGS })
  t.equal(add.exitCode, 0, add.stdout)
  t.same(add.json?.ips, [{ address: '10.78.0.2/29', gateway: '10.78.0.1' }])
  const last = await call({ command: 'ADD', containerId: 'ctr2', args: 'IP=10.78.0.3;IP=10.78.0.5' })
  t.same(last.json?.ips, [{ address: '10.78.0.5/29', gateway: '10.78.0.1' }], 'a repeated key: the last value wins')
  t.equal((await call({ command: 'DEL', args: MULTUS_ARGS })).exitCode, 0)
})

t.test('GC: a null valid-attachments list (libcni\'s nil) and a missing one are the empty list', async (t) => {
  const { call, conf } = setup(t)
  const gcCall = { command: 'GC', containerId: '', netns: '', ifname: '' }
  for (const [label, extra] of [['null', { 'cni.dev/valid-attachments': null }], ['missing', {}], ['null legacy key', { 'cni.dev/attachments': null }]] as const) {
    t.equal((await call({ command: 'ADD', containerId: 'a' })).exitCode, 0)
    const gc = await call({ ...gcCall, stdin: conf(extra) })
    t.equal(gc.exitCode, 0, `${label}: ${gc.stdout}`)
    t.equal((await call({ command: 'CHECK', containerId: 'a' })).json?.code, 3, `${label}: the reservation was released`)
  }
})
