// The conformance suite against dist/nsm with a running agent (issue 5 deliverable 7). nsm is a main
// plugin that gets its addresses from the endpoint's pool, not from an IPAM plugin: the suite's `ipam`
// section is ignored (as plugins ignore fields they do not own) and the endpoint's pool is the suite's
// subnet, so the suite's "nothing changed" snapshots and result checks apply as they are.
//
// Every generic check runs and must pass, except the three that assert IPAM behaviour through `ipam`
// fields nsm does not read; they are replaced below by nsm's equivalents, judged on the agent's state:
//   gc-removes-stale, gc-legacy-key  re-request an address with args.cni.ips (an IPAM field) to see it
//                                    held: here the agent's connections and the pod's links are checked
//   status-exhausted                 shrinks the IPAM range: nsm's STATUS is the agent's readiness, so the
//                                    equivalent is STATUS with the agent stopped (50)
import t from 'tap'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { linkNames, makeNetns } from '../lib/netns'
import { startMesh, WEB } from '../integration/nsm-fixture'
import { CHECKS, ConformanceRun, formatTable, runConformance, type CheckResult, type Target } from './suite'

const OCTET = 31
const REPLACED = new Set(['gc-removes-stale', 'gc-legacy-key', 'status-exhausted'])

const mesh = await startMesh(t, { network: 'conformance' })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'conformance-ep', netns: ep.path, pools: [`10.213.${OCTET}.0/24`] })

const target = (): Target => ({
  label: 'nsm (with nsm-agent)',
  kind: 'main',
  binary: mesh.binary,
  type: 'nsm',
  cniPath: [mesh.binDir],
  extra: { socket: mesh.socket, networkService: WEB },
})

t.test('nsm: every applicable generic check passes', async (t) => {
  const results = await runConformance(target(), OCTET, (id) => !REPLACED.has(id))
  t.comment(formatTable(target(), results))
  t.equal(results.length, CHECKS.length - REPLACED.size, `${results.length} checks ran (all but the ${REPLACED.size} replaced)`)
  for (const r of results) t.equal(r.status, 'pass', `${r.id}: ${r.detail}`)
  t.same(await mesh.connectionIds(), [], 'the agent holds no connection after the suite')
  t.same(linkNames(ep.name), ['lo'], 'no endpoint-side link left')
})

t.test('nsm: GC (both keys) closes the unlisted attachment and keeps the listed one', async (t) => {
  const results: CheckResult[] = []
  for (const key of ['cni.dev/valid-attachments', 'cni.dev/attachments']) {
    const run = new ConformanceRun(target(), OCTET)
    t.teardown(() => run.cleanup())
    const a = await run.add('1.1.0')
    const b = await run.add('1.1.0')
    t.equal(a.out.exitCode, 0)
    t.equal(b.out.exitCode, 0)
    const gc = await run.call({ command: 'GC', stdin: { ...run.conf('1.1.0'), [key]: [{ containerID: a.att.containerId, ifname: a.att.ifname }] } })
    t.equal(gc.exitCode, 0, `${key}: ${gc.stdout}`)
    const ids = await mesh.connectionIds()
    t.ok(ids.includes(`${a.att.containerId}-eth0`), `${key}: the listed attachment is kept`)
    t.notOk(ids.includes(`${b.att.containerId}-eth0`), `${key}: the unlisted one is closed`)
    t.same(linkNames(b.att.netnsName), ['lo'], `${key}: its interface is gone`)
    t.ok(linkNames(a.att.netnsName).includes('eth0'))
    results.push({ id: key === 'cni.dev/valid-attachments' ? 'gc-removes-stale' : 'gc-legacy-key', level: 'SHOULD', title: `GC with ${key}`, expect: 'unlisted closed, listed kept', status: 'pass', detail: 'judged on the agent' })
    await run.cleanup()
  }
  t.same(await mesh.connectionIds(), [])
})

t.test('nsm: STATUS answers 50 when the agent is not running', async (t) => {
  const run = new ConformanceRun(target(), OCTET)
  t.teardown(() => run.cleanup())
  const ready = await run.call({ command: 'STATUS', stdin: run.conf('1.1.0') })
  t.equal(ready.exitCode, 0)
  const status = await mesh.agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.ok(status.ready)
  await mesh.agent.stop('SIGTERM')
  const down = await run.call({ command: 'STATUS', stdin: run.conf('1.1.0') })
  t.equal(down.exitCode, 1)
  t.equal(down.json?.code, 50, down.stdout)
})
