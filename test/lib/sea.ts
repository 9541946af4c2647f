// The self-contained plugin executables for tests: dist/sea/<name>, built (or found fresh) by
// scripts/sea.mjs, which keys its cache on the bundle's bytes; the bundle is built first if missing.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'

const ROOT = join(import.meta.dirname, '../..')

export function ensureSea(name: string): string {
  if (!existsSync(join(ROOT, 'dist', name))) {
    const b = spawnSync(process.execPath, ['build.mjs', name], { cwd: ROOT, encoding: 'utf8' })
    if (b.status !== 0) throw new Error(`node build.mjs ${name}: ${b.stderr}`)
  }
  const r = spawnSync(process.execPath, ['scripts/sea.mjs', name], { cwd: ROOT, encoding: 'utf8' })
  const exe = join(ROOT, 'dist/sea', name)
  if (r.status !== 0 || !existsSync(exe)) throw new Error(`node scripts/sea.mjs ${name} (exit ${r.status}): ${r.stderr}`)
  return exe
}
