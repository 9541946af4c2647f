// agent/config/: the agent's configuration — a YAML file (`--config`) overlaid by command-line flags,
// validated into one typed AgentConfig with errors that name the file, flag and field at fault.
//
// This file: the AgentConfig's fields, their defaults and ConfigError. settings.ts reads flags and the file
// through one table of settings, value-checks.ts checks each value, load.ts merges defaults ← file ← flags
// and checks what spans several settings.
import { hostname } from 'node:os'
import { DEFAULT_NETNS_PATTERNS } from '../../pkg/netns-policy.js'
import type { OfferRule } from '../../conf/endpoint-policy.js'
import { DEFAULT_MEMIF_ROOT } from '../mechanisms/memif/params.js'

export interface AgentConfig {
  /** Unix socket the agent serves on (mode 0600). */
  socket: string
  /** Where the connection table and the registry are persisted. */
  stateDir: string
  /** This node's name: the `nodeName` client label, and which endpoints are local. */
  nodeName: string
  /**
   * Netns path patterns accepted from requests and registrations, each checked at load by the netns policy
   * (pkg/netns-policy.ts): a directory's entries, /proc pid paths, or an exact path.
   */
  netnsAllow: string[]
  /** Lifetime given to endpoint registrations that carry no expiration_time. */
  endpointTtlMs: number
  logLevel: LogLevel
  /** `auto`: readable lines when stdout is a terminal, JSON lines otherwise; or always `json` / `pretty`. */
  logFormat: LogFormatSetting
  /** HOST:PORT the Prometheus metrics are served on (GET /metrics, agent/metrics/); off when undefined. */
  metricsAddress: string | undefined
  /** Pod-info directory (agent/podinfo/directory.ts) for runs without Kubernetes; wins over kubernetes. */
  podInfoDir: string | undefined
  /** Watch this node's pods through the Kubernetes API (in-cluster, or `kubeconfig`). */
  kubernetes: boolean
  kubeconfig: string | undefined
  /**
   * Registration policy rules (conf/endpoint-policy.ts) besides what each NetworkService declares: which
   * pods may offer which services through the endpoint annotation. Config file only.
   */
  endpointPolicy: OfferRule[]
  /**
   * Where the registry (and, with a shared engine, endpoint address claims and node records) lives:
   * `file` (the state dir; one node), `etcd`, or `kubernetes` (custom resources; ARCHITECTURE §12).
   */
  store: StoreBackend
  /** etcd client URLs (`--etcd-endpoints`), required with `store: etcd`. */
  etcdEndpoints: string[]
  etcdPrefix: string
  /** PEM files for etcd over TLS: its CA, and our client certificate and key. */
  etcdCa: string | undefined
  etcdCert: string | undefined
  etcdKey: string | undefined
  /** The namespace of the Kubernetes store's objects. */
  storeNamespace: string
  /** This node's address other nodes reach it on (the VXLAN underlay), written in its node record. */
  underlayAddress: string
  /** The URL other agents reach this one's NSM API on, written in its node record. */
  peerUrl: string
  /** Lifetime of this node's record in a shared store; rewritten every third of it. */
  nodeTtlMs: number
  /**
   * Lifetime of a path segment (token): the endpoint's half of a remote cross-connect is closed when its
   * client's agent has not refreshed it for this long; the client's agent refreshes every third of it.
   */
  tokenLifetimeMs: number
  /**
   * HOST:PORT of the peer listener, the NSM API served to other agents over TCP (agent/peer/); none when
   * undefined. Needs mutual TLS (tlsCert, tlsKey, tlsCa) or, explicitly, `insecure`.
   */
  listen: string | undefined
  /** PEM files for the peer listener and peer calls: this node's certificate and key, and the CA peers chain to. */
  tlsCert: string | undefined
  tlsKey: string | undefined
  tlsCa: string | undefined
  /** The peer listener on plain TCP, peers unauthenticated (their node name is their word). */
  insecure: boolean
  /**
   * HOST:PORT of the live topology page (agent/topology/web.ts); off when undefined. A bare PORT means
   * 127.0.0.1:PORT. Loopback only unless `webPublic`: the page has no authentication.
   */
  webAddress: string | undefined
  /** Allows a webAddress that is not loopback (the page is read-only and holds no secrets, but shows the mesh). */
  webPublic: boolean
  /** Where the SR-IOV mechanism reads PCI devices (`<root>/bus/pci/devices/...`): /sys, or a test's tree. */
  sysfsRoot: string
  /** Where the SR-IOV mechanism writes device-info files (the device-info spec's CNI directory). */
  devinfoDir: string
  /** Where the MEMIF mechanism makes the pods' socket directories (`<root>/<pod uid>/<ifname>.sock`). */
  memifRoot: string
  /** The memif forwarder program (DPDK's testpmd): a name on PATH or an absolute path; 'none' serves no MEMIF. */
  memifForwarder: string
  /** The CPU the memif forwarders poll on; undefined: the last online CPU. */
  memifCpu: number | undefined
}

export type StoreBackend = 'file' | 'etcd' | 'kubernetes'
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFormatSetting = 'auto' | 'json' | 'pretty'

export const DEFAULT_CONFIG: Readonly<AgentConfig> = {
  socket: '/run/nsm/agent.sock',
  stateDir: '/var/lib/nsm-agent',
  nodeName: hostname(),
  netnsAllow: [...DEFAULT_NETNS_PATTERNS],
  endpointTtlMs: 60_000,
  logLevel: 'info',
  logFormat: 'auto',
  metricsAddress: undefined,
  podInfoDir: undefined,
  kubernetes: false,
  kubeconfig: undefined,
  endpointPolicy: [],
  store: 'file',
  etcdEndpoints: [],
  etcdPrefix: '/nsm',
  etcdCa: undefined,
  etcdCert: undefined,
  etcdKey: undefined,
  storeNamespace: 'nsm-system',
  underlayAddress: '',
  peerUrl: '',
  nodeTtlMs: 30_000,
  tokenLifetimeMs: 60_000,
  listen: undefined,
  tlsCert: undefined,
  tlsKey: undefined,
  tlsCa: undefined,
  insecure: false,
  webAddress: undefined,
  webPublic: false,
  sysfsRoot: '/sys',
  devinfoDir: '/var/run/k8s.cni.cncf.io/devinfo/cni',
  memifRoot: DEFAULT_MEMIF_ROOT,
  memifForwarder: 'dpdk-testpmd',
  memifCpu: undefined,
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  constructor(
    /** Where: `--socket`, `config.yaml: netnsAllow[1]`. */
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`)
  }
}
