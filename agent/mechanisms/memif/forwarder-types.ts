// The public types of the MEMIF forwarders (./forwarder.ts): a connection's port pair as asked for, its
// state and counters, and the options, log and process report of the pool behind it (./forwarder-pool.ts).
// A module of their own so the forwarder modules share them without importing one another in a circle.
import type { PortCounters } from './testpmd-replies.js'

export interface MemifPort {
  /** The connection id. */
  id: string
  /** Absolute path of the memif socket file (served: a pod's DPDK or VPP client connects to it). */
  socket: string
  /** The kernel interface in the agent's netns the af_packet port sits on. */
  iface: string
}

export interface PortState {
  /** Attached, its socket file exists. */
  served: boolean
  /** The memif link is up: a client is connected. */
  connected: boolean
  pid: number
}

export interface ForwarderLog {
  info(msg: string, f?: object): void
  warn(msg: string, f?: object): void
  error(msg: string, f?: object): void
}

export interface ForwarderOptions {
  /** FIFOs, output and state files (the agent passes <state dir>/memif-fwd). */
  runDir: string
  /** Default 'dpdk-testpmd'. */
  testpmd?: string
  /** The CPU of both lcores; default the last online CPU. */
  cpu?: number
  /** Default 16 (testpmd's limit of 32 ports). */
  pairsPerProcess?: number
  /** Link-state poll period, default 250 ms. */
  pollMs?: number
  /** A process's output file is truncated between commands once it passes this size (default 1 MiB). */
  outputLimitBytes?: number
  log?: ForwarderLog
}

export interface ForwarderStats {
  memif: PortCounters
  kernel: PortCounters
}

export interface ProcessInfo {
  pid: number
  ports: number
  forwarding: boolean
}
