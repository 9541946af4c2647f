// nsm-ipam's start-up: its bundle is shipped with V8's code cache for it, made by a training run. (The nsm
// shim is a few hundred lines: it ships as the plain bundle, see build.mjs.)
//
// Why: a plugin process lives for one call, so every function it runs is compiled on that call. V8
// compiles lazily, function by function, the first time each is called; for the earlier, larger nsm
// plugin that was ~25 % of an ADD's CPU (perf: scanner, parser, bytecode generator). A V8 code
// cache holds the bytecode of every function compiled so far, and a script created with it compiles
// nothing that the cache covers. Node 20 has no compile cache of its own for user code
// (`module.enableCompileCache` is Node 22), and a SEA's `useCodeCache` covers only the top-level function
// (inner functions are compiled lazily, after the cache was taken), so the cache is made here: the bundle
// is run for real, a call after another (VERSION, ADD, CHECK, STATUS, GC, DEL against a data dir), each
// run starting from the cache of the one before and taking
// `script.createCachedData()` as it exits.
//
// The shipped file (dist/<name>) is a small loader with two string literals: SOURCE, the esbuild bundle
// wrapped as a CommonJS function, and CACHE, the code cache in base64, plus the Node version that made
// it. The loader compiles SOURCE with the cache when it runs on that Node version; V8 itself checks the
// cache against its version, flags and the source, and compiles normally when it does not fit (another
// Node, NODE_OPTIONS with V8 flags): slower, never wrong. One file, so the self-contained executables
// (scripts/sea.mjs) take SOURCE and CACHE from it as their assets, with a loader of their own.
// `NSM_CNI_CODE_CACHE=off` ignores the cache (for comparisons), `=report` prints on stderr whether V8
// took it (tests check that it does, for dist/ and dist/sea/).
//
// The cache is kept across builds while SOURCE, the Node version and the training scenario are unchanged, so an
// unchanged bundle gives a byte-identical file (and scripts/sea.mjs keeps its executables).
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
/** Bump when a training scenario changes: caches made by another one are retrained. */
const SCENARIO_VERSION = 1
const say = (msg) => process.stderr.write(`code-cache: ${msg}\n`)

/** The bundle as the loader compiles it: a function of the CommonJS module variables. */
export function wrapSource(bundle) {
  const body = bundle.startsWith('#!') ? bundle.slice(bundle.indexOf('\n') + 1) : bundle
  return `(function (exports, require, module, __filename, __dirname) {${body}\n})`
}

const sha256 = (s) => createHash('sha256').update(s).digest('hex')

/** The loader's tail: compiles SOURCE (with `cachedData` when there is one) and runs it as this module. */
function run(name) {
  return `{
  const mode = process.env.NSM_CNI_CODE_CACHE;
  const cachedData = mode === "off" ? undefined : cache();
  const script = new (require("node:vm").Script)(SOURCE, cachedData === undefined ? { filename: __filename } : { filename: __filename, cachedData });
  if (mode === "report") require("node:fs").writeSync(2, "${name}: code cache " + (cachedData === undefined ? "unused" : script.cachedDataRejected ? "rejected" : "accepted") + "\\n");
  script.runInThisContext()(exports, require, module, __filename, __dirname);
}
`
}

// JSON.stringify keeps non-ASCII characters (they sit in comments esbuild keeps): escaped, the file is
// pure ASCII, which Node reads and V8 scans as one-byte strings (one such character made the whole
// 290 KB file two-byte: ~0.7 ms slower per exec here).
const asciiLiteral = (s) => JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

/** The shipped file: loader + SOURCE + CACHE (base64, may be empty). */
export function compose(name, source, cache) {
  const key = cacheKey(source)
  return `#!/usr/bin/env node
"use strict";
// ${name}: the nsm-cni ${name === 'nsm' ? 'network service mesh' : 'IPAM'} CNI plugin. SOURCE is the bundled plugin (build.mjs); CACHE is V8's
// code cache for it, made by Node ${process.version} in a training run (scripts/code-cache.mjs explains why).
// key ${key}
const SOURCE = ${asciiLiteral(source)};
const CACHE = ${JSON.stringify(cache === undefined ? '' : cache.toString('base64'))};
const CACHE_NODE = ${JSON.stringify(process.version)};
const cache = () => (CACHE !== "" && process.version === CACHE_NODE ? Buffer.from(CACHE, "base64") : undefined);
${run(name)}`
}

/** SOURCE and CACHE of a file made by compose(). */
export function extract(text) {
  const src = /\nconst SOURCE = (".*");\n/.exec(text)
  const cache = /\nconst CACHE = "([A-Za-z0-9+/=]*)";\n/.exec(text)
  const node = /\nconst CACHE_NODE = ("[^"]*");\n/.exec(text)
  if (src === null || cache === null || node === null) throw new Error('not a file made by scripts/code-cache.mjs compose()')
  return { source: JSON.parse(src[1]), cache: Buffer.from(cache[1], 'base64'), node: JSON.parse(node[1]) }
}

