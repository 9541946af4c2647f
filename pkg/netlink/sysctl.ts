// Network sysctls inside a namespace. /proc/sys/net resolves against the namespace of the thread that
// opens the file, so the open happens inside the namespace (NetlinkSessions.enter, synchronously) and the
// write follows at once.
import { readFileSync, writeFileSync } from 'node:fs'
import { KernelError } from '../errors'
import type { NetlinkSessions } from './sessions'

/** "net.ipv4.ip_forward" or "net/ipv4/conf/eth0/forwarding" -> its /proc/sys path (net.* only). */
export function sysctlPath(key: string): string {
  const parts = key.includes('/') ? key.split('/') : key.split('.')
  if (parts[0] !== 'net' || parts.length < 3 || parts.some((p) => !/^[A-Za-z0-9_\-]+$/.test(p))) {
    throw new KernelError('INVALID_ARGUMENT', `sysctl ${JSON.stringify(key)}: only net.* keys of letters, digits, _ and - are allowed`)
  }
  return `/proc/sys/${parts.join('/')}`
}

function inNetns<T>(sessions: NetlinkSessions, netns: string | undefined, fn: () => T): T {
  return netns === undefined ? fn() : sessions.enter(netns, fn)
}

export function writeSysctl(sessions: NetlinkSessions, netns: string | undefined, key: string, value: string): void {
  const path = sysctlPath(key)
  try {
    inNetns(sessions, netns, () => writeFileSync(path, value))
  } catch (err) {
    if (err instanceof KernelError) throw err
    throw new KernelError('INVALID_ARGUMENT', `sysctl ${key}=${value}${netns === undefined ? '' : ` (netns ${netns})`}: ${(err as Error).message}`, { cause: err })
  }
}

export function readSysctl(sessions: NetlinkSessions, netns: string | undefined, key: string): string {
  const path = sysctlPath(key)
  try {
    return inNetns(sessions, netns, () => readFileSync(path, 'utf8')).trim()
  } catch (err) {
    if (err instanceof KernelError) throw err
    throw new KernelError('INVALID_ARGUMENT', `sysctl ${key}${netns === undefined ? '' : ` (netns ${netns})`}: ${(err as Error).message}`, { cause: err })
  }
}
