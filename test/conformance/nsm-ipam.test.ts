// The conformance suite against our nsm-ipam: exec'd directly (every check applies and must pass), and
// driven by Debian's reference ptp (checks the ptp binary answers itself may fail, exactly those that
// fail for ptp + host-local too; everything nsm-ipam answers must pass).
import t from 'tap'
import { stageNsmIpam } from './exec'
import { formatTable, runConformance, type Target } from './suite'

const dist = await stageNsmIpam(t)
const cniPath = [dist, '/usr/lib/cni']

/** Checks answered by ptp before it delegates: they fail for ptp + host-local as well (see reference.test.ts). */
const PTP_OWN_FAILURES = new Set(['version-echo', 'err-missing-command', 'err-has-cniversion'])

t.test('nsm-ipam exec\'d directly: every check applies and passes', async (t) => {
  const target: Target = { label: 'nsm-ipam', kind: 'ipam', binary: `${dist}/nsm-ipam`, type: 'nsm-ipam', cniPath }
  const results = await runConformance(target, 23)
  t.comment(formatTable(target, results))
  t.ok(results.length >= 34, `${results.length} checks ran`)
  for (const r of results) t.equal(r.status, 'pass', `${r.id}: ${r.detail}`)
})

t.test('ptp + nsm-ipam: only ptp\'s own shortcomings fail', async (t) => {
  const target: Target = { label: 'ptp + nsm-ipam', kind: 'main', binary: '/usr/lib/cni/ptp', type: 'ptp', ipamType: 'nsm-ipam', cniPath }
  const results = await runConformance(target, 22)
  t.comment(formatTable(target, results))
  for (const r of results) {
    if (PTP_OWN_FAILURES.has(r.id)) t.equal(r.status, 'fail', `${r.id} is answered by ptp itself`)
    else if (r.status === 'n/a') t.match(r.detail, /does not list 1\.1\.0/, `${r.id}: n/a only because ptp speaks up to 1.0.0`)
    else t.equal(r.status, 'pass', `${r.id}: ${r.detail}`)
  }
  // Through ptp, nsm-ipam's refusals reach the runtime: these fail with host-local (reference.test.ts).
  for (const id of ['err-netns-missing', 'err-stdin-10mb', 'err-unknown-cni-args']) {
    t.equal(results.find((r) => r.id === id)?.status, 'pass', `${id} passes with nsm-ipam behind ptp`)
  }
})
