// One training call for scripts/code-cache.mjs: runs the wrapped plugin bundle exactly as the shipped
// loader does (vm.Script, the CommonJS variables, the process's own env, stdin and stdout), starting from
// the previous call's code cache, and writes V8's code cache as the plugin exits.
//
//   node code-cache-run.cjs SOURCE_FILE FILENAME CACHE_IN|'' CACHE_OUT     (CNI env and stdin as for a call)
//
// Exit 90: V8 rejected CACHE_IN (it must not: same Node, same flags, same source).
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const vm = require('node:vm')

const [sourceFile, filename, cacheIn, cacheOut] = process.argv.slice(2)
const source = fs.readFileSync(sourceFile, 'utf8')
const cachedData = cacheIn ? fs.readFileSync(cacheIn) : undefined
const script = new vm.Script(source, cachedData === undefined ? { filename } : { filename, cachedData })
if (cachedData !== undefined && script.cachedDataRejected) {
  fs.writeSync(2, `code-cache-run: V8 rejected ${cacheIn}\n`)
  process.exit(90)
}
// Every plugin call ends in process.exit (cni/protocol/main.ts runPlugin): take the cache there, after
// the call ran, so that it holds every function the call compiled.
const exit = process.exit.bind(process)
process.exit = (code) => {
  fs.writeFileSync(cacheOut, script.createCachedData())
  exit(code)
}
const mod = { exports: {} }
script.runInThisContext()(mod.exports, require, mod, filename, path.dirname(filename))
