// The CNI binaries stay lean (issue 2): dist/nsm and dist/nsm-ipam are single files that run from a
// directory with no node_modules anywhere above it, so they cannot load a package or a native addon;
// their code names no native module. The agent keeps netlink and koffi external.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { extract } from '../../scripts/code-cache.mjs'

const ROOT = resolve(import.meta.dirname, '../..')

for (const name of ['nsm', 'nsm-ipam']) {
  t.test(`dist/${name} is one self-sufficient file with no native addon`, async (t) => {
    const bin = join(ROOT, 'dist', name)
    t.ok(existsSync(bin), `${bin} exists (npm run build)`)
    const file = readFileSync(bin, 'utf8')
    t.ok(file.startsWith('#!/usr/bin/env node'), 'has a node shebang')
    t.notOk(/[^\x00-\x7f]/.test(file), 'is pure ASCII (read and scanned as one-byte text)')
    // nsm-ipam's code is the SOURCE literal its loader compiles (scripts/code-cache.mjs); the nsm shim is
    // the plain bundle.
    const text = name === 'nsm' ? file : extract(file).source
    if (name !== 'nsm') t.match(text, /^\(function \(exports, require, module, __filename, __dirname\) \{/, 'carries its bundle as SOURCE')
    for (const native of ['koffi', 'netlink', '.node"', '@grpc/grpc-js', 'node:http2']) {
      t.notOk(new RegExp(`require\\(["'][^"']*${native.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`).test(text), `does not require ${native}`)
    }
    const dir = mkdtempSync(join(tmpdir(), 'nsm-bundle-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    copyFileSync(bin, join(dir, name))
    // A package require would fail here: nothing above /tmp/<dir> has node_modules.
    const r = spawnSync(process.execPath, [join(dir, name)], { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.1.0"}', encoding: 'utf8' })
    t.equal(r.status, 0, r.stderr)
    const out = JSON.parse(r.stdout) as { cniVersion: string; supportedVersions: string[] }
    t.ok(out.supportedVersions.includes('1.1.0'))
  })
}

t.test('dist/nsm-agent keeps netlink and koffi external', async (t) => {
  const text = readFileSync(join(ROOT, 'dist/nsm-agent'), 'utf8')
  t.match(text, /require\("netlink"\)/)
  t.match(text, /require\("koffi"\)/)
})
