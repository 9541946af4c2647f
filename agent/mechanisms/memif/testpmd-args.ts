// What the agent hands dpdk-testpmd (./testpmd.ts starts it): a forwarder's command line (memory without
// hugepages, both lcores on one CPU, io forwarding) with the limits behind it, and the checks on the values
// that go into its devargs and commands.
//
// Input that reaches testpmd: socket paths and interface names are part of devargs
// (`key=value,key=value`) and of a command line split on blanks; they are checked against a strict
// allowlist (checkSocketPath, checkIfaceName). Processes are spawned from argv arrays, never a shell.
import { readFileSync } from 'node:fs'
import { isAbsolute, normalize } from 'node:path'
import { AgentError } from '../../errors.js'

/** EAL memory (`-m`, MiB, no hugepages) and mbufs: 16 pairs attached at run time need -m 24 with 2048 mbufs; 32 gives room. */
export const FORWARDER_MEMORY_MB = 32
export const FORWARDER_MBUFS = 2048
/** testpmd's RTE_MAX_ETHPORTS in Debian's build is 32: 16 pairs. */
export const MAX_PAIRS_PER_PROCESS = 16

// ---------------------------------------------------------------------------------------------------
// Input checks

// Devargs are split on ',' and '='; the command line on blanks; '#' starts a comment, '?' and TAB ask
// cmdline for help/completion. An allowlist is the only safe answer.
const SOCKET_PATH = /^\/[A-Za-z0-9._/@+-]+$/
const IFACE_NAME = /^[A-Za-z0-9._@-]{1,15}$/
/** sun_path is 108 bytes with its NUL. */
const SUN_PATH_MAX = 107

/** Throws INVALID_ARGUMENT naming the value unless `path` is an absolute, normalised path testpmd can take. */
export function checkSocketPath(path: string): void {
  const bad = (why: string): never => {
    throw AgentError.invalid('memif socket', `${JSON.stringify(path)} ${why}`)
  }
  if (!isAbsolute(path)) bad('is not an absolute path')
  if (!SOCKET_PATH.test(path)) bad('may contain only letters, digits and . _ / @ + - (no comma, blank or control character: it is passed in testpmd devargs)')
  if (normalize(path) !== path || path.endsWith('/')) bad('is not a normalised file path')
  if (Buffer.byteLength(path) > SUN_PATH_MAX) bad(`is longer than ${SUN_PATH_MAX} bytes (a unix socket path)`)
}

/** Throws INVALID_ARGUMENT naming the value unless `name` is an interface name testpmd can take. */
export function checkIfaceName(name: string): void {
  if (!IFACE_NAME.test(name) || name === '.' || name === '..') {
    throw AgentError.invalid('memif iface', `${JSON.stringify(name)} is not an interface name testpmd can take (1-15 of letters, digits, . _ @ -)`)
  }
}

// ---------------------------------------------------------------------------------------------------
// The command line

/** The last CPU in /sys/devices/system/cpu/online. */
export function lastOnlineCpu(): number {
  try {
    const online = readFileSync('/sys/devices/system/cpu/online', 'utf8').trim()
    const nums = online.split(/[,-]/).map(Number).filter((n) => Number.isInteger(n))
    return nums.length === 0 ? 0 : Math.max(...nums)
  } catch {
    return 0
  }
}

export function testpmdArgs(name: string, cpu: number): string[] {
  return [
    '--no-huge', '-m', String(FORWARDER_MEMORY_MB), '--no-pci', '--no-shconf', '--file-prefix', name, '--lcores', `(0,1)@${cpu}`,
    '--', '-i', '--forward-mode=io', '--port-topology=paired', `--total-num-mbufs=${FORWARDER_MBUFS}`, '--no-mlockall', '--no-flush-rx', '--disable-link-check',
  ]
}
