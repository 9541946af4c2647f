// `nsmctl store export|import`: moves the shared state (services with their policies, endpoints, address
// claims) between backends as one JSON document, so a single-node install on the file store can move to
// etcd or Kubernetes (ARCHITECTURE §12). It talks to the backend directly, not to an agent:
//
//   nsmctl store export --store file --state-dir DIR > state.json
//   nsmctl store import -f state.json --store etcd --etcd-endpoints URL [--etcd-prefix P] [--etcd-ca ...]
//   nsmctl store export --store kubernetes [--kubeconfig F] [--store-namespace NS]
//
// The document: {"nsmCniStore": 1, "from": BACKEND, "services": {name: value}, "endpoints": {...},
// "claims": {...}}, each value in the registry's stored JSON form (the same on every backend). Import
// validates every entry before writing any, skips endpoints whose registration has expired (reported), and
// replaces entries of the same name. A file store is written only under its state dir's lock: an agent
// running on it is refused rather than overwritten. Node records are live state and are not moved.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { DEFAULT_CONFIG, ConfigError, type AgentConfig } from '../config/config.js'
import { checkStoreConfig } from '../config/load.js'
import { parseFlags } from '../config/settings.js'
import { FileStore } from '../registry/store.js'
import { serviceCodec, storedEndpointCodec, timestampMs, type StoredEndpoint, type StoredService } from '../registry/records.js'
import { validateService } from '../registry/validate.js'
import { openSharedStore } from '../store/open.js'
import type { Kv } from '../store/kv.js'
import { UsageError } from './args.js'
import type { Io } from './commands.js'

export const STORE_FLAGS = ['--store', '--state-dir', '--etcd-endpoints', '--etcd-prefix', '--etcd-ca', '--etcd-cert', '--etcd-key', '--store-namespace', '--kubeconfig'] as const

export interface StoreDocument {
  nsmCniStore: 1
  from: string
  services: Record<string, unknown>
  endpoints: Record<string, unknown>
  claims: Record<string, unknown>
}

type Kind = 'services' | 'endpoints' | 'claims'

/** The backend the flags name, checked as the agent checks its own (`--store` is required). */
function backendConfig(flags: ReadonlyMap<string, readonly string[]>): AgentConfig {
  const argv: string[] = []
  for (const f of STORE_FLAGS) for (const v of flags.get(f) ?? []) argv.push(f, v)
  if (!flags.has('--store')) throw new UsageError('store: needs --store file|etcd|kubernetes (and its flags)')
  try {
    const config = { ...DEFAULT_CONFIG, ...parseFlags(argv).overrides }
    checkStoreConfig(config)
    if (config.store === 'file' && !flags.has('--state-dir')) throw new UsageError('store: --store file needs --state-dir DIR')
    return config
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message)
    throw err
  }
}

const fileStores = (stateDir: string) => ({
  services: new FileStore(join(stateDir, 'registry', 'services.json'), serviceCodec),
  endpoints: new FileStore(join(stateDir, 'registry', 'endpoints.json'), storedEndpointCodec),
})

async function openKv(config: AgentConfig, io: Io): Promise<Kv> {
  const kv = await openSharedStore(config, (msg, fields) => io.err(`nsmctl: ${msg} ${JSON.stringify(fields)}\n`))
  if (kv === undefined) throw new Error('store: no shared engine for the file store')
  return kv
}

export async function exportStore(flags: ReadonlyMap<string, readonly string[]>, io: Io): Promise<number> {
  const config = backendConfig(flags)
  const doc: StoreDocument = { nsmCniStore: 1, from: config.store, services: {}, endpoints: {}, claims: {} }
  if (config.store === 'file') {
    const stores = fileStores(config.stateDir)
    for (const [name, s] of await stores.services.load()) doc.services[name] = serviceCodec.toJSON(s)
    for (const [name, e] of await stores.endpoints.load()) doc.endpoints[name] = storedEndpointCodec.toJSON(e)
  } else {
    const kv = await openKv(config, io)
    try {
      for (const kind of ['services', 'endpoints', 'claims'] as const) {
        for (const e of (await kv.list(kind)).entries) doc[kind][e.name] = e.value
      }
    } finally {
      await kv.close()
    }
  }
  io.out(`${JSON.stringify(doc, null, 2)}\n`)
  io.err(`nsmctl: exported ${Object.keys(doc.services).length} services, ${Object.keys(doc.endpoints).length} endpoints, ${Object.keys(doc.claims).length} claims from ${config.store}\n`)
  return 0
}

