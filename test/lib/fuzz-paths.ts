// The files the CNI fuzz test (test/integration/hardening-fuzz.test.ts) points CNI_NETNS and nsm-ipam's
// paths at: a temp work dir with nsm-ipam's root and dataDir, a regular file, a directory and a FIFO (also
// under /var/run/netns, which the agent's netns policy allows by pattern), and symlinks a path check could
// miss. All of it is removed at teardown, also when the test fails.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sh, uniqueName } from './netns'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface FuzzPaths {
  work: string
  /** nsm-ipam's root: its dataDir and anywhere a mutated dataDir under the work dir led. */
  ipamRoot: string
  dataDir: string
  plainFile: string
  plainDir: string
  fifo: string
  /** The same three under /var/run/netns. */
  runFile: string
  runDir: string
  runFifo: string
  /** Symlinks: into /proc, to /dev/zero, and one that leads nowhere. */
  toProc: string
  toZero: string
  dangling: string
  /** Everything above that is not under the work dir, and the work dir. */
  made: string[]
  /** Paths a read, an open(2) or a recursive mkdir may block or spin on: calls naming them run first. */
  blocking: string[]
  removeMade(): void
}

/** Makes the fuzz test's files; t.teardown removes them. */
export function makeFuzzPaths(t: Teardown): FuzzPaths {
  const work = mkdtempSync(join(tmpdir(), 'nsm-fuzz-'))
  const ipamRoot = join(work, 'ipam')
  const dataDir = join(ipamRoot, 'data')
  mkdirSync(dataDir, { recursive: true })
  const plainFile = join(work, 'not-a-netns')
  writeFileSync(plainFile, 'x\n')
  const plainDir = join(work, 'a-dir')
  mkdirSync(plainDir)
  const fifo = join(work, 'a-fifo')
  sh('mkfifo', [fifo])
  // The same three under /var/run/netns, which the agent's netns policy allows by pattern.
  mkdirSync('/var/run/netns', { recursive: true })
  const runFile = `/var/run/netns/${uniqueName('ff')}`
  const runDir = `/var/run/netns/${uniqueName('fd')}`
  const runFifo = `/var/run/netns/${uniqueName('fo')}`
  writeFileSync(runFile, '')
  mkdirSync(runDir)
  sh('mkfifo', [runFifo])
  // Symlinks a path check could miss: into /proc, to /dev/zero, and one that leads nowhere.
  const toProc = join(work, 'to-proc')
  sh('ln', ['-s', '/proc', toProc])
  const toZero = join(work, 'to-zero')
  sh('ln', ['-s', '/dev/zero', toZero])
  const dangling = join(work, 'dangling')
  sh('ln', ['-s', join(work, 'nowhere'), dangling])
  const made = [work, runFile, runDir, runFifo]
  const blocking = [fifo, runFifo, '/dev/zero', '/proc/fuzz-nsm', '/proc/sys/net', '/proc/self/', toProc, toZero, dangling]
  const removeMade = (): void => {
    for (const p of made) rmSync(p, { recursive: true, force: true })
  }
  t.teardown(removeMade)
  return { work, ipamRoot, dataDir, plainFile, plainDir, fifo, runFile, runDir, runFifo, toProc, toZero, dangling, made, blocking, removeMade }
}
