// Bundles each binary into one executable file under dist/ with esbuild.
//
// The CNI plugins (nsm, nsm-ipam) run once per pod on hosts that may have no node_modules:
// they are pure JavaScript, and the build fails if anything they import would load a native
// addon (.node), koffi or netlink. The agent and nsmctl keep the native packages external
// (installed dependencies next to dist/).
//
// nsm-ipam is shipped with V8's code cache of its bundle, made by a training run of real calls
// (scripts/code-cache.mjs: why, and how the loader in dist/nsm-ipam uses it); it is skipped while the
// bundle and Node are unchanged. The nsm shim is small enough to ship as the plain bundle: a code cache
// saved nothing measurable there (BENCHMARKS.md).
//
//   node build.mjs [name ...]          bundles all binaries, or the named ones
//   node build.mjs --sea [name ...]    also makes self-contained executables dist/sea/nsm and dist/sea/nsm-ipam
//                                      (Node single executable applications, for hosts without Node.js:
//                                      scripts/sea.mjs; ~95 MB and ~10 s each, kept when the bundle is unchanged).
//                                      `npm run build:sea` is this. deploy/install-cni.sh copies them with
//                                      NSM_DIST_DIR=dist/sea.
import * as esbuild from 'esbuild'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { compose, reusableCache, trainCache, wrapSource } from './scripts/code-cache.mjs'
import { BUNDLE_OPTIONS } from './scripts/bundle-options.mjs'

const NATIVE = ['netlink', 'koffi']

const binaries = [
  { name: 'nsm', entry: 'cni/plugins/nsm.ts', lean: true, codeCache: false },
  { name: 'nsm-ipam', entry: 'cni/plugins/nsm-ipam.ts', lean: true, codeCache: true },
  { name: 'nsm-agent', entry: 'agent/main.ts', lean: false },
  { name: 'nsmctl', entry: 'agent/cli/nsmctl.ts', lean: false },
]

/** Fails the build when a lean bundle would pull in a native addon. */
const forbidNative = {
  name: 'forbid-native',
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      const bare = args.path.split('/')[0]
      if (NATIVE.includes(bare) || args.path.endsWith('.node')) {
        return { errors: [{ text: `${args.path} is native: CNI plugins must stay pure JavaScript (imported from ${args.importer})` }] }
      }
      return undefined
    })
  },
}

const args = process.argv.slice(2)
const sea = args.includes('--sea')
const only = args.filter((a) => a !== '--sea')
mkdirSync('dist', { recursive: true })
// The bundles are CommonJS files without an extension: inside this "type": "module" package Node would
// load them as ES modules ("require is not defined"), so dist/ declares itself CommonJS.
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n')
/** Writes beside the target and renames over it (see below). */
function writeAtomically(target, text) {
  const tmp = `${target}.tmp-${process.pid}`
  writeFileSync(tmp, text, { mode: 0o755 })
  chmodSync(tmp, 0o755)
  renameSync(tmp, target)
}

/**
 * The topology page's browser script (agent/topology/page/app.ts), bundled for the browser and handed to the
 * agent's bundle as a constant (agent/topology/web.ts serves it as /app.js): the page needs nothing else.
 */
async function topologyPageScript() {
  const page = await esbuild.build({ entryPoints: ['agent/topology/page/app.ts'], bundle: true, write: false, platform: 'browser', format: 'iife', target: 'es2022', minify: true, legalComments: 'none', logLevel: 'warning' })
  return page.outputFiles[0].text
}

/** Lean plugins whose code cache is still to be trained: name → wrapped source. */
const untrained = new Map()
for (const b of binaries) {
  if (only.length > 0 && !only.includes(b.name)) continue
  if (!existsSync(b.entry)) {
    console.error(`build: skipping ${b.name}: ${b.entry} does not exist yet`)
    continue
  }
  // Written beside the target and renamed over it: a plugin exec'd while a build runs (tests, a
  // colleague's rebuild) sees the old file or the new one, never a missing or half-written one.
  const target = `dist/${b.name}`
  const result = await esbuild.build({
    ...BUNDLE_OPTIONS,
    entryPoints: [b.entry],
    // The Kubernetes client (~5 MB of source) stays in node_modules too: loaded only with --kubernetes.
    // So does etcd3: it reads its .proto files from its own directory at run time, which no bundle has.
    external: b.lean ? [] : [...NATIVE, '@kubernetes/client-node', 'etcd3'],
    plugins: b.lean ? [forbidNative] : [],
    ...(b.name === 'nsm-agent' ? { define: { __NSM_TOPOLOGY_PAGE_JS__: JSON.stringify(await topologyPageScript()) } } : {}),
  })
  const bundle = result.outputFiles[0].text
  if (!b.codeCache) {
    writeAtomically(target, bundle)
    continue
  }
  const source = wrapSource(bundle)
  const cache = reusableCache(target, source)
  writeAtomically(target, compose(b.name, source, cache))
  if (cache === undefined) untrained.set(b.name, source)
}
for (const [name, source] of untrained) {
  const target = `dist/${name}`
  const cache = await trainCache(name, source, resolve(target))
  if (cache !== undefined) writeAtomically(target, compose(name, source, cache))
}

if (sea) {
  // A child process: scripts/sea.mjs takes a lock (concurrent builders) and skips bundles that do not exist.
  const plugins = binaries.filter((b) => b.lean && (only.length === 0 || only.includes(b.name))).map((b) => b.name)
  if (plugins.length > 0) {
    const r = spawnSync(process.execPath, ['scripts/sea.mjs', ...plugins], { stdio: 'inherit' })
    if (r.status !== 0) process.exit(r.status ?? 1)
  }
}
