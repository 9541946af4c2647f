// agent/config/: every setting in one table (config file key, flag, AgentConfig field, how a value is read)
// and the two readers over it, the flag parser and the YAML config file parser; the --help text.
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { NETNS_PATTERN_FORMS } from '../../pkg/netns-policy.js'
import { ConfigError, DEFAULT_CONFIG, type AgentConfig } from './config.js'
import {
  checkAbsolute,
  checkAddress,
  checkCpu,
  checkDuration,
  checkEtcdUrl,
  checkListen,
  checkLogFormat,
  checkLogLevel,
  checkMemifRoot,
  checkNamespace,
  checkNodeName,
  checkPattern,
  checkPeerUrl,
  checkPrefix,
  checkProgram,
  checkStateDir,
  checkStore,
  checkWebAddress,
  parseEndpointPolicy,
} from './value-checks.js'

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

export type Overrides = Partial<AgentConfig>

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

function str(where: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(where, 'must be a non-empty string')
  return v
}
