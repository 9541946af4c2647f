// agent/registry/: the embedded NSM registry — network services and endpoints (plus our per-endpoint
// extension: netns, pools, routes offered), kept in memory over a Store and published as events.
//
// Contract:
// - Register validates everything first (validate.ts) and stores nothing on failure; a refresh (same name)
//   keeps initial_registration_time and, when no new extension is given, the stored extension.
// - Endpoints expire at expiration_time (default: now + defaultTtlMs). An expired endpoint is removed
//   from the store and announced with reason 'expired'; Find never returns it.
// - Mutations are serialized; events are emitted in mutation order after the store accepted the change.
//   Healing subscribes here: an endpoint `delete` event (reason 'unregistered' | 'expired') means its
//   connections must be reselected.
// The records as stored, their codecs and load checks are records.ts; how Find compares, find-query.ts.
import type { NetworkService, NetworkServiceEndpoint } from '../../proto/gen/registry/registry.js'
import { EndpointExtension, type ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'
import type { NetworkService as ConfNetworkService } from '../../conf/networkservice.js'
import type { Store } from './store.js'
import { netnsFromUrl, validateEndpoint, validateExtension, validatePolicy, validateService } from './validate.js'
import { checkStoredEndpoint, checkStoredService, isExpired, serviceCodec, storedEndpointCodec, timestampMs, timestampOf, type StoredEndpoint, type StoredService } from './records.js'
import { byName, endpointMatches, serviceMatches } from './find-query.js'
import { AgentError } from '../errors.js'
import { NetnsPolicy } from '../../pkg/netns-policy.js'

export type EndpointChangeReason = 'registered' | 'refreshed' | 'unregistered' | 'expired'

export type RegistryEvent =
  | { readonly kind: 'service'; readonly type: 'update' | 'delete'; readonly service: NetworkService }
  | {
      readonly kind: 'endpoint'
      readonly type: 'update' | 'delete'
      readonly endpoint: NetworkServiceEndpoint
      readonly extension: EndpointExtension
      readonly reason: EndpointChangeReason
    }

export type RegistryListener = (event: RegistryEvent) => void

export interface RegistryOptions {
  services: Store<StoredService>
  endpoints: Store<StoredEndpoint>
  /** The netns policy endpoint urls and netns paths must pass (or its patterns: pkg/netns-policy.ts). */
  netnsAllow: NetnsPolicy | readonly string[]
  /** Lifetime of an endpoint registered without expiration_time. */
  defaultTtlMs: number
  now?: () => number
  onListenerError?: (err: unknown) => void
  /**
   * Shared stores (agent/store/): this agent's node, written into every endpoint registered here without
   * one (extension.node_name), so every agent knows where it lives.
   */
  nodeName?: string
  /** A shared store's watch lost the engine or got it back. */
  onStoreState?: (store: 'services' | 'endpoints', state: 'down' | 'up', reason?: string) => void
}

export class Registry {
  private readonly services = new Map<string, { message: NetworkService; parsed: ConfNetworkService; policy: ServicePolicy | undefined }>()
  private readonly endpoints = new Map<string, StoredEndpoint>()
  private readonly listeners = new Set<RegistryListener>()
  private readonly now: () => number
  private queue: Promise<unknown> = Promise.resolve()
  private timer: NodeJS.Timeout | undefined
  private closed = false
  private readonly unwatch: Array<() => void> = []
  private readonly netns: NetnsPolicy

  private constructor(private readonly opts: RegistryOptions) {
    this.now = opts.now ?? Date.now
    this.netns = NetnsPolicy.from(opts.netnsAllow)
  }

  /**
   * Loads both stores; entries that expired while the agent was down are dropped (and deleted). A stored
   * record that is not valid (a name the API would refuse, a key that is not its name) is dropped by
   * its store, which reports the damage (store.ts).
   */
  static async open(opts: RegistryOptions): Promise<Registry> {
    const r = new Registry(opts)
    const services = await opts.services.load(checkStoredService)
    for (const [name, s] of services) r.services.set(name, { message: s.service, parsed: validateService(s.service), policy: s.policy })
    const endpoints = await opts.endpoints.load(checkStoredEndpoint)
    for (const [name, stored] of endpoints) r.endpoints.set(name, stored)
    r.watchStores()
    await r.sweep()
    return r
  }

  /**
   * Shared stores: others' registrations (and the engine's expiries) come in here and are announced like
   * local ones. Each change is applied in the mutation queue, after any local write in flight, and only
   * when it differs from the view: the echo of the agent's own write changes nothing.
   */
  private watchStores(): void {
    const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b)
    const { services, endpoints } = this.opts
    if (endpoints.watch !== undefined) {
      const putEndpoint = (name: string, e: StoredEndpoint): void => {
        const previous = this.endpoints.get(name)
        if (previous !== undefined && same(storedEndpointCodec.toJSON(previous), storedEndpointCodec.toJSON(e))) return
        this.endpoints.set(name, e)
        this.emit({ kind: 'endpoint', type: 'update', ...e, reason: previous === undefined ? 'registered' : 'refreshed' })
      }
      const dropEndpoint = (name: string): void => {
        const existing = this.endpoints.get(name)
        if (existing === undefined) return
        this.endpoints.delete(name)
        this.emit({ kind: 'endpoint', type: 'delete', ...existing, reason: isExpired(existing, this.now()) ? 'expired' : 'unregistered' })
      }
      this.unwatch.push(
        endpoints.watch({
          onPut: (name, e) => void this.serialize(async () => (putEndpoint(name, e), this.schedule())),
          onDelete: (name) => void this.serialize(async () => (dropEndpoint(name), this.schedule())),
          onReset: (all) =>
            void this.serialize(async () => {
              for (const name of [...this.endpoints.keys()]) if (!all.has(name)) dropEndpoint(name)
              for (const [name, e] of all) putEndpoint(name, e)
              this.schedule()
            }),
          onState: (state, reason) => this.opts.onStoreState?.('endpoints', state, reason),
        }),
      )
    }
    if (services.watch !== undefined) {
      const putService = (name: string, s: StoredService): void => {
        const previous = this.services.get(name)
        if (previous !== undefined && same(serviceCodec.toJSON({ service: previous.message, policy: previous.policy }), serviceCodec.toJSON(s))) return
        let parsed: ConfNetworkService
        try {
          parsed = validateService(s.service)
        } catch (err) {
          this.opts.onListenerError?.(err)
          return
        }
        this.services.set(name, { message: s.service, parsed, policy: s.policy })
        this.emit({ kind: 'service', type: 'update', service: s.service })
      }
      const dropService = (name: string): void => {
        const existing = this.services.get(name)
        if (existing === undefined) return
        this.services.delete(name)
        this.emit({ kind: 'service', type: 'delete', service: existing.message })
      }
      this.unwatch.push(
        services.watch({
          onPut: (name, s) => void this.serialize(async () => putService(name, s)),
          onDelete: (name) => void this.serialize(async () => dropService(name)),
          onReset: (all) =>
            void this.serialize(async () => {
              for (const name of [...this.services.keys()]) if (!all.has(name)) dropService(name)
              for (const [name, s] of all) putService(name, s)
            }),
          onState: (state, reason) => this.opts.onStoreState?.('services', state, reason),
        }),
      )
    }
  }

  subscribe(listener: RegistryListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  close(): void {
    this.closed = true
    for (const stop of this.unwatch.splice(0)) stop()
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  // ---- services ----

  /**
   * Registers or replaces a service. `policy` undefined keeps the stored one (plain NSM Register), null
   * drops it, a value replaces it.
   */
  async registerService(ns: NetworkService, policy?: ServicePolicy | null): Promise<NetworkService> {
    const parsed = validateService(ns)
    const checked = policy === undefined || policy === null ? policy : validatePolicy(policy)
    const message: NetworkService = { ...ns, payload: parsed.payload }
    return this.serialize(async () => {
      const kept = checked === undefined ? this.services.get(message.name)?.policy : (checked ?? undefined)
      await this.opts.services.put(message.name, { service: message, policy: kept })
      this.services.set(message.name, { message, parsed, policy: kept })
      this.emit({ kind: 'service', type: 'update', service: message })
      return message
    })
  }

  /** Resolves false when no such service is registered. */
  async unregisterService(name: string): Promise<boolean> {
    if (name === '') throw AgentError.invalid('name', 'is required')
    return this.serialize(async () => {
      const existing = this.services.get(name)
      if (existing === undefined) return false
      await this.opts.services.delete(name)
      this.services.delete(name)
      this.emit({ kind: 'service', type: 'delete', service: existing.message })
      return true
    })
  }

  /** Services matching the query: name and payload compared when set. */
  findServices(query?: NetworkService): NetworkService[] {
    return [...this.services.values()].map((s) => s.message).filter((s) => serviceMatches(s, query)).sort(byName)
  }

  /** A registered service's registration policy; undefined when it has none or is not registered. */
  servicePolicy(name: string): ServicePolicy | undefined {
    return this.services.get(name)?.policy
  }

  /** A service in the selection layer's form (agent/select), or undefined. */
  service(name: string): ConfNetworkService | undefined {
    return this.services.get(name)?.parsed
  }

  // ---- endpoints ----

  /**
   * Registers or refreshes an endpoint. `extension` undefined keeps the stored one (plain NSM Register);
   * given, it replaces it. An endpoint url `file:///netns` fills extension.netns_path when that is empty.
   */
  async registerEndpoint(nse: NetworkServiceEndpoint, extension?: EndpointExtension): Promise<StoredEndpoint> {
    const [stored] = await this.registerEndpoints([{ endpoint: nse, extension }])
    return stored as StoredEndpoint
  }

  /**
   * Registers or refreshes several endpoints as one store write (a pod offering many services): each is
   * validated first, and nothing is stored when any is invalid or the write fails.
   */
  async registerEndpoints(regs: ReadonlyArray<{ endpoint: NetworkServiceEndpoint; extension: EndpointExtension | undefined }>): Promise<StoredEndpoint[]> {
    if (regs.length === 0) return []
    const now = this.now()
    const rules = { netns: this.netns, now }
    const names = new Set<string>()
    for (const { endpoint, extension } of regs) {
      validateEndpoint(endpoint, rules)
      if (extension !== undefined) validateExtension(extension, endpoint.name, rules)
      if (names.has(endpoint.name)) throw AgentError.invalid('network_service_endpoint.name', `"${endpoint.name}" is registered twice in one call`)
      names.add(endpoint.name)
    }
    return this.serialize(async () => {
      const batch = regs.map(({ endpoint: nse, extension }) => {
        const previous = this.live(nse.name)
        const base = extension ?? previous?.extension ?? EndpointExtension.fromPartial({})
        const netnsPath = base.netnsPath !== '' ? base.netnsPath : (netnsFromUrl(nse.url) ?? '')
        const stored: StoredEndpoint = {
          endpoint: {
            ...nse,
            expirationTime: nse.expirationTime ?? timestampOf(now + this.opts.defaultTtlMs),
            initialRegistrationTime: previous?.endpoint.initialRegistrationTime ?? nse.initialRegistrationTime ?? timestampOf(now),
          },
          extension: { ...base, endpointName: nse.name, netnsPath, nodeName: base.nodeName !== '' ? base.nodeName : (this.opts.nodeName ?? '') },
        }
        return { stored, reason: previous === undefined ? ('registered' as const) : ('refreshed' as const) }
      })
      await this.opts.endpoints.apply(
        batch.map(({ stored }) => [stored.endpoint.name, stored] as const),
        [],
      )
      for (const { stored, reason } of batch) {
        this.endpoints.set(stored.endpoint.name, stored)
        this.emit({ kind: 'endpoint', type: 'update', ...stored, reason })
      }
      this.schedule()
      return batch.map(({ stored }) => stored)
    })
  }

  /** Resolves with what was removed, or undefined when no such (live) endpoint exists. */
  async unregisterEndpoint(name: string): Promise<StoredEndpoint | undefined> {
    if (name === '') throw AgentError.invalid('name', 'is required')
    const [removed] = await this.unregisterEndpoints([name])
    return removed
  }

  /** Unregisters several endpoints as one store write; resolves with those that existed. */
  async unregisterEndpoints(names: readonly string[]): Promise<StoredEndpoint[]> {
    return this.serialize(async () => {
      const existing = [...new Set(names)].flatMap((n) => {
        const e = this.endpoints.get(n)
        return e === undefined ? [] : [e]
      })
      if (existing.length === 0) return []
      await this.opts.endpoints.apply(
        [],
        existing.map((e) => e.endpoint.name),
      )
      for (const e of existing) {
        this.endpoints.delete(e.endpoint.name)
        this.emit({ kind: 'endpoint', type: 'delete', ...e, reason: 'unregistered' })
      }
      this.schedule()
      return existing
    })
  }

  /** A live (unexpired) endpoint by name. */
  endpoint(name: string): StoredEndpoint | undefined {
    return this.live(name)
  }

  /** Live endpoints matching the query (name, url compared when set; services and labels as subsets). */
  findEndpoints(query?: NetworkServiceEndpoint): StoredEndpoint[] {
    const now = this.now()
    return [...this.endpoints.values()]
      .filter((e) => !isExpired(e, now) && endpointMatches(e.endpoint, query))
      .sort((a, b) => byName(a.endpoint, b.endpoint))
  }

  /** True when the endpoint matches the query (also used to filter watch events). */
  static endpointMatches(nse: NetworkServiceEndpoint, query?: NetworkServiceEndpoint): boolean {
    return endpointMatches(nse, query)
  }

  static serviceMatches(ns: NetworkService, query?: NetworkService): boolean {
    return serviceMatches(ns, query)
  }

  // ---- internals ----

  private live(name: string): StoredEndpoint | undefined {
    const e = this.endpoints.get(name)
    return e === undefined || isExpired(e, this.now()) ? undefined : e
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn)
    this.queue = run.catch(() => undefined)
    return run
  }

  private emit(event: RegistryEvent): void {
    for (const l of this.listeners) {
      try {
        l(event)
      } catch (err) {
        this.opts.onListenerError?.(err)
      }
    }
  }

  /** Arms one timer for the earliest expiry. */
  private schedule(): void {
    if (this.closed) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    let earliest = Infinity
    for (const e of this.endpoints.values()) earliest = Math.min(earliest, timestampMs(e.endpoint.expirationTime) ?? Infinity)
    if (earliest === Infinity) return
    const delay = Math.min(Math.max(earliest - this.now(), 0), 2 ** 31 - 1)
    this.timer = setTimeout(() => {
      this.timer = undefined
      // sweep() reports store failures itself; the promise never rejects.
      void this.serialize(() => this.sweep())
    }, delay)
  }

  private async sweep(): Promise<void> {
    const now = this.now()
    for (const [name, e] of [...this.endpoints]) {
      if (!isExpired(e, now)) continue
      try {
        await this.opts.endpoints.delete(name)
      } catch (err) {
        this.opts.onListenerError?.(err)
        continue
      }
      this.endpoints.delete(name)
      this.emit({ kind: 'endpoint', type: 'delete', ...e, reason: 'expired' })
    }
    this.schedule()
  }
}
