// An agent served from the test process, for what the agent process cannot be made to do: fail a
// teardown (an inject-error element in the pipeline that fails the Close of chosen ids). Otherwise it is
// the real thing: the agent's own server on a unix socket (gRPC and the CNI shim's frames), the real
// pipeline over the kernel (agent/pipeline), the CNI service (agent/cni), an in-memory registry and
// connection table, pod info from a directory. Everything goes at teardown.
import type { OfferRule } from '../../conf/endpoint-policy'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CniService } from '../../agent/cni/index'
import { ConnectionTable } from '../../agent/connections/table'
import { AgentError } from '../../agent/errors'
import { createDataplane } from '../../agent/pipeline/index'
import { injectError } from '../../agent/pipeline/inject-error'
import { DirectoryPodInfoSource } from '../../agent/podinfo/directory'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { jsonLogger, silentLogger } from '../../agent/server/log'
import { AgentServer } from '../../agent/server/server'
import { tempDir } from '../lib/agent'
import { registerEndpoint, type EndpointSpec } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface InProcessAgent {
  socket: string
  table: ConnectionTable
  registry: Registry
  /** Connection ids whose Close fails (INTERNAL "injected close failure") while they are in the set. */
  failClose: Set<string>
  /** The CNI service the socket serves (for calls in-process, without the shim). */
  cni: CniService
  pod(namespace: string, name: string, doc: { labels?: Record<string, string>; annotations?: Record<string, string> }): void
  endpoint(e: EndpointSpec): Promise<void>
  /** Sorted ids in the connection table. */
  connectionIds(): string[]
  /** Sorted names of the registered endpoints. */
  endpointNames(): string[]
}

const NETNS_ALLOW = ['/var/run/netns/*', '/run/netns/*']

/** Starts the agent in this process. */
export async function startInProcessAgent(t: Teardown, opts: { services: string[]; endpointPolicy?: OfferRule[] }): Promise<InProcessAgent> {
  const dir = tempDir(t, 'nsm-inproc-agent-')
  const socket = join(dir, 'agent.sock')
  const podInfoDir = join(dir, 'pods')
  mkdirSync(podInfoDir)
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: NETNS_ALLOW, defaultTtlMs: 3_600_000 })
  for (const name of opts.services) await registry.registerService({ name, payload: 'IP', matches: [], pathIds: [] })
  const table = ConnectionTable.inMemory()
  const failClose = new Set<string>()
  const dp = createDataplane({
    registry,
    table,
    nodeName: 'node-a',
    netnsAllow: NETNS_ALLOW,
    log: silentLogger,
    // Right after validate, before anything that tears down: a failed Close changes nothing.
    insertAfter: { after: 'validate', element: injectError({ onRequest: false, onClose: true, when: (id) => failClose.has(id), error: () => new AgentError('INTERNAL', 'injected close failure') }) },
  })
  const podInfo = new DirectoryPodInfoSource({ dir: podInfoDir, nodeName: 'node-a' })
  const server = new AgentServer({ socket, nodeName: 'node-a', version: 'test', table, registry, log: process.env.NSM_TEST_LOG === '1' ? jsonLogger('debug') : silentLogger, handler: dp.handler, podInfo })
  const cni = new CniService({
    handler: () => dp.handler,
    table,
    registry,
    podInfo: () => podInfo,
    check: (entry) => dp.check(entry),
    netns: dp.netnsPolicy,
    endpointPolicy: opts.endpointPolicy ?? [],
    readiness: () => ({ ready: true, reason: '' }),
    shutdown: server.stopping,
    log: silentLogger,
  })
  server.setCni((req) => cni.run(req))
  await server.start()
  t.teardown(async () => {
    await server.stop(100)
    await dp.stop()
    podInfo.close()
    registry.close()
  })
  return {
    socket,
    table,
    registry,
    failClose,
    cni,
    pod(namespace, name, doc) {
      writeFileSync(join(podInfoDir, `${namespace}_${name}.json`), JSON.stringify({ labels: doc.labels ?? {}, annotations: doc.annotations ?? {} }))
    },
    endpoint: (e) => registerEndpoint(registry, e),
    connectionIds: () => table.list().map((e) => e.connection.id).sort(),
    endpointNames: () => registry.findEndpoints().map((e) => e.endpoint.name).sort(),
  }
}
