// agent/config/: the agent's configuration loaded: defaults ← config file ← flags, then the checks that
// span several settings (the store backend's, the peer listener's security, the topology page's address).
import { readFileSync } from 'node:fs'
import { ConfigError, DEFAULT_CONFIG, type AgentConfig } from './config.js'
import { parseConfigFile, parseFlags, type Overrides } from './settings.js'

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
