// Which directories a store (nsm-ipam's dataDir, the agent's --state-dir) may live in: never under /proc or
// /sys. Those are kernel pseudo filesystems: nothing written there persists, and Node 20's recursive
// mkdirSync loops forever on the ENOENT /proc answers for a missing directory. Judged on the normalized
// path and on the real path of its deepest existing ancestor (a symlink into /proc counts).
import { realpathSync } from 'node:fs'
import { dirname, resolve } from 'node:path'

const PSEUDO_ROOTS = ['/proc', '/sys'] as const

const rootOf = (p: string): string | undefined => PSEUDO_ROOTS.find((r) => p === r || p.startsWith(`${r}/`))

/** The pseudo filesystem (`/proc` or `/sys`) `path` lies in, or undefined. `path` must be absolute. */
export function pseudoFsRoot(path: string): string | undefined {
  let p = resolve(path)
  const direct = rootOf(p)
  if (direct !== undefined) return direct
  for (;;) {
    try {
      return rootOf(realpathSync(p))
    } catch {
      if (p === '/') return undefined
      p = dirname(p)
    }
  }
}

/** Why `path` cannot hold a store, or undefined when it can. */
export function storeDirProblem(path: string): string | undefined {
  const root = pseudoFsRoot(path)
  if (root === undefined) return undefined
  return `${path} is under ${root}, a kernel pseudo filesystem: a store there cannot be created or kept`
}
