// Two ADDs of the same CNI attachment at once, through dist/nsm exec'd as a runtime does (both spawned
// together, ten rounds, attachment and chained mode): exactly one succeeds, the other is 106 naming the
// attachment, the winner's interfaces carry its result's addresses, and after DEL nothing is left (no
// connection in the agent, no link in the pod or the endpoint netns). The agent decides: both calls take
// the attachment's lock (agent/cni/lock.ts), so the second sees the first one's connections.
import t, { type Test } from 'tap'
import { linkAddresses, linkNames, makeNetns } from '../lib/netns'
import { startMesh, WEB } from './nsm-fixture'
import type { CniOutcome } from '../conformance/exec'

const mesh = await startMesh(t, { network: 'race-net' })
const ep = makeNetns(t, 'ep')
await mesh.endpoint({ name: 'web-ep', netns: ep.path, pools: ['172.30.6.0/24'] })

const ROUNDS = 10
const EMPTY_PREV = { cniVersion: '1.1.0', interfaces: [], ips: [] }
const nonLocal = (ns: string, ifname: string): string[] => linkAddresses(ns, ifname).filter((a) => !a.startsWith('fe80'))

/** Splits the two outcomes into the winner and the loser, asserting exactly one of each. */
function oneWins(t: Test, outs: CniOutcome[], round: number): CniOutcome | undefined {
  const ok = outs.filter((o) => o.exitCode === 0)
  const refused = outs.filter((o) => o.json?.code === 106)
  t.equal(ok.length, 1, `round ${round}: exactly one ADD succeeds (${outs.map((o) => o.stdout.trim()).join(' | ')})`)
  t.equal(refused.length, 1, `round ${round}: the other is 106`)
  return ok[0]
}

type IfaceResult = { interfaces?: Array<{ name: string; sandbox?: string }>; ips?: Array<{ address: string; interface?: number }> }

for (const mode of ['attachment', 'chained'] as const) {
  t.test(`${mode} mode: two concurrent ADDs of one attachment, ${ROUNDS} rounds`, async (t) => {
    const ifname = mode === 'attachment' ? 'net1' : 'eth0'
    const args = mode === 'chained' ? 'IgnoreUnknown=1;K8S_POD_NAMESPACE=race;K8S_POD_NAME=racer' : ''
    if (mode === 'chained') mesh.pod('race', 'racer', { annotations: { 'networkservicemesh.io': `kernel://${WEB}, kernel://${WEB}/eth2` } })
    const conf = mode === 'attachment' ? mesh.conf({ networkService: WEB }) : { ...mesh.conf(), prevResult: EMPTY_PREV }
    const ours = mode === 'attachment' ? ['net1'] : ['eth2', 'nsm-1']
    for (let round = 1; round <= ROUNDS; round++) {
      const pod = makeNetns(t, 'p')
      const call = { containerId: `race-${pod.name}`, netns: pod.path, ifname, args, stdin: conf }
      t.teardown(() => mesh.cni({ ...call, command: 'DEL' }).then(() => undefined))
      const outs = await Promise.all([mesh.cni({ ...call, command: 'ADD' }), mesh.cni({ ...call, command: 'ADD' })])
      const winner = oneWins(t, outs, round)
      const loser = outs.find((o) => o !== winner)
      t.match(String(loser?.json?.msg), `container ${call.containerId} interface ${ifname} is already attached to network race-net (connections`, 'the 106 names the attachment')
      t.same(linkNames(pod.name).sort(), ['lo', ...ours].sort(), 'the winner\'s interfaces, once')
      const res = (winner?.json ?? {}) as IfaceResult
      for (const [i, iface] of (res.interfaces ?? []).entries()) {
        const addrs = (res.ips ?? []).filter((a) => a.interface === i).map((a) => a.address)
        t.same(nonLocal(pod.name, iface.name), addrs, `${iface.name} holds the winner's address`)
      }
      t.same(await mesh.connectionIds(), ours.map((n) => `${call.containerId}-${n}`).sort(), 'the agent holds the winner\'s connections')
      const del = await mesh.cni({ ...call, command: 'DEL', stdin: mode === 'chained' ? { ...conf, prevResult: winner?.json } : conf })
      t.equal(del.exitCode, 0, del.stdout)
      t.same(await mesh.connectionIds(), [], 'after DEL: no connection in the agent')
      t.same(linkNames(pod.name), ['lo'], 'after DEL: no link in the pod')
      t.same(linkNames(ep.name), ['lo'], 'after DEL: no link in the endpoint')
    }
  })
}
