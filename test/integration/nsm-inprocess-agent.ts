// An agent served from the test process, for what the agent process cannot be made to do: be an older
// agent (nsmcni.Agent without Detach, the way an agent built before it answers: grpc-js's own
// UNIMPLEMENTED) or fail a teardown (an inject-error element in the pipeline that fails the Close of
// chosen ids). Otherwise it is the real thing: grpc-js on a unix socket, the agent's own service
// implementations (agent/server), the real pipeline over the kernel (agent/pipeline), an in-memory
// registry and connection table, pod info from a directory. Everything goes at teardown.
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane } from '../../agent/pipeline/index'
import { injectError } from '../../agent/pipeline/inject-error'
import { DirectoryPodInfoSource } from '../../agent/podinfo/directory'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { AgentError } from '../../agent/server/agent-error'
import { toGrpcService, type GenericService } from '../../agent/server/grpc-adapter'
import { silentLogger } from '../../agent/server/log'
import { networkServiceImpl } from '../../agent/server/networkservice-service'
import { nsmcniImpl } from '../../agent/server/nsmcni-service'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
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
  pod(namespace: string, name: string, doc: { labels?: Record<string, string>; annotations?: Record<string, string> }): void
  endpoint(e: EndpointSpec): Promise<void>
  /** Sorted ids in the connection table. */
  connectionIds(): string[]
  /** Sorted names of the registered endpoints. */
  endpointNames(): string[]
}

const NETNS_ALLOW = ['/var/run/netns/*', '/run/netns/*']

/** Starts the agent; `detach: false` serves nsmcni.Agent as an agent built before Detach. */
export async function startInProcessAgent(t: Teardown, opts: { detach: boolean; services: string[] }): Promise<InProcessAgent> {
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
  const shutdown = new AbortController()
  const server = new Server()
  const handler = (): typeof dp.handler => dp.handler
  server.addService(toGrpcService(NetworkServiceDefinition), networkServiceImpl({ handler, table, shutdown: shutdown.signal, log: silentLogger }))
  const podInfo = new DirectoryPodInfoSource({ dir: podInfoDir, nodeName: 'node-a' })
  const impl = nsmcniImpl({
    handler,
    table,
    registry,
    nodeName: 'node-a',
    startedAt: Date.now(),
    version: 'test',
    shutdown: shutdown.signal,
    log: silentLogger,
    podInfo: () => podInfo,
    checker: () => ({ check: (entry) => dp.check(entry) }),
    readiness: () => ({ ready: true, reason: '' }),
    roundRobin: () => dp.roundRobin,
  })
  if (opts.detach) {
    server.addService(toGrpcService(AgentDefinition), impl)
  } else {
    // What an agent built before Detach serves: the service without the method, so grpc-js answers
    // UNIMPLEMENTED for its path itself (no nsmcni-error trailer).
    const { detach: _method, ...methods } = AgentDefinition.methods
    const { detach: _impl, ...older }: UntypedServiceImplementation = impl
    server.addService(toGrpcService({ ...AgentDefinition, methods } as GenericService), older)
  }
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (err) => (err === null ? resolve() : reject(err))))
  t.teardown(async () => {
    shutdown.abort()
    server.forceShutdown()
    await dp.stop()
    registry.close()
  })
  return {
    socket,
    table,
    registry,
    failClose,
    pod(namespace, name, doc) {
      writeFileSync(join(podInfoDir, `${namespace}_${name}.json`), JSON.stringify({ labels: doc.labels ?? {}, annotations: doc.annotations ?? {} }))
    },
    endpoint: (e) => registerEndpoint(registry, e),
    connectionIds: () => table.list().map((e) => e.connection.id).sort(),
    endpointNames: () => registry.findEndpoints().map((e) => e.endpoint.name).sort(),
  }
}
