// Appends the nsm plugin to the primary CNI conflist (chained mode, ARCHITECTURE §4 step 3). Plain JavaScript:
// it runs with the node of the agent image, no build step. Called by install-cni.sh as
//   node cni-conflist.mjs <conf dir>
// The primary is the first file, in byte order, ending in .conf, .conflist or .json: the one containerd and
// CRI-O load. It must be a .conflist (a single-plugin .conf/.json cannot be chained by editing it).
// Env: NSM_CHAIN_PLUGIN (the entry, JSON object with "type"; default {"type":"nsm"}), NSM_CHAIN_REQUIRED.
// Idempotent: a conflist already holding a plugin of that type is left as it is. The new file is written
// to a hidden temp file (no CNI extension, so no runtime reads it), fsynced, and renamed over the old one.
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'

function fail(msg) {
  process.stderr.write(`install-cni: ${msg}\n`)
  process.exit(1)
}

const dir = process.argv[2]
if (dir === undefined) fail('usage: node cni-conflist.mjs <CNI conf dir>')

let entry
try {
  entry = JSON.parse(process.env.NSM_CHAIN_PLUGIN ?? '{"type":"nsm"}')
} catch (err) {
  fail(`NSM_CHAIN_PLUGIN is not JSON: ${err.message}`)
}
if (typeof entry !== 'object' || entry === null || Array.isArray(entry) || typeof entry.type !== 'string' || entry.type === '') {
  fail('NSM_CHAIN_PLUGIN must be a JSON object with a non-empty string "type"')
}

let names
try {
  names = readdirSync(dir)
} catch (err) {
  fail(`CNI_CONF_DIR ${dir}: ${err.code === 'ENOENT' ? 'does not exist' : err.message}`)
}
const primary = names.filter((n) => /\.(conf|conflist|json)$/.test(n)).sort()[0]
if (primary === undefined) {
  const required = /^(true|1|yes)$/.test(process.env.NSM_CHAIN_REQUIRED ?? '')
  process.stderr.write(`install-cni: no CNI network config in ${dir} yet: nsm not chained${required ? ' (NSM_CHAIN_REQUIRED: failing so that it is retried)' : ''}\n`)
  process.exit(required ? 1 : 0)
}
const path = join(dir, primary)
if (!primary.endsWith('.conflist')) {
  fail(`primary CNI config ${path} is a single-plugin config, not a .conflist: convert it to a conflist, or use nsm through Multus NetworkAttachmentDefinitions instead of chaining`)
}

let conf
try {
  conf = JSON.parse(readFileSync(path, 'utf8'))
} catch (err) {
  fail(`primary conflist ${path} is not valid JSON (left untouched): ${err.message}`)
}
if (typeof conf !== 'object' || conf === null || !Array.isArray(conf.plugins)) {
  fail(`primary conflist ${path}: "plugins" must be an array (left untouched)`)
}
if (conf.plugins.some((p) => typeof p === 'object' && p !== null && p.type === entry.type)) {
  process.stderr.write(`install-cni: ${path} already chains ${entry.type}\n`)
  process.exit(0)
}
conf.plugins.push(entry)

const tmp = join(dir, `.${primary}.nsm-tmp`)
try {
  const fd = openSync(tmp, 'w', statSync(path).mode & 0o777)
  try {
    writeSync(fd, `${JSON.stringify(conf, null, 2)}\n`)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, path)
} catch (err) {
  rmSync(tmp, { force: true })
  fail(`writing ${path}: ${err.message}`)
}
process.stderr.write(`install-cni: appended ${entry.type} to ${path}\n`)