/** Every entry decoded and checked before anything is written; expired endpoints are left out. */
function readDocument(text: string, file: string, now: number): { services: Map<string, StoredService>; endpoints: Map<string, StoredEndpoint>; claims: Map<string, unknown>; expired: string[] } {
  let doc: Partial<StoreDocument>
  try {
    doc = JSON.parse(text) as Partial<StoreDocument>
  } catch (err) {
    throw new UsageError(`${file}: not JSON (${(err as Error).message})`)
  }
  if (doc === null || typeof doc !== 'object' || doc.nsmCniStore !== 1) throw new UsageError(`${file}: not an nsm-cni store document (nsmCniStore: 1)`)
  const section = (kind: Kind): Record<string, unknown> => {
    const v = doc[kind] ?? {}
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new UsageError(`${file}: ${kind} must be an object of name: value`)
    return v
  }
  const each = <T>(kind: Kind, decode: (name: string, v: unknown) => T): Map<string, T> => {
    const out = new Map<string, T>()
    for (const [name, v] of Object.entries(section(kind))) {
      try {
        if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) throw new Error('not a valid name')
        out.set(name, decode(name, v))
      } catch (err) {
        throw new UsageError(`${file}: ${kind}.${name}: ${(err as Error).message}`)
      }
    }
    return out
  }
  const services = each('services', (name, v) => {
    const s = serviceCodec.fromJSON(v)
    if (s.service.name !== name) throw new Error(`named ${JSON.stringify(s.service.name)}`)
    validateService(s.service)
    return s
  })
  const all = each('endpoints', (name, v) => {
    const e = storedEndpointCodec.fromJSON(v)
    if (e.endpoint.name !== name) throw new Error(`named ${JSON.stringify(e.endpoint.name)}`)
    return e
  })
  const expired = [...all].filter(([, e]) => (timestampMs(e.endpoint.expirationTime) ?? Infinity) <= now).map(([n]) => n)
  for (const n of expired) all.delete(n)
  return { services, endpoints: all, claims: each('claims', (_n, v) => v), expired }
}

export async function importStore(flags: ReadonlyMap<string, readonly string[]>, io: Io): Promise<number> {
  const file = flags.get('--filename')?.[0]
  if (file === undefined) throw new UsageError('store import: needs -f FILE (or -f - for stdin)')
  const config = backendConfig(flags)
  let text: string
  try {
    text = io.readFile(file)
  } catch (err) {
    throw new UsageError(`-f ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  const now = io.now()
  const { services, endpoints, claims, expired } = readDocument(text, file, now)
  if (config.store === 'file') {
    if (claims.size > 0) throw new UsageError(`${file}: ${claims.size} address claims cannot go to the file store (one node keeps its pairs in its connection journal)`)
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 })
    // Loaded only here: the lock goes through koffi (flock), which no other nsmctl command needs.
    const { lockStateDir } = await import('../connections/state-lock.js')
    const lock = lockStateDir(config.stateDir)
    try {
      const stores = fileStores(config.stateDir)
      await stores.services.load()
      await stores.endpoints.load()
      await stores.services.apply([...services], [])
      await stores.endpoints.apply([...endpoints], [])
    } finally {
      lock.release()
    }
  } else {
    const kv = await openKv(config, io)
    try {
      for (const [name, s] of services) await kv.put('services', name, serviceCodec.toJSON(s))
      for (const [name, e] of endpoints) {
        const at = timestampMs(e.endpoint.expirationTime)
        await kv.put('endpoints', name, storedEndpointCodec.toJSON(e), at === undefined ? {} : { ttlMs: Math.max(1000, at - now) })
      }
      for (const [name, c] of claims) await kv.put('claims', name, c)
    } finally {
      await kv.close()
    }
  }
  for (const n of expired) io.err(`nsmctl: endpoint ${n} has expired: not imported\n`)
  io.out(`imported ${services.size} services, ${endpoints.size} endpoints, ${claims.size} claims into ${config.store}\n`)
  return 0
}
