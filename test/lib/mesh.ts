// Test helpers for the agent's registry and pipeline: services from the seed YAML, endpoints in test
// namespaces, and requests as the CNI plugin makes them.
import { readFileSync } from 'node:fs'
import { parseNetworkServiceYaml, type NetworkService as ConfService } from '../../conf/networkservice'
import { NetworkServiceRegistryDefinition, type NetworkService, type NetworkServiceEndpoint } from '../../proto/gen/registry/registry'
import { AgentDefinition, type EndpointExtension } from '../../proto/gen/nsmcni/nsmcni'
import type { AgentClient } from '../../agent/client/client'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import { silentLogger } from '../../agent/server/log'
import type { CallContext } from '../../agent/server/handler'

export const SEED = 'secure-intranet-connectivity'

export function seedServices(): ConfService[] {
  return parseNetworkServiceYaml(readFileSync(new URL('../../conf/examples/secure-intranet-connectivity.yaml', import.meta.url), 'utf8'))
}

export function serviceMessage(s: ConfService): NetworkService {
  return {
    name: s.name,
    payload: s.payload,
    pathIds: [],
    matches: s.matches.map((m) => ({
      sourceSelector: { ...m.sourceSelector },
      fallthrough: m.fallthrough,
      metadata: m.metadata === undefined ? undefined : { labels: { ...m.metadata.labels } },
      routes: m.routes.map((r) => ({ destinationSelector: { ...r.destinationSelector }, weight: r.weight })),
    })),
  }
}

export interface EndpointSpec {
  name: string
  netns: string
  service?: string
  labels: Record<string, string>
  pools: string[]
  routes?: string[]
  ttlMs?: number
  /** Leave the extension's netns path empty: the endpoint is known by its `file://` url only. */
  urlOnly?: boolean
}

/** The endpoint and our extension for `e`, as the registry and the nsmcni.Agent API take them. */
export function endpointRegistration(e: EndpointSpec): { endpoint: NetworkServiceEndpoint; extension: EndpointExtension } {
  const service = e.service ?? SEED
  const expires = Date.now() + (e.ttlMs ?? 3_600_000)
  return {
    endpoint: {
      name: e.name,
      networkServiceNames: [service],
      networkServiceLabels: { [service]: { labels: e.labels } },
      url: `file://${e.netns}`,
      expirationTime: { seconds: Math.floor(expires / 1000), nanos: 0 },
      initialRegistrationTime: undefined,
      pathIds: [],
    },
    extension: {
      endpointName: e.name,
      netnsPath: e.urlOnly === true ? '' : e.netns,
      cidrPools: e.pools,
      routes: (e.routes ?? []).map((prefix) => ({ prefix, nextHop: '' })),
      excludedPrefixes: [],
      nodeName: '',
    },
  }
}

export async function registerEndpoint(registry: Registry, e: EndpointSpec): Promise<void> {
  const r = endpointRegistration(e)
  await registry.registerEndpoint(r.endpoint, r.extension)
}

/**
 * Over a running agent's API: the seed services and a firewall endpoint (`app=firewall`) in `netns` with
 * `pools` (what the agent-process tests start from).
 */
export async function seedAgent(client: AgentClient, netns: string, pools: string[], name = 'firewall-1'): Promise<void> {
  for (const s of seedServices()) await client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
  await client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, endpointRegistration({ name, netns, labels: { app: 'firewall' }, pools }))
}

export function kernelRequest(id: string, netns: string, ifname: string, labels: Record<string, string> = {}, service = SEED): NetworkServiceRequest {
  return {
    connection: {
      id,
      networkService: service,
      mechanism: undefined,
      context: undefined,
      labels,
      path: undefined,
      networkServiceEndpointName: '',
      payload: '',
      state: 0,
    },
    mechanismPreferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: `file://${netns}` } }],
  }
}

export function testContext(): CallContext {
  return { signal: new AbortController().signal, metadata: new Map(), attachment: undefined }
}

/**
 * An in-process dataplane over a memory registry holding the seed services and a memory table, the
 * netns allowlist `/var/run/netns/*`, healing polled every 100 ms (not started); gone at teardown.
 */
export async function inProcessDataplane(t: { teardown(fn: () => void | Promise<void>): void }): Promise<{ registry: Registry; table: ConnectionTable; dp: Dataplane }> {
  const allow = ['/var/run/netns/*']
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: allow, defaultTtlMs: 60_000 })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const table = ConnectionTable.inMemory()
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: allow, log: silentLogger, healPollMs: 100 })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  return { registry, table, dp }
}
