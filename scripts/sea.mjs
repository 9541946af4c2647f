// Turns the CNI plugin bundles (dist/nsm, dist/nsm-ipam) into self-contained executables under dist/sea/,
// for hosts with no Node.js (ARCHITECTURE §2): Node's single executable applications.
//
//   node scripts/sea.mjs [--force] [nsm] [nsm-ipam]     (or `node build.mjs --sea`, `npm run build:sea`)
//   node scripts/sea.mjs --from=DIR --out=DIR [--no-code-cache] ...  other bundle and output dirs / no V8
//                                        code cache in the blob (experiments: bench/sea.ts compares the two)
//
// For each bundle that exists: `node --experimental-sea-config` makes the blob (nsm-ipam: a small loader
// as main script, the plugin's SOURCE and its trained V8 code cache from dist/nsm-ipam as the assets
// `source` and `cache`, scripts/code-cache.mjs; the nsm shim: its bundle as the main script; no
// "experimental" warning: stdout/stderr carry the CNI protocol), a copy of
// the running `node` gets the blob injected by postject and its fuse flipped, and the result must answer
// CNI VERSION with an empty environment before it is renamed into dist/sea/<name>. A bundle is pure
// CommonJS with built-ins only, so the SEA's `require` (built-ins only) is enough.
//
// Incremental: dist/sea/.<name>.key holds a hash of the bundle's bytes, the node binary, postject's version
// and the SEA config; a SEA whose key matches is kept (postject needs ~8 s per ~95 MB executable). So
// `node build.mjs` rewriting identical bundles does not force a rebuild. Runs under `flock dist/sea/.lock`
// so that concurrent callers (parallel tests, colleagues) build each executable once.
//
// The executable is the node binary itself (~95 MB; its dynamic libraries: glibc, libstdc++, libgcc_s, as
// `ldd dist/sea/nsm-ipam` lists) plus a blob of some 60 KB (nsm-ipam) to 300 KB (nsm).
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { composeSeaMain, extract } from './code-cache.mjs'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
let DIST = join(ROOT, 'dist')
let OUT = join(DIST, 'sea')
const PLUGINS = ['nsm', 'nsm-ipam']
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'
// The V8 code cache of the bundle in the blob: start-up ~5 ms (10 %) faster here (bench/sea.ts, BENCHMARKS.md).
// It is made by and for this very node binary; V8 run with other flags (NODE_OPTIONS) ignores it and compiles.
const SEA_OPTIONS = { disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: true }

const say = (msg) => process.stderr.write(`sea: ${msg}\n`)

/** Re-runs this script under flock(1) unless it already holds the lock (or flock is missing). */
function underLock(args) {
  if (process.env.NSM_SEA_LOCKED === '1') return undefined
  mkdirSync(OUT, { recursive: true })
  const r = spawnSync('flock', [join(OUT, '.lock'), process.execPath, fileURLToPath(import.meta.url), ...args], {
    stdio: 'inherit',
    env: { ...process.env, NSM_SEA_LOCKED: '1' },
  })
  if (r.error?.code === 'ENOENT') return undefined
  return r.status ?? 1
}

function postjectCli() {
  return createRequire(import.meta.url).resolve('postject/dist/cli.js')
}

function keyOf(bundle) {
  const node = statSync(process.execPath)
  const postjectVersion = JSON.parse(readFileSync(join(dirname(postjectCli()), '../package.json'), 'utf8')).version
  return createHash('sha256')
    .update(bundle)
    .update(composeSeaMain('key'))
    .update(JSON.stringify({ node: process.execPath, version: process.version, size: node.size, mtime: node.mtimeMs, postjectVersion, SEA_OPTIONS }))
    .digest('hex')
}

