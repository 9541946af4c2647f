// The boundaries that keep the design readable, checked on the code itself: nothing under cni/ imports
// from agent/ (the shim and nsm-ipam are exec'd per pod and must not drag the agent in), and the two
// bundles esbuild makes of the CNI plugins contain none of agent/, proto/gen or any npm package. The shim
// needs only node:fs and node:net.
import t from 'tap'
import { build } from 'esbuild'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : []
  })
}

t.test('cni/ imports nothing from agent/', async (t) => {
  const offenders = files(join(ROOT, 'cni')).filter((f) => /from ['"][./]*\/agent\//.test(readFileSync(f, 'utf8'))).map((f) => relative(ROOT, f))
  t.same(offenders, [])
})

for (const [name, builtins] of [
  ['nsm', ['node:fs', 'node:net']],
  ['nsm-ipam', undefined],
] as const) {
  t.test(`the ${name} bundle holds only cni/, conf/ and pkg/codes`, async (t) => {
    const result = await build({ entryPoints: [join(ROOT, `cni/plugins/${name}.ts`)], bundle: true, platform: 'node', format: 'cjs', write: false, metafile: true, logLevel: 'silent' })
    const inputs = Object.keys(result.metafile.inputs)
    t.same(inputs.filter((p) => p.includes('node_modules/')), [], 'no npm package')
    t.same(inputs.filter((p) => !/^(cni|conf|ipam)\//.test(p) && p !== 'pkg/codes.ts'), [], 'nothing from agent/, proto/ or the rest of pkg/')
    if (builtins !== undefined) {
      const imported = new Set(Object.values(result.metafile.inputs).flatMap((i) => i.imports.filter((x) => x.external).map((x) => x.path)))
      t.same([...imported].sort(), [...builtins])
    }
  })
}
