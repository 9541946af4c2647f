// The conformance suite against dist/nsm with a running agent, as a command (the table in NSM.md):
//
//   npx tsx test/conformance/nsm-cli.ts [--octet 31]
//
// Starts dist/nsm-agent on a temporary socket with one endpoint whose pool is the suite's subnet, runs
// every generic check except the three that assert IPAM behaviour through `ipam` fields nsm does not
// read (nsm.test.ts runs nsm's equivalents), prints the table, and removes everything. Needs root.
// Exit code 1 when any check fails.
import { parseArgs } from 'node:util'
import { startMesh, WEB } from '../integration/nsm-fixture'
import { makeNetns } from '../lib/netns'
import { formatTable, runConformance, type Target } from './suite'

const { values } = parseArgs({ options: { octet: { type: 'string' } } })
const octet = Number(values.octet ?? 31)
const cleanups: Array<() => void | Promise<void>> = []
const teardown = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
let failed = true
try {
  const mesh = await startMesh(teardown, { network: 'conformance' })
  const ep = makeNetns(teardown, 'ep')
  await mesh.endpoint({ name: 'conformance-ep', netns: ep.path, pools: [`10.213.${octet}.0/24`] })
  const target: Target = { label: 'nsm (with nsm-agent)', kind: 'main', binary: mesh.binary, type: 'nsm', cniPath: [mesh.binDir], extra: { socket: mesh.socket, networkService: WEB } }
  const replaced = new Set(['gc-removes-stale', 'gc-legacy-key', 'status-exhausted'])
  const results = await runConformance(target, octet, (id) => !replaced.has(id))
  process.stdout.write(`${formatTable(target, results)}\n(replaced by nsm's own checks in nsm.test.ts: ${[...replaced].join(', ')})\n`)
  failed = results.some((r) => r.status === 'fail')
} finally {
  for (const c of cleanups.splice(0).reverse()) await c()
}
process.exit(failed ? 1 : 0)
