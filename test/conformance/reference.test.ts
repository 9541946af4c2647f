// The conformance suite against Debian's reference ptp + host-local (containernetworking-plugins 1.1.1,
// spec up to 1.0.0): proves the suite passes a correct plugin where it is correct and catches where it
// falls short. The expected outcome of every check is recorded here and in REFERENCE.md.
import t from 'tap'
import { formatTable, runConformance, type Status, type Target } from './suite'

export const REFERENCE_EXPECTED: Record<string, Status> = {
  'version-reply': 'pass',
  'version-echo': 'fail', // replies "1.0.0" whatever was asked
  'result-0.3.0': 'pass',
  'result-0.3.1': 'pass',
  'result-0.4.0': 'pass',
  'result-1.0.0': 'pass',
  'result-1.1.0': 'n/a',
  'add-twice': 'pass',
  'check-after-add': 'pass',
  'del-twice': 'pass',
  'del-netns-gone': 'pass',
  'del-no-netns': 'pass',
  'gc-removes-stale': 'n/a', // no GC before spec 1.1.0: the leak after a reboot stays
  'gc-legacy-key': 'n/a',
  'status-ready': 'n/a',
  'status-exhausted': 'n/a',
  'gc-below-1.1': 'n/a',
  'err-malformed-json': 'pass',
  'err-missing-command': 'fail', // prints its "about" text on stderr and exits 0
  'err-empty-containerid': 'pass',
  'err-missing-netns': 'pass',
  'err-missing-ifname': 'pass',
  'err-del-missing-ifname': 'pass',
  'err-check-missing-path': 'pass',
  'err-gc-missing-path': 'n/a',
  'err-unsupported-version': 'pass',
  'err-check-below-0.4': 'pass',
  'err-ifname-too-long': 'pass',
  'err-ifname-slash': 'pass',
  'err-bad-containerid': 'pass',
  'err-netns-missing': 'fail', // host-local allocates before ptp opens the netns: last_reserved_ip changes
  'err-stdin-10mb': 'fail', // accepted (and an attachment made)
  'err-unknown-cni-args': 'fail', // refused, but with code 999 (internal), not 4
  'err-has-cniversion': 'fail', // error JSON without cniVersion
}

t.test('reference ptp + host-local: the recorded outcome of every check', async (t) => {
  const target: Target = { label: 'ptp + host-local', kind: 'main', binary: '/usr/lib/cni/ptp', type: 'ptp', ipamType: 'host-local', cniPath: ['/usr/lib/cni'] }
  const results = await runConformance(target, 21)
  t.comment(formatTable(target, results))
  t.same(results.map((r) => r.id).sort(), Object.keys(REFERENCE_EXPECTED).sort(), 'the same checks as recorded')
  for (const r of results) t.equal(r.status, REFERENCE_EXPECTED[r.id], `${r.id}: ${r.detail}`)
})

t.test('reference host-local exec\'d directly', async (t) => {
  const target: Target = { label: 'host-local', kind: 'ipam', binary: '/usr/lib/cni/host-local', type: 'host-local', cniPath: ['/usr/lib/cni'] }
  const results = await runConformance(target, 24)
  t.comment(formatTable(target, results))
  const failed = results.filter((r) => r.status === 'fail').map((r) => r.id).sort()
  // An IPAM plugin never opens the netns, so host-local cannot notice a missing one.
  t.same(failed, ['err-has-cniversion', 'err-missing-command', 'err-netns-missing', 'err-stdin-10mb', 'err-unknown-cni-args', 'version-echo'])
})
