// agent/config/: the agent's configuration — a YAML file (`--config`) overlaid by command-line flags,
// validated into one typed AgentConfig with errors that name the file, flag and field at fault.
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { isIP } from 'node:net'
import { isAbsolute, normalize } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { DEFAULT_NETNS_PATTERNS, NETNS_PATTERN_FORMS, NetnsPatternError, parseNetnsPattern } from '../../pkg/netns-policy.js'
import { storeDirProblem } from '../../ipam/store/pseudo-fs.js'
import { checkNamespaces, checkPrefixes, checkSelector, type OfferRule } from '../../conf/endpoint-policy.js'
import { ConfError } from '../../conf/errors.js'
import { isValidServiceName } from '../../conf/names.js'
import { DEFAULT_MEMIF_ROOT, memifRootProblem } from '../mechanisms/memif/params.js'

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
const STORE_BACKENDS: readonly StoreBackend[] = ['file', 'etcd', 'kubernetes']

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error']
export type LogFormatSetting = 'auto' | 'json' | 'pretty'
const LOG_FORMATS: readonly LogFormatSetting[] = ['auto', 'json', 'pretty']

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

export const USAGE = `usage: nsm-agent [--config FILE] [--socket PATH] [--state-dir DIR] [--node-name NAME]
                 [--netns-allow PATTERN]... [--endpoint-ttl DURATION] [--log-level debug|info|warn|error]
                 [--log-format auto|json|pretty] [--metrics-address HOST:PORT]
                 [--pod-info-dir DIR | --kubernetes [--kubeconfig FILE]]
                 [--store file | --store etcd --etcd-endpoints URL[,URL...] [--etcd-prefix P]
                  [--etcd-ca F [--etcd-cert F --etcd-key F]] | --store kubernetes [--store-namespace NS]]
                 [--underlay-address IP] [--peer-url URL] [--node-ttl DURATION] [--token-lifetime DURATION]
                 [--listen HOST:PORT (--tls-cert F --tls-key F --tls-ca F | --insecure)]
                 [--web-address [HOST:]PORT [--web-public]] [--sysfs-root DIR] [--devinfo-dir DIR]
                 [--memif-root DIR] [--memif-forwarder PROGRAM|none] [--memif-cpu N]

The NSM node agent. Flags override the YAML config file (keys: socket, stateDir, nodeName, netnsAllow,
endpointTtl, logLevel, logFormat, metricsAddress, podInfoDir, kubernetes, kubeconfig, endpointPolicy, store, etcdEndpoints, etcdPrefix, etcdCa,
etcdCert, etcdKey, storeNamespace, underlayAddress, peerUrl, nodeTtl, tokenLifetime, listen, tlsCert, tlsKey, tlsCa, insecure, webAddress, webPublic, sysfsRoot, devinfoDir, memifRoot, memifForwarder, memifCpu). --netns-allow may repeat or take a comma list; it replaces the default list
(${DEFAULT_CONFIG.netnsAllow.join(', ')}); a pattern is ${NETNS_PATTERN_FORMS}.
--metrics-address serves Prometheus metrics (GET /metrics); traces go to OTEL_EXPORTER_OTLP_ENDPOINT when it is set.
--listen serves the NSM API to other agents with mutual TLS (a peer is the node named by its certificate's one
DNS subjectAltName, admitted while its node record is live); plain TCP only with --insecure.
--web-address serves the live topology page (read-only) on loopback (a bare PORT is 127.0.0.1:PORT); another
address only with --web-public.
--memif-forwarder is DPDK's testpmd (default dpdk-testpmd on PATH; none: MEMIF is not served); its forwarding
threads run on CPU --memif-cpu (default: the last online CPU).`

function checkMemifRoot(where: string, v: string): string {
  const problem = memifRootProblem(v)
  if (problem !== undefined) throw new ConfigError(where, problem)
  return v
}

/** A program: 'none', an absolute path, or a plain name looked up on PATH (never a shell word). */
function checkProgram(where: string, v: string): string {
  if (v === 'none' || (isAbsolute(v) && !v.includes('\0')) || /^[A-Za-z0-9._+-]+$/.test(v)) return v
  throw new ConfigError(where, `${JSON.stringify(v)} is not a program name, an absolute path, or none`)
}

function checkCpu(where: string, v: string): number {
  if (!/^\d{1,4}$/.test(v)) throw new ConfigError(where, `${JSON.stringify(v)} is not a CPU number`)
  return Number(v)
}

