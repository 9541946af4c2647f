// TX checksum offload of one interface, through the legacy ethtool ioctl (SIOCETHTOOL, ETHTOOL_STXCSUM),
// called through koffi in the interface's namespace. Why: a veth end whose peer is read by a userspace
// forwarder's AF_PACKET socket hands it TCP/UDP frames with the checksum left for "the hardware" to fill
// in (CHECKSUM_PARTIAL); a forwarder that passes frames on untouched (DPDK's io mode into memif) delivers
// them with a wrong checksum. Turning TX checksum offload off on the sending end makes the kernel fill it
// in. (The ethtool program does the same; this avoids spawning it per connection.)
//
// The socket the ioctl goes through is opened inside the namespace (an ioctl names the interface, and a
// name means something only in the socket's namespace) within NetlinkSessions.enter: synchronous, as
// pkg/netns.ts requires.
import koffi from 'koffi'
import { libcFunction } from './libc'
import { KernelError } from './errors'
import type { NetlinkSessions } from './netlink/index.js'

const AF_INET = 2
const SOCK_DGRAM = 2
const SIOCETHTOOL = 0x8946
const ETHTOOL_GTXCSUM = 0x16
const ETHTOOL_STXCSUM = 0x17
const IFNAMSIZ = 16
/** struct ifreq: the name, then a union whose first member we use is a pointer (ifr_data). */
const IFREQ_SIZE = 40

const calls = (): { socket(domain: number, type: number, protocol: number): number; ioctl(fd: number, request: number, arg: Buffer): number; close(fd: number): number } => ({
  socket: libcFunction('int socket(int domain, int type, int protocol)'),
  ioctl: libcFunction('int ioctl(int fd, unsigned long request, void *arg)'),
  close: libcFunction('int close(int fd)'),
})

/** One ethtool_value command on `ifname` through `fd`; returns the value the kernel left in it. */
function ethtoolValue(fd: number, ifname: string, cmd: number, data: number): number {
  const value = Buffer.alloc(8)
  value.writeUInt32LE(cmd, 0)
  value.writeUInt32LE(data, 4)
  const ifr = Buffer.alloc(IFREQ_SIZE)
  ifr.write(ifname, 0, IFNAMSIZ - 1, 'latin1')
  ifr.writeBigUInt64LE(koffi.address(value), IFNAMSIZ)
  const c = calls()
  if (c.ioctl(fd, SIOCETHTOOL, ifr) !== 0) throw new KernelError('INVALID_ARGUMENT', `ethtool ${cmd === ETHTOOL_STXCSUM ? 'set' : 'get'} tx-checksumming on ${ifname}: errno ${koffi.errno()}`)
  return value.readUInt32LE(4)
}

function inSocket<T>(fn: (fd: number) => T): T {
  const c = calls()
  const fd = c.socket(AF_INET, SOCK_DGRAM, 0)
  if (fd < 0) throw new KernelError('INVALID_ARGUMENT', `socket for an ethtool ioctl: errno ${koffi.errno()}`)
  try {
    return fn(fd)
  } finally {
    c.close(fd)
  }
}

/** Sets TX checksum offload of `ifname` in the namespace at `netns` (policy-checked; undefined: the agent's own). */
export function setTxChecksum(sessions: NetlinkSessions, netns: string | undefined, ifname: string, on: boolean): void {
  const run = (): void => {
    inSocket((fd) => ethtoolValue(fd, ifname, ETHTOOL_STXCSUM, on ? 1 : 0))
  }
  if (netns === undefined) run()
  else sessions.enter(netns, run)
}

/** Whether TX checksum offload is on for `ifname` (see setTxChecksum). */
export function txChecksum(sessions: NetlinkSessions, netns: string | undefined, ifname: string): boolean {
  const run = (): boolean => inSocket((fd) => ethtoolValue(fd, ifname, ETHTOOL_GTXCSUM, 0) !== 0)
  return netns === undefined ? run() : sessions.enter(netns, run)
}