/**
 * The main script of a self-contained executable (scripts/sea.mjs): SOURCE and the cache are the SEA's
 * assets `source` and `cache` (the cache read in place, not copied; absent when it was not made by the
 * Node the executable is built from).
 */
export function composeSeaMain(name) {
  return `"use strict";
// ${name}: the nsm-cni CNI plugin as a self-contained executable; the plugin and V8's code cache for it
// are this executable's assets (scripts/code-cache.mjs, scripts/sea.mjs).
const sea = require("node:sea");
const SOURCE = sea.getAsset("source", "utf8");
const cache = () => {
  try {
    return new Uint8Array(sea.getRawAsset("cache"));
  } catch {
    return undefined;
  }
};
${run(name)}`
}

function cacheKey(source) {
  return sha256(`${sha256(source)} ${process.version} ${process.arch} scenario ${SCENARIO_VERSION}`)
}

/** The cache in an already built file, when it was made for this very source, Node and scenario. */
export function reusableCache(file, source) {
  if (!existsSync(file)) return undefined
  const text = readFileSync(file, 'utf8')
  if (!text.includes(`\n// key ${cacheKey(source)}\n`)) return undefined
  const { cache } = extract(text)
  return cache.length === 0 ? undefined : cache
}

// --- training ----------------------------------------------------------------------------------------------

/** One plugin call through the trainer (scripts/code-cache-run.cjs); returns the new cache and stdout. */
function call(sourceFile, filename, cacheIn, cacheOut, env, input) {
  const r = spawnSync(process.execPath, [join(HERE, 'code-cache-run.cjs'), sourceFile, filename, cacheIn ?? '', cacheOut], {
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
    input,
    encoding: 'utf8',
    timeout: 30_000,
  })
  if (r.status === 90) throw new Error(`V8 rejected the cache of the previous call (${r.stderr.trim()})`)
  if (!existsSync(cacheOut)) throw new Error(`${env.CNI_COMMAND}: no cache written (exit ${r.status}, signal ${r.signal}): ${r.stdout} ${r.stderr}`)
  return { stdout: r.stdout, status: r.status }
}

/** Runs `calls` one after another, each from the cache of the one before; returns the last cache. */
function runCalls(work, name, source, filename, calls) {
  const sourceFile = join(work, `${name}.source.js`)
  writeFileSync(sourceFile, source)
  let cache
  let prev = {}
  calls.forEach((c, i) => {
    const out = join(work, `${name}.${i}.cache`)
    const { env, input, expect } = c(prev)
    const r = call(sourceFile, filename, cache, out, env, input)
    if (r.status !== (expect ?? 0)) throw new Error(`${name} ${env.CNI_COMMAND}: exit ${r.status}: ${r.stdout}`)
    prev = { stdout: r.stdout }
    cache = out
  })
  return readFileSync(cache)
}

const cniEnv = (command, extra = {}) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'train0', CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', ...extra })

function trainIpam(work, source, filename) {
  const dataDir = join(work, 'ipam-data')
  const conf = (extra = {}) =>
    JSON.stringify({
      cniVersion: '1.1.0',
      name: 'train',
      type: 'bridge',
      ipam: { type: 'nsm-ipam', ranges: [[{ subnet: '10.250.0.0/24' }], [{ subnet: 'fd25::/64' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
      ...extra,
    })
  return runCalls(work, 'nsm-ipam', source, filename, [
    () => ({ env: cniEnv('VERSION'), input: conf() }),
    () => ({ env: cniEnv('ADD'), input: conf() }),
    (p) => ({ env: cniEnv('CHECK'), input: conf({ prevResult: JSON.parse(p.stdout) }) }),
    () => ({ env: cniEnv('STATUS'), input: conf() }),
    () => ({ env: cniEnv('GC'), input: conf({ 'cni.dev/valid-attachments': [{ containerID: 'other', ifname: 'eth0' }] }) }),
    () => ({ env: cniEnv('DEL'), input: conf() }),
  ])
}

/** Trains the code cache of nsm-ipam (the only plugin shipped with one); undefined for any other. */
export async function trainCache(name, source, filename) {
  if (name !== 'nsm-ipam') return undefined
  const work = mkdtempSync(join(tmpdir(), `nsm-code-cache-${name}-`))
  try {
    return trainIpam(work, source, filename)
  } catch (err) {
    say(`${name} is built without a code cache: training failed: ${err instanceof Error ? err.message : String(err)}`)
    return undefined
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
