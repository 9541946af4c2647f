// The state dir's lock: one agent per state dir. Two agents journaling into the same connection table
// and registry files would each overwrite the other's snapshots (acknowledged connections lost, links
// leaked), so the agent takes an exclusive flock(2) on `<stateDir>/lock` before it reads any state, and
// holds it for its whole life.
//
// flock, not a pid file: the kernel releases it when the process dies, however it dies (SIGKILL, OOM),
// so there is no stale-lock detection to get wrong. The holder writes its pid into the file (for the
// refusal message only; the lock itself is the flock). flock(2) through koffi, like setns in pkg/netns.ts.
import koffi from 'koffi'
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { libcFunction } from '../../pkg/libc.js'

const LOCK_EX = 2
const LOCK_NB = 4
const EWOULDBLOCK = 11
const EINTR = 4

function flock(fd: number, op: number): number {
  return libcFunction<(fd: number, op: number) => number>('int flock(int fd, int operation)')(fd, op)
}

/** The state dir is held by another live process. */
export class StateDirLockedError extends Error {
  constructor(
    readonly path: string,
    readonly holder: number | undefined,
  ) {
    super(`${path}: state dir is locked by ${holder === undefined ? 'another process (pid unknown)' : `pid ${holder}`}: one agent per state dir`)
    this.name = 'StateDirLockedError'
  }
}

export interface StateDirLock {
  readonly path: string
  /** Releases the lock (the process exiting does the same). */
  release(): void
}

/**
 * Takes the exclusive lock of `stateDir` (which must exist) without waiting. Throws StateDirLockedError
 * naming the holder's pid when another process holds it, or an Error naming the lock file.
 */
export function lockStateDir(stateDir: string): StateDirLock {
  const path = join(stateDir, 'lock')
  // Not O_TRUNC: the holder's pid must stay readable for the refusal message.
  const fd = openSync(path, 'a+', 0o600)
  let rc: number
  let errno = 0
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB)
    if (rc !== 0) errno = koffi.errno()
  } while (rc !== 0 && errno === EINTR)
  if (rc !== 0) {
    closeSync(fd)
    if (errno === EWOULDBLOCK) throw new StateDirLockedError(path, holderPid(path))
    throw new Error(`${path}: cannot lock the state dir (flock errno ${errno})`)
  }
  try {
    ftruncateSync(fd, 0)
    const text = `${process.pid}\n`
    // O_APPEND: the write lands at the (new) end, offset 0.
    if (writeSync(fd, text) !== Buffer.byteLength(text)) throw new Error('short write')
  } catch (err) {
    closeSync(fd)
    throw new Error(`${path}: cannot record this agent's pid (${(err as Error).message})`, { cause: err })
  }
  let held = true
  return {
    path,
    release: () => {
      if (!held) return
      held = false
      closeSync(fd) // closing the only descriptor of the open file description drops the flock
    },
  }
}

function holderPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}
