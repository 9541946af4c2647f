// agent/config/: each setting's value checked (and normalised) on its own, for the table of settings
// (settings.ts); every failure a ConfigError that names the flag or file key at fault.
import { isIP } from 'node:net'
import { isAbsolute, normalize } from 'node:path'
import { NetnsPatternError, parseNetnsPattern } from '../../pkg/netns-policy.js'
import { storeDirProblem } from '../../ipam/store/pseudo-fs.js'
import { checkNamespaces, checkPrefixes, checkSelector, type OfferRule } from '../../conf/endpoint-policy.js'
import { ConfError } from '../../conf/errors.js'
import { isValidServiceName } from '../../conf/names.js'
import { memifRootProblem } from '../mechanisms/memif/params.js'
import { ConfigError, type LogFormatSetting, type LogLevel, type StoreBackend } from './config.js'

const STORE_BACKENDS: readonly StoreBackend[] = ['file', 'etcd', 'kubernetes']
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error']
const LOG_FORMATS: readonly LogFormatSetting[] = ['auto', 'json', 'pretty']

export function checkMemifRoot(where: string, v: string): string {
  const problem = memifRootProblem(v)
  if (problem !== undefined) throw new ConfigError(where, problem)
  return v
}

/** A program: 'none', an absolute path, or a plain name looked up on PATH (never a shell word). */
export function checkProgram(where: string, v: string): string {
  if (v === 'none' || (isAbsolute(v) && !v.includes('\0')) || /^[A-Za-z0-9._+-]+$/.test(v)) return v
  throw new ConfigError(where, `${JSON.stringify(v)} is not a program name, an absolute path, or none`)
}

export function checkCpu(where: string, v: string): number {
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

/** HOST:PORT, `[v6]:PORT` for IPv6; port 0 takes a free one. */
export function checkListen(where: string, v: string): string {
  const m = /^(\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v)
  const host = m?.[2] ?? m?.[3]
  const port = Number(m?.[4] ?? 'x')
  const hostOk = host !== undefined && (m?.[2] !== undefined ? isIP(host) === 6 : isIP(host) === 4 || /^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$/.test(host))
  if (!hostOk || !Number.isInteger(port) || port > 65535) throw new ConfigError(where, `"${v}" must be HOST:PORT (an IPv6 address in brackets: [::1]:PORT)`)
  return v
}

export function checkStore(where: string, v: string): StoreBackend {
  const b = STORE_BACKENDS.find((x) => x === v)
  if (b === undefined) throw new ConfigError(where, `must be one of ${STORE_BACKENDS.join(', ')}, got "${v}"`)
  return b
}

export function checkEtcdUrl(where: string, v: string): string {
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

export function checkPrefix(where: string, v: string): string {
  if (!/^\/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$/.test(v) || v.includes('//')) throw new ConfigError(where, `"${v}" must be an absolute key prefix like /nsm (no trailing /)`)
  return v
}

export function checkNamespace(where: string, v: string): string {
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) throw new ConfigError(where, `"${v}" is not a Kubernetes namespace (a DNS-1123 label)`)
  return v
}

export function checkAddress(where: string, v: string): string {
  if (isIP(v) === 0) throw new ConfigError(where, `"${v}" is not an IP address`)
  return v
}

export function checkPeerUrl(where: string, v: string): string {
  const m = /^(tcp|unix):\/\/(.+)$/.exec(v)
  if (m === null) throw new ConfigError(where, `"${v}" must be tcp://host:port or unix:///path`)
  return v
}

export function checkAbsolute(where: string, v: string): string {
  if (!isAbsolute(v)) throw new ConfigError(where, `must be an absolute path, got "${v}"`)
  return normalize(v)
}

/** The state dir: absolute, and not under /proc or /sys (nothing persists there; mkdir spins on /proc). */
export function checkStateDir(where: string, v: string): string {
  const path = checkAbsolute(where, v)
  const problem = storeDirProblem(path)
  if (problem !== undefined) throw new ConfigError(where, problem)
  return path
}

/** A netns pattern the policy can honour (the agent refuses to start on any other: exit 2). */
export function checkPattern(where: string, v: string): string {
  try {
    parseNetnsPattern(v)
  } catch (err) {
    if (err instanceof NetnsPatternError) throw new ConfigError(where, err.message)
    throw err
  }
  return v
}

export function checkNodeName(where: string, v: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v) || v.length > 253) {
    throw new ConfigError(where, `must be a DNS-1123 name, got "${v}"`)
  }
  return v
}

export function checkDuration(where: string, v: string): number {
  const ms = parseDuration(v)
  if (ms === undefined || ms <= 0) throw new ConfigError(where, `must be a positive duration like 30s, 5m or 1h, got "${v}"`)
  return ms
}

export function checkLogLevel(where: string, v: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new ConfigError(where, `must be one of ${LOG_LEVELS.join(', ')}, got "${v}"`)
  return v as LogLevel
}

export function checkLogFormat(where: string, v: string): LogFormatSetting {
  const f = LOG_FORMATS.find((x) => x === v)
  if (f === undefined) throw new ConfigError(where, `must be one of ${LOG_FORMATS.join(', ')}, got "${v}"`)
  return f
}

const RULE_KEYS = ['services', 'namespaces', 'podSelector', 'routes', 'pools']

/**
 * `endpointPolicy`: a list of rules, each `{services: [name|"*"], namespaces: [ns|"*"], podSelector?: {k: v},
 * routes?: [prefix], pools?: [prefix]}` (conf/endpoint-policy.ts).
 */
export function parseEndpointPolicy(where: string, v: unknown): OfferRule[] {
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
export function checkWebAddress(where: string, v: string): string {
  const address = /^\d{1,5}$/.test(v) ? `127.0.0.1:${v}` : v.replace(/^localhost:/, '127.0.0.1:')
  const m = /^(\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address)
  const host = m?.[2] ?? m?.[3] ?? ''
  const port = Number(m?.[4] ?? 'x')
  if (isIP(host) === 0 || (m?.[2] !== undefined) !== (isIP(host) === 6) || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError(where, `"${v}" must be PORT, HOST:PORT or [IPv6]:PORT with HOST an IP address or localhost`)
  }
  return address
}