/** Parses `30s`, `5m`, `1h`, `250ms`, or a bare number of seconds, into milliseconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  if (m === null || m[1] === undefined) return undefined
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000
  return Math.round(n * factor)
}

type Overrides = Partial<AgentConfig>

/**
 * One setting: its config file key, the flag (`--` and the key in kebab case), the AgentConfig field it
 * sets, and how a value is read. `text`: a string (a flag's value, a non-empty string in the file);
 * `scalar`: the same, a number also accepted in the file (durations, ports, a CPU); `bool`: a flag without a
 * value, true/false in the file; `list`: a comma list (a flag may repeat), a non-empty list in the file,
 * each element checked as `[i]`. Every flag and key goes through this one table.
 */
interface Setting {
  key: string
  field: keyof AgentConfig
  kind: 'text' | 'scalar' | 'bool' | 'list' | 'file-only'
  /** Checks one value (one element of a list); `where` names the flag or key for its message. */
  check(where: string, v: string): unknown
  /** `list`: what the file's elements are, for its message (`path patterns`). */
  items?: string
  /** file-only: the whole value, as the file has it. */
  fromFile?(where: string, v: unknown): unknown
  /** Set with it when given as a flag (`--kubeconfig` implies `--kubernetes`). */
  implies?: Overrides
}

const text = (key: string, check: Setting['check'], field = key as keyof AgentConfig): Setting => ({ key, field, kind: 'text', check })
const scalar = (key: string, check: Setting['check'], field = key as keyof AgentConfig): Setting => ({ key, field, kind: 'scalar', check })
const bool = (key: string): Setting => ({ key, field: key as keyof AgentConfig, kind: 'bool', check: () => true })
const list = (key: string, check: Setting['check'], items: string): Setting => ({ key, field: key as keyof AgentConfig, kind: 'list', check, items })

const SETTINGS: readonly Setting[] = [
  text('socket', checkAbsolute),
  text('stateDir', checkStateDir),
  text('nodeName', checkNodeName),
  list('netnsAllow', checkPattern, 'path patterns'),
  scalar('endpointTtl', checkDuration, 'endpointTtlMs'),
  text('logLevel', checkLogLevel),
  text('logFormat', checkLogFormat),
  text('metricsAddress', checkListen),
  text('podInfoDir', checkAbsolute),
  bool('kubernetes'),
  { ...text('kubeconfig', checkAbsolute), implies: { kubernetes: true } },
  { key: 'endpointPolicy', field: 'endpointPolicy', kind: 'file-only', check: () => undefined, fromFile: (where, v) => parseEndpointPolicy(where, v) },
  text('store', checkStore),
  list('etcdEndpoints', checkEtcdUrl, 'URLs'),
  text('etcdPrefix', checkPrefix),
  text('etcdCa', checkAbsolute),
  text('etcdCert', checkAbsolute),
  text('etcdKey', checkAbsolute),
  text('storeNamespace', checkNamespace),
  text('underlayAddress', checkAddress),
  text('peerUrl', checkPeerUrl),
  scalar('nodeTtl', checkDuration, 'nodeTtlMs'),
  scalar('tokenLifetime', checkDuration, 'tokenLifetimeMs'),
  text('listen', checkListen),
  text('tlsCert', checkAbsolute),
  text('tlsKey', checkAbsolute),
  text('tlsCa', checkAbsolute),
  bool('insecure'),
  scalar('webAddress', checkWebAddress),
  bool('webPublic'),
  text('sysfsRoot', checkAbsolute),
  text('devinfoDir', checkAbsolute),
  text('memifRoot', checkMemifRoot),
  text('memifForwarder', checkProgram),
  scalar('memifCpu', checkCpu),
]

