// The kernel layer's public surface: per-namespace rtnetlink sockets and the operations over them.
export { NetlinkSessions, Rtnl } from './rtnl'
export * from './links'
export * from './addresses'
export * from './routes'
export * from './sysctl'
export { formatIp, parseIp, parsePrefix, formatPrefix } from './addr'
export type { Scope } from './codec'
export * from './crossconnect'
