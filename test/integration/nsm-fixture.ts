// Shared by the nsm plugin's tests (integration, conformance, podman, bench): the bundled dist/nsm staged
// into a private directory, a real agent with a pod-info directory and registered services, endpoints in
// test namespaces, pod-info files, and CNI calls exec'd exactly as a runtime does (env + stdin).
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { NetworkServiceRegistryDefinition } from '../../proto/gen/registry/registry'
import { AgentDefinition, ServicePolicy } from '../../proto/gen/nsmcni/nsmcni'
import { collect, startAgent, type RunningAgent } from '../lib/agent'
import { MonitorConnectionDefinition, type Connection, type ConnectionEvent } from '../../proto/gen/networkservice/connection'
import { seedServices, serviceMessage } from '../lib/mesh'
import { execPlugin, type CniCall, type CniOutcome } from '../conformance/exec'

const ROOT = resolve(import.meta.dirname, '../..')

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/**
 * Copies dist/nsm into a private directory (a colleague's build may rewrite dist/ while tests run) and
 * checks the copy parses. Returns the directory (for CNI_PATH / podman's plugin dirs).
 */
export async function stageNsm(t: Teardown): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-bin-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const src = join(ROOT, 'dist', 'nsm')
  const dst = join(dir, 'nsm')
  for (let attempt = 0; ; attempt++) {
    try {
      copyFileSync(src, dst)
      chmodSync(dst, 0o755)
      execFileSync(process.execPath, ['--check', dst], { stdio: 'ignore' })
      return dir
    } catch (err) {
      if (attempt >= 100) throw new Error(`dist/nsm is missing or broken (run npm run build): ${(err as Error).message}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}

export interface Mesh {
  agent: RunningAgent
  podInfoDir: string
  /** Directory holding the staged `nsm` binary. */
  binDir: string
  binary: string
  socket: string
  /** Registers a local endpoint (netns path) for a service, through the agent's API. */
  endpoint(e: { name: string; netns: string; service?: string; labels?: Record<string, string>; pools: string[]; routes?: string[] }): Promise<void>
  /**
   * Registers `service` (a seed service, `web-service`, or a bare IP service of that name) with a
   * registration policy through the agent's RegisterService: who may offer it as an endpoint pod.
   */
  admit(service: string, policy: Partial<ServicePolicy>): Promise<void>
  /** Writes `<podInfoDir>/<namespace>_<name>.json`. */
  pod(namespace: string, name: string, doc: { labels?: Record<string, string>; annotations?: Record<string, string> }): void
  /** A netconf for this agent (cniVersion 1.1.0 unless given). */
  conf(extra?: Record<string, unknown>): Record<string, unknown>
  cni(call: CniCall): Promise<CniOutcome>
  /** The agent's connections (MonitorConnections' initial state transfer), sorted by id. */
  connections(): Promise<Connection[]>
  /** The agent's connection ids, sorted. */
  connectionIds(): Promise<string[]>
  endpointNames(): Promise<string[]>
}

export const WEB = 'web-service'

/** A running agent with the seed services and `web-service` (no matches) registered. */
export async function startMesh(t: Teardown, opts: { network?: string; agentArgs?: string[]; agentBundle?: string } = {}): Promise<Mesh> {
  const binDir = await stageNsm(t)
  const binary = join(binDir, 'nsm')
  const podInfoDir = mkdtempSync(join(tmpdir(), 'nsm-pods-'))
  t.teardown(() => rmSync(podInfoDir, { recursive: true, force: true }))
  const agent = await startAgent(t, { args: ['--pod-info-dir', podInfoDir, '--node-name', 'node-a', ...(opts.agentArgs ?? [])], ...(opts.agentBundle === undefined ? {} : { bundle: opts.agentBundle }) })
  const reg = (s: Parameters<typeof serviceMessage>[0]) => agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, serviceMessage(s))
  for (const s of seedServices()) await reg(s)
  await agent.client.unary(NetworkServiceRegistryDefinition, NetworkServiceRegistryDefinition.methods.register, { name: WEB, payload: 'IP', matches: [], pathIds: [] })
  const network = opts.network ?? 'nsm-net'
  const connections = async (): Promise<Connection[]> => {
    const monitor = collect<ConnectionEvent>((on, signal) => agent.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, on, { signal }))
    const first = await monitor.until(() => true)
    monitor.cancel()
    return Object.values(first.connections).sort((a, b) => a.id.localeCompare(b.id))
  }
  return {
    agent,
    podInfoDir,
    binDir,
    binary,
    socket: agent.socket,
    async endpoint(e) {
      const service = e.service ?? WEB
      const expires = Math.floor(Date.now() / 1000) + 3600
      await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
        endpoint: {
          name: e.name,
          networkServiceNames: [service],
          networkServiceLabels: { [service]: { labels: e.labels ?? {} } },
          url: `file://${e.netns}`,
          expirationTime: { seconds: expires, nanos: 0 },
          initialRegistrationTime: undefined,
          pathIds: [],
        },
        extension: { endpointName: e.name, netnsPath: e.netns, cidrPools: e.pools, routes: (e.routes ?? []).map((prefix) => ({ prefix, nextHop: '' })), excludedPrefixes: [], nodeName: '' },
      })
    },
    async admit(service, policy) {
      const seed = seedServices().find((s) => s.name === service)
      const message = seed === undefined ? { name: service, payload: 'IP', matches: [], pathIds: [] } : serviceMessage(seed)
      await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerService, { service: message, policy: ServicePolicy.fromPartial(policy) })
    },
    pod(namespace, name, doc) {
      mkdirSync(podInfoDir, { recursive: true })
      writeFileSync(join(podInfoDir, `${namespace}_${name}.json`), JSON.stringify({ labels: doc.labels ?? {}, annotations: doc.annotations ?? {} }))
    },
    conf(extra = {}) {
      return { cniVersion: '1.1.0', name: network, type: 'nsm', socket: agent.socket, ...extra }
    },
    cni(call) {
      return execPlugin(binary, { path: binDir, ...call })
    },
    connections,
    async connectionIds() {
      return (await connections()).map((c) => c.id)
    },
    async endpointNames() {
      const res = await agent.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
      return res.endpoints.map((e) => e.endpoint?.name ?? '').sort()
    },
  }
}

/** Parses a successful ADD's stdout, or throws with what the plugin said. */
export function resultOf(out: CniOutcome): Record<string, unknown> & { interfaces?: Array<Record<string, unknown>>; ips?: Array<Record<string, unknown>>; routes?: Array<Record<string, unknown>> } {
  if (out.exitCode !== 0 || out.json === undefined) throw new Error(`plugin failed: exit ${out.exitCode}, stdout ${out.stdout}, stderr ${out.stderr}`)
  return out.json
}