const KNOWN_KEYS = SETTINGS.map((s) => s.key)
const flagOf = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`
const BY_FLAG = new Map(SETTINGS.filter((s) => s.kind !== 'file-only').map((s) => [flagOf(s.key), s]))
const BY_KEY = new Map(SETTINGS.map((s) => [s.key, s]))

function assign(o: Overrides, field: keyof AgentConfig, v: unknown): void {
  ;(o as Record<string, unknown>)[field] = v
}

/** Parses argv (without node and script) into the config file path and flag overrides. */
export function parseFlags(argv: readonly string[]): { configFile: string | undefined; overrides: Overrides; help: boolean } {
  const overrides: Overrides = {}
  let configFile: string | undefined
  let help = false
  const lists = new Map<Setting, unknown[]>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? ''
    if (arg === '--help' || arg === '-h') {
      help = true
      continue
    }
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    const value = (): string => {
      if (eq > 0) return arg.slice(eq + 1)
      const v = argv[i + 1]
      if (v === undefined || v.startsWith('--')) throw new ConfigError(flag, 'needs a value')
      i += 1
      return v
    }
    if (flag === '--config') {
      configFile = value()
      continue
    }
    const setting = BY_FLAG.get(flag)
    if (setting === undefined) throw new ConfigError(arg, 'unknown flag (see --help)')
    if (setting.kind === 'bool') {
      if (eq > 0) throw new ConfigError(flag, 'takes no value')
      assign(overrides, setting.field, true)
    } else if (setting.kind === 'list') {
      const got = lists.get(setting) ?? []
      const items = value()
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '')
      for (const x of items) got.push(setting.check(setting.key === 'netnsAllow' ? flag : `${flag}[${got.length}]`, x))
      lists.set(setting, got)
    } else assign(overrides, setting.field, setting.check(flag, value()))
    if (setting.implies !== undefined) Object.assign(overrides, setting.implies)
  }
  for (const [setting, values] of lists) if (values.length > 0 || setting.key === 'etcdEndpoints') assign(overrides, setting.field, values)
  return { configFile, overrides, help }
}

/** Reads and validates the YAML config file into overrides. */
export function parseConfigFile(path: string, text = readFileSync(path, 'utf8')): Overrides {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new ConfigError(path, `not valid YAML: ${(err as Error).message.split('\n')[0] ?? ''}`)
  }
  if (doc === null || doc === undefined) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(path, 'must be a mapping')
  const out: Overrides = {}
  for (const [key, v] of Object.entries(doc as Record<string, unknown>)) {
    const where = `${path}: ${key}`
    const setting = BY_KEY.get(key)
    if (setting === undefined) throw new ConfigError(where, `unknown key (known: ${KNOWN_KEYS.join(', ')})`)
    switch (setting.kind) {
      case 'text':
        assign(out, setting.field, setting.check(where, str(where, v)))
        break
      case 'scalar':
        assign(out, setting.field, setting.check(where, typeof v === 'number' ? String(v) : str(where, v)))
        break
      case 'bool':
        if (typeof v !== 'boolean') throw new ConfigError(where, 'must be true or false')
        assign(out, setting.field, v)
        break
      case 'list':
        if (!Array.isArray(v) || v.length === 0) throw new ConfigError(where, `must be a non-empty list of ${setting.items ?? 'values'}`)
        assign(out, setting.field, v.map((x, i) => setting.check(`${where}[${i}]`, str(`${where}[${i}]`, x))))
        break
      case 'file-only':
        assign(out, setting.field, setting.fromFile?.(where, v))
        break
    }
  }
  return out
}

/** Defaults ← config file ← flags. */
export function loadConfig(argv: readonly string[]): { config: AgentConfig; help: boolean } {
  const { configFile, overrides, help } = parseFlags(argv)
  let fromFile: Overrides = {}
  if (configFile !== undefined) {
    let text: string
    try {
      text = readFileSync(configFile, 'utf8')
    } catch (err) {
      throw new ConfigError('--config', `cannot read ${configFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
    fromFile = parseConfigFile(configFile, text)
  }
  const config = { ...DEFAULT_CONFIG, ...fromFile, ...overrides }
  checkStoreConfig(config)
  checkPeerConfig(config)
  checkWebConfig(config)
  return { config, help }
}

/** What one backend needs of the others' settings. */
export function checkStoreConfig(c: AgentConfig): void {
  if (c.store === 'etcd' && c.etcdEndpoints.length === 0) throw new ConfigError('--store etcd', 'needs --etcd-endpoints URL[,URL...] (or etcdEndpoints in the config file)')
  if (c.store !== 'etcd' && c.etcdEndpoints.length > 0) throw new ConfigError('--etcd-endpoints', `is for --store etcd (the store is ${c.store})`)
  if ((c.etcdCert === undefined) !== (c.etcdKey === undefined)) throw new ConfigError('--etcd-cert', 'and --etcd-key go together')
  if (c.etcdCert !== undefined && c.etcdCa === undefined) throw new ConfigError('--etcd-cert', 'needs --etcd-ca (the CA that signed etcd\'s certificate)')
  const tls = c.etcdCa !== undefined
  for (const [i, u] of c.etcdEndpoints.entries()) {
    if (tls !== u.startsWith('https://')) throw new ConfigError(`--etcd-endpoints[${i}]`, tls ? `${u}: with --etcd-ca the URLs are https://` : `${u}: an https:// URL needs --etcd-ca`)
  }
}