/** What a runtime would do first: exec with nothing but CNI_COMMAND=VERSION. Throws unless it answers. */
function assertAnswersVersion(exe) {
  const r = spawnSync(exe, [], { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}', encoding: 'utf8', timeout: 30_000 })
  let ok = false
  try {
    ok = r.status === 0 && Array.isArray(JSON.parse(r.stdout).supportedVersions) && r.stderr === ''
  } catch {
    ok = false
  }
  if (!ok) throw new Error(`${exe} does not answer CNI VERSION (exit ${r.status}, signal ${r.signal}): stdout ${JSON.stringify(r.stdout)} stderr ${JSON.stringify(r.stderr)}`)
}

/**
 * Builds dist/sea/<name> for each name whose bundle exists, the stale ones in parallel (one postject
 * process each). Returns the names built or already fresh.
 */
async function buildAll(names, force) {
  mkdirSync(OUT, { recursive: true })
  const jobs = []
  const done = []
  for (const name of names) {
    const src = join(DIST, name)
    if (!existsSync(src)) {
      say(`skipping ${name}: ${src} does not exist (node build.mjs ${name})`)
      continue
    }
    // Read once: a colleague's `node build.mjs` may rewrite dist/<name> meanwhile; the blob and the key
    // are made from these same bytes.
    const bundle = readFileSync(src)
    const key = keyOf(bundle)
    const exe = join(OUT, name)
    const keyFile = join(OUT, `.${name}.key`)
    if (!force && existsSync(exe) && existsSync(keyFile) && readFileSync(keyFile, 'utf8') === key) {
      say(`${name}: up to date`)
      done.push(name)
      continue
    }
    jobs.push(buildOne(name, bundle, key, exe, keyFile).then(() => done.push(name)))
  }
  const results = await Promise.allSettled(jobs)
  const failed = results.filter((r) => r.status === 'rejected')
  for (const f of failed) say(String(f.reason?.message ?? f.reason))
  if (failed.length > 0) throw new Error(`${failed.length} executable(s) failed to build`)
  return done
}

async function buildOne(name, bundle, key, exe, keyFile) {
  const started = Date.now()
  const work = join(OUT, `.build-${name}-${process.pid}`)
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work)
  try {
    // The plugin and its code cache are assets; the main script is a loader (scripts/code-cache.mjs).
    // nsm-ipam is a loader with SOURCE and CACHE (code-cache.mjs): they become assets, with a loader as
    // the main script. The nsm shim is the plain bundle: it is the main script itself (it requires only
    // built-in modules), compiled from the SEA's own code cache.
    const text = bundle.toString('utf8')
    const assets = {}
    if (text.includes('\nconst SOURCE = ')) {
      const { source, cache, node } = extract(text)
      assets.source = join(work, 'source.js')
      writeFileSync(assets.source, source)
      if (cache.length > 0 && node === process.version) {
        assets.cache = join(work, 'cache.bin')
        writeFileSync(assets.cache, cache)
      } else if (cache.length > 0) {
        say(`${name}: the code cache in ${DIST}/${name} is from Node ${node}, this is ${process.version}: built without it`)
      }
      writeFileSync(join(work, 'main.js'), composeSeaMain(name))
    } else {
      writeFileSync(join(work, 'main.js'), text.startsWith('#!') ? text.slice(text.indexOf('\n') + 1) : text)
    }
    writeFileSync(join(work, 'sea-config.json'), JSON.stringify({ main: join(work, 'main.js'), output: join(work, 'blob'), assets, ...SEA_OPTIONS }))
    const blob = spawnSync(process.execPath, ['--experimental-sea-config', join(work, 'sea-config.json')], { encoding: 'utf8' })
    if (blob.status !== 0) throw new Error(`${name}: node --experimental-sea-config failed: ${blob.stderr}`)
    const tmpExe = join(work, name)
    copyFileSync(process.execPath, tmpExe)
    chmodSync(tmpExe, 0o755)
    // postject's CLI in a child of its own: its LIEF (WebAssembly) is CPU-bound, so two run in parallel.
    await new Promise((resolve, reject) => {
      let out = ''
      const child = spawn(process.execPath, [postjectCli(), tmpExe, 'NODE_SEA_BLOB', join(work, 'blob'), '--sentinel-fuse', FUSE], { stdio: ['ignore', 'pipe', 'pipe'] })
      child.stdout.on('data', (d) => (out += d))
      child.stderr.on('data', (d) => (out += d))
      child.on('error', reject)
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${name}: postject exited ${code}: ${out}`))))
    })
    assertAnswersVersion(tmpExe)
    rmSync(keyFile, { force: true })
    renameSync(tmpExe, exe)
    writeFileSync(keyFile, key)
    say(`${name}: built ${exe} (${(statSync(exe).size / 2 ** 20).toFixed(1)} MiB, blob ${statSync(join(work, 'blob')).size} bytes) in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  const force = args.includes('--force')
  const out = args.find((a) => a.startsWith('--out='))
  if (out !== undefined) OUT = resolve(out.slice('--out='.length))
  const from = args.find((a) => a.startsWith('--from='))
  if (from !== undefined) DIST = resolve(from.slice('--from='.length))
  if (args.includes('--no-code-cache')) SEA_OPTIONS.useCodeCache = false
  const unknown = args.filter((a) => a.startsWith('-') && a !== '--force' && a !== '--no-code-cache' && !a.startsWith('--out=') && !a.startsWith('--from='))
  const names = args.filter((a) => !a.startsWith('-'))
  const wrong = names.filter((n) => !PLUGINS.includes(n))
  if (unknown.length > 0 || wrong.length > 0) {
    say(`usage: node scripts/sea.mjs [--force] [--from=DIR] [--out=DIR] [--no-code-cache] [${PLUGINS.join('] [')}] (got ${[...unknown, ...wrong].join(' ')})`)
    process.exit(2)
  }
  const locked = underLock(args)
  if (locked !== undefined) process.exit(locked)
  try {
    await buildAll(names.length > 0 ? names : PLUGINS, force)
  } catch (err) {
    say(err.message)
    process.exit(1)
  }
}
