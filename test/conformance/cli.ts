// Runs the conformance suite against a named plugin and prints the table of checks.
//
//   npx tsx test/conformance/cli.ts --plugin ptp --ipam host-local          # main plugin + IPAM plugin
//   npx tsx test/conformance/cli.ts --plugin ptp --ipam nsm-ipam
//   npx tsx test/conformance/cli.ts --plugin nsm-ipam --kind ipam           # an IPAM plugin exec'd directly
//
// Plugins are looked up in --cni-path (default: dist/, /usr/lib/cni, /opt/cni/bin). Needs root (it makes
// network namespaces). Exit code 1 when any check fails.
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { formatTable, runConformance, type Target } from './suite'

const { values } = parseArgs({
  options: {
    plugin: { type: 'string' },
    ipam: { type: 'string' },
    kind: { type: 'string' },
    'cni-path': { type: 'string' },
    octet: { type: 'string' },
    only: { type: 'string' },
  },
})
if (values.plugin === undefined) {
  process.stderr.write('usage: cli.ts --plugin <name> [--ipam <name>] [--kind main|ipam] [--cni-path dir:dir] [--octet 0-255] [--only id,id]\n')
  process.exit(2)
}
const cniPath = (values['cni-path'] ?? `${resolve('dist')}:/usr/lib/cni:/opt/cni/bin`).split(':').filter((p) => p !== '')
const find = (name: string): string => {
  if (name.includes('/')) return resolve(name)
  for (const dir of cniPath) if (existsSync(join(dir, name))) return join(dir, name)
  process.stderr.write(`plugin ${name} not found in ${cniPath.join(':')}\n`)
  process.exit(2)
}
const kind = values.kind === 'ipam' ? 'ipam' : values.ipam === undefined ? 'ipam' : 'main'
const type = values.plugin.split('/').pop() as string
const target: Target = {
  label: kind === 'main' ? `${type} + ${values.ipam}` : type,
  kind,
  binary: find(values.plugin),
  type,
  cniPath,
  ...(kind === 'main' ? { ipamType: values.ipam as string } : {}),
}
if (kind === 'main') find(values.ipam as string)
const only = values.only === undefined ? undefined : new Set(values.only.split(','))
const results = await runConformance(target, Number(values.octet ?? 1 + Math.floor(Math.random() * 200)), only === undefined ? undefined : (id) => only.has(id))
process.stdout.write(`${formatTable(target, results)}\n`)
process.exit(results.some((r) => r.status === 'fail') ? 1 : 0)