/**
 * The peer listener's security: --listen needs all three TLS files or an explicit --insecure (plain TCP is
 * refused otherwise), the TLS files and --insecure exclude each other, and neither means anything without
 * --listen.
 */
export function checkPeerConfig(c: AgentConfig): void {
  const tls: Array<[string, string | undefined]> = [
    ['--tls-cert', c.tlsCert],
    ['--tls-key', c.tlsKey],
    ['--tls-ca', c.tlsCa],
  ]
  const given = tls.filter(([, v]) => v !== undefined).map(([f]) => f)
  const missing = tls.filter(([, v]) => v === undefined).map(([f]) => f)
  if (c.insecure && given.length > 0) throw new ConfigError('--insecure', `excludes ${given.join(', ')}: the peer listener is plain TCP or mutual TLS, not both`)
  if (c.listen === undefined) {
    if (given[0] !== undefined) throw new ConfigError(given[0], 'is for the peer listener: needs --listen HOST:PORT')
    if (c.insecure) throw new ConfigError('--insecure', 'is for the peer listener: needs --listen HOST:PORT')
    return
  }
  if (c.insecure) return
  if (given.length === 0) throw new ConfigError('--listen', 'needs mutual TLS (--tls-cert F --tls-key F --tls-ca F), or --insecure to serve plain TCP without authentication')
  if (missing.length > 0) throw new ConfigError('--listen', `mutual TLS needs ${missing.join(' and ')} too (--tls-cert, --tls-key and --tls-ca go together)`)
}

/** HOST:PORT, `[v6]:PORT` for IPv6; port 0 takes a free one. */
function checkListen(where: string, v: string): string {
  const m = /^(\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v)
  const host = m?.[2] ?? m?.[3]
  const port = Number(m?.[4] ?? 'x')
  const hostOk = host !== undefined && (m?.[2] !== undefined ? isIP(host) === 6 : isIP(host) === 4 || /^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/.test(host))
  if (!hostOk || !Number.isInteger(port) || port > 65535) throw new ConfigError(where, `"${v}" must be HOST:PORT (an IPv6 address in brackets: [::1]:PORT)`)
  return v
}

function checkStore(where: string, v: string): StoreBackend {
  const b = STORE_BACKENDS.find((x) => x === v)
  if (b === undefined) throw new ConfigError(where, `must be one of ${STORE_BACKENDS.join(', ')}, got "${v}"`)
  return b
}

function checkEtcdUrl(where: string, v: string): string {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new ConfigError(where, `"${v}" is not a URL (http://host:port or https://host:port)`)
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '' || u.port === '' || (u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.username !== '') {
    throw new ConfigError(where, `"${v}" must be http://host:port or https://host:port`)
  }
  return `${u.protocol}//${u.host}`
}

function checkPrefix(where: string, v: string): string {
  if (!/^\/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$/.test(v) || v.includes('//')) throw new ConfigError(where, `"${v}" must be an absolute key prefix like /nsm (no trailing /)`)
  return v
}

function checkNamespace(where: string, v: string): string {
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) throw new ConfigError(where, `"${v}" is not a Kubernetes namespace (a DNS-1123 label)`)
  return v
}

function checkAddress(where: string, v: string): string {
  if (isIP(v) === 0) throw new ConfigError(where, `"${v}" is not an IP address`)
  return v
}

function checkPeerUrl(where: string, v: string): string {
  const m = /^(tcp|unix):\/\/(.+)$/.exec(v)
  if (m === null) throw new ConfigError(where, `"${v}" must be tcp://host:port or unix:///path`)
  return v
}

function str(where: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(where, 'must be a non-empty string')
  return v
}

function checkAbsolute(where: string, v: string): string {
  if (!isAbsolute(v)) throw new ConfigError(where, `must be an absolute path, got "${v}"`)
  return normalize(v)
}

/** A netns pattern the policy can honour (the agent refuses to start on any other: exit 2). */
/** The state dir: absolute, and not under /proc or /sys (nothing persists there; mkdir spins on /proc). */
function checkStateDir(where: string, v: string): string {
  const path = checkAbsolute(where, v)
  const problem = storeDirProblem(path)
  if (problem !== undefined) throw new ConfigError(where, problem)
  return path
}

function checkPattern(where: string, v: string): string {
  try {
    parseNetnsPattern(v)
  } catch (err) {
    if (err instanceof NetnsPatternError) throw new ConfigError(where, err.message)
    throw err
  }
  return v
}

function checkNodeName(where: string, v: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v) || v.length > 253) {
    throw new ConfigError(where, `must be a DNS-1123 name, got "${v}"`)
  }
  return v
}

