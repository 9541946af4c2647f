// IP forwarding in a pod's namespace, turned on once per namespace when a datapath routes prefixes through
// it (an endpoint offering routes, a composed client routing its pools back). Namespaces are remembered by
// their cached netlink socket, which pins the namespace, so a new namespace at the same path is a new one.
import { writeSysctl, type NetlinkSessions, type Rtnl } from '../../pkg/netlink/index.js'

/** A function that turns forwarding on (IPv4 and IPv6) in a namespace, once. */
export function forwardingSwitch(sessions: NetlinkSessions): (netns: string) => void {
  const on = new WeakSet<Rtnl>()
  return (netns) => {
    const h = sessions.forNetns(netns)
    if (on.has(h)) return
    writeSysctl(sessions, netns, 'net.ipv4.ip_forward', '1')
    writeSysctl(sessions, netns, 'net.ipv6.conf.all.forwarding', '1')
    on.add(h)
  }
}
