// How a forwarder process is known again (./testpmd.ts starts and adopts them, ./forwarder-pool.ts
// decides what becomes of them): its name and files in the run directory, its state file (the pairs it
// serves), and the processes of a run directory found in /proc.
//
// Identity: a state file per process (pid, start time from /proc/<pid>/stat field 22, file prefix, CPU,
// pairs) written atomically. A process is adopted only when the pid is alive (not a zombie), its start
// time is the recorded one (defends against pid reuse) and its cmdline carries the recorded
// `--file-prefix`. The file prefix starts with a hash of the run directory, so processes of this run
// directory that lost their state file (killed between spawn and the first write) are recognisable.
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync, readdirSync, rmSync } from 'node:fs'
import { join, normalize } from 'node:path'

export const STATE_VERSION = 1

/** One pair of ports: the memif server (the pod's socket) and the af_packet port on a kernel interface. */
export interface PairRecord {
  id: string
  socket: string
  iface: string
  /** Vdev names are net_memif<slot> and net_af_packet<slot> (unique within the process, reusable). */
  slot: number
  memifPort: number
  kernelPort: number
}

export interface ForwarderState {
  version: number
  name: string
  pid: number
  /** /proc/<pid>/stat field 22 (clock ticks since boot): with the pid, the process's identity. */
  startTime: string
  cpu: number
  testpmd: string
  pairs: PairRecord[]
}

export function runDirTag(runDir: string): string {
  return createHash('sha256').update(normalize(runDir)).digest('hex').slice(0, 6)
}

/** A new process name (its DPDK file prefix): nsmfwd-<run dir tag>-<random>. */
export function newForwarderName(runDir: string): string {
  return `nsmfwd-${runDirTag(runDir)}-${randomBytes(3).toString('hex')}`
}

export function forwarderFiles(runDir: string, name: string): { fifo: string; out: string; state: string } {
  return { fifo: join(runDir, `${name}.in`), out: join(runDir, `${name}.out`), state: join(runDir, `${name}.json`) }
}

/** Start time (field 22 of /proc/<pid>/stat), or undefined when the process is gone or a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // comm (field 2) may contain blanks and parentheses: the fields after it follow the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const state = rest[0]
  if (state === 'Z' || state === 'X' || state === 'x') return undefined
  return rest[19]
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
  } catch {
    return []
  }
}

export function hasFilePrefix(argv: string[], name: string): boolean {
  const at = argv.indexOf('--file-prefix')
  return at >= 0 && argv[at + 1] === name
}

/** Running processes whose DPDK file prefix marks them as forwarders of `runDir`: pid -> name. */
export function findForwarderProcesses(runDir: string): Map<number, string> {
  const prefix = `nsmfwd-${runDirTag(runDir)}-`
  const found = new Map<number, string>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const argv = cmdline(Number(entry))
    const at = argv.indexOf('--file-prefix')
    const name = at >= 0 ? argv[at + 1] : undefined
    if (name?.startsWith(prefix) === true && processStartTime(Number(entry)) !== undefined) found.set(Number(entry), name)
  }
  return found
}

export function readForwarderStates(runDir: string): { states: ForwarderState[]; damaged: string[] } {
  const states: ForwarderState[] = []
  const damaged: string[] = []
  let entries: string[]
  try {
    entries = readdirSync(runDir)
  } catch {
    return { states, damaged }
  }
  for (const f of entries) {
    if (!/^nsmfwd-[0-9a-f]+-[0-9a-f]+\.json$/.test(f)) continue
    try {
      const s = JSON.parse(readFileSync(join(runDir, f), 'utf8')) as ForwarderState
      if (s.version !== STATE_VERSION || typeof s.pid !== 'number' || !Array.isArray(s.pairs) || `${s.name}.json` !== f) throw new Error('unexpected content')
      states.push(s)
    } catch {
      damaged.push(join(runDir, f))
    }
  }
  return { states, damaged }
}

/** Removes a process's FIFO, output and state files and its (empty) DPDK runtime directory. */
export function removeForwarderFiles(runDir: string, name: string): void {
  const f = forwarderFiles(runDir, name)
  for (const p of [f.fifo, f.out, f.state]) rmSync(p, { force: true })
  try {
    rmSync(`/var/run/dpdk/${name}`, { recursive: true, force: true })
  } catch {
    // not ours to worry about
  }
}