function checkDuration(where: string, v: string): number {
  const ms = parseDuration(v)
  if (ms === undefined || ms <= 0) throw new ConfigError(where, `must be a positive duration like 30s, 5m or 1h, got "${v}"`)
  return ms
}

function checkLogLevel(where: string, v: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new ConfigError(where, `must be one of ${LOG_LEVELS.join(', ')}, got "${v}"`)
  return v as LogLevel
}

function checkLogFormat(where: string, v: string): LogFormatSetting {
  const f = LOG_FORMATS.find((x) => x === v)
  if (f === undefined) throw new ConfigError(where, `must be one of ${LOG_FORMATS.join(', ')}, got "${v}"`)
  return f
}

const RULE_KEYS = ['services', 'namespaces', 'podSelector', 'routes', 'pools']

/**
 * `endpointPolicy`: a list of rules, each `{services: [name|"*"], namespaces: [ns|"*"], podSelector?: {k: v},
 * routes?: [prefix], pools?: [prefix]}` (conf/endpoint-policy.ts).
 */
function parseEndpointPolicy(where: string, v: unknown): OfferRule[] {
  if (!Array.isArray(v)) throw new ConfigError(where, 'must be a list of rules {services, namespaces, podSelector?, routes?, pools?}')
  return v.map((item: unknown, i): OfferRule => {
    const at = `${where}[${i}]`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new ConfigError(at, 'must be a mapping')
    const rule = item as Record<string, unknown>
    for (const k of Object.keys(rule)) if (!RULE_KEYS.includes(k)) throw new ConfigError(`${at}.${k}`, `unknown key (known: ${RULE_KEYS.join(', ')})`)
    const list = (key: string, required: boolean): string[] => {
      const x = rule[key]
      if (x === undefined && !required) return []
      if (!Array.isArray(x) || x.length === 0 || !x.every((e) => typeof e === 'string')) throw new ConfigError(`${at}.${key}`, 'must be a non-empty list of strings')
      return x as string[]
    }
    const services = list('services', true)
    services.forEach((s, j) => {
      if (s !== '*' && !isValidServiceName(s)) throw new ConfigError(`${at}.services[${j}]`, `${JSON.stringify(s)} is not a service name nor "*"`)
    })
    const selector = rule.podSelector ?? {}
    if (selector === null || typeof selector !== 'object' || Array.isArray(selector)) throw new ConfigError(`${at}.podSelector`, 'must be a mapping of labels')
    try {
      return {
        source: `agent config endpointPolicy[${i}]`,
        services,
        namespaces: checkNamespaces(list('namespaces', true), 'namespaces'),
        selector: checkSelector(selector as Record<string, unknown>, 'podSelector'),
        routes: checkPrefixes(list('routes', false), 'routes'),
        pools: checkPrefixes(list('pools', false), 'pools'),
      }
    } catch (err) {
      if (err instanceof ConfError) throw new ConfigError(`${at}.${err.path}`, err.message.slice(err.path.length + 2))
      throw err
    }
  })
}

/** The topology page's address: `PORT` (loopback), `HOST:PORT` or `[v6]:PORT`, HOST an IP address or localhost. */
function checkWebAddress(where: string, v: string): string {
  const address = /^\d{1,5}$/.test(v) ? `127.0.0.1:${v}` : v.replace(/^localhost:/, '127.0.0.1:')
  const m = /^(\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address)
  const host = m?.[2] ?? m?.[3] ?? ''
  const port = Number(m?.[4] ?? 'x')
  if (isIP(host) === 0 || (m?.[2] !== undefined) !== (isIP(host) === 6) || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(where, `"${v}" must be PORT, HOST:PORT or [IPv6]:PORT with HOST an IP address or localhost`)
  }
  return address
}

/** True for 127.0.0.0/8 and ::1 (and ::ffff:127.x). */
export function isLoopback(host: string): boolean {
  return /^(::ffff:)?127\./.test(host) || host === '::1'
}

/** The topology page stays on loopback unless --web-public says otherwise. */
export function checkWebConfig(c: AgentConfig): void {
  if (c.webAddress === undefined) {
    if (c.webPublic) throw new ConfigError('--web-public', 'is for the topology page: needs --web-address')
    return
  }
  const host = c.webAddress.slice(0, c.webAddress.lastIndexOf(':')).replace(/^\[|\]$/g, '')
  if (!isLoopback(host) && !c.webPublic) {
    throw new ConfigError('--web-address', `${c.webAddress} is not a loopback address: the topology page has no authentication; add --web-public to serve it there anyway`)
  }
}
