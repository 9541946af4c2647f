// attach-once (agent/pipeline/attach-once.ts): a CNI ADD's Requests (`nsmcni-add: first|next`) create and
// never refresh. In-process with a gate element holding a create in flight (no timing): a second ADD's
// create of the same attachment is refused while the first is in flight and after it succeeded, and a
// failed create releases its in-flight entry. Through the agent process over gRPC: ALREADY_EXISTS with
// the agent code ALREADY_ATTACHED and CNI code 106 naming the attachment and its connections, nothing
// changed; `first`/`next` for an existing id refused; a bad value and a key without the attachment are
// INVALID_ARGUMENT naming the key; no key is a refresh as before; a failing create can be retried.
import t, { type Test } from 'tap'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { ConnectionTable } from '../../agent/connections/table'
import { createDataplane, type Dataplane } from '../../agent/pipeline/index'
import type { Element } from '../../agent/pipeline/chain'
import { silentLogger } from '../../agent/server/log'
import { GrpcCallError } from '../../agent/client/grpc-http2'
import { GrpcStatus } from '../../agent/server/agent-error'
import { ADD_METADATA, ATTACHMENT_METADATA, attachmentFrom, type CallContext } from '../../agent/server/handler'
import { NetworkServiceDefinition, type NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import { NetworkService, NetworkServiceRegistryDefinition as NS_REG, NetworkServiceEndpoint } from '../../proto/gen/registry/registry'
import { AgentDefinition, EndpointExtension } from '../../proto/gen/nsmcni/nsmcni'
import { linkAddresses, linkNames, makeNetns, uniqueName } from '../lib/netns'
import { kernelRequest, registerEndpoint, seedServices, serviceMessage } from '../lib/mesh'
import { startAgent } from '../lib/agent'

interface Att {
  network: string
  containerId: string
  ifname: string
  netns: string
}

/** The metadata the plugin sends on an ADD's Request (phase undefined: the attachment keys only). */
function addMetadata(a: Att | undefined, phase: string | undefined): Record<string, string> {
  const md: Record<string, string> = {}
  if (a !== undefined) {
    md[ATTACHMENT_METADATA.network] = a.network
    md[ATTACHMENT_METADATA.containerId] = a.containerId
    md[ATTACHMENT_METADATA.ifname] = a.ifname
    md[ATTACHMENT_METADATA.netns] = a.netns
  }
  if (phase !== undefined) md[ADD_METADATA.key] = phase
  return md
}

function addContext(a: Att | undefined, phase: string | undefined): CallContext {
  const metadata = new Map(Object.entries(addMetadata(a, phase)))
  return { signal: new AbortController().signal, metadata, attachment: attachmentFrom(metadata) }
}

/** A chain element that holds the first request for `id` until released (or failed). */
function gate(id: string): { element: Element; reached: Promise<void>; release(err?: Error): void } {
  let reach = (): void => undefined
  const reached = new Promise<void>((r) => (reach = r))
  let release: (err?: Error) => void = () => undefined
  const opened = new Promise<void>((res, rej) => (release = (err) => (err === undefined ? res() : rej(err))))
  opened.catch(() => undefined)
  let used = false
  const element: Element = {
    name: 'gate',
    needs: [],
    provides: [],
    wrap: (next) => ({
      async request(r) {
        if (r.connection.id === id && !used) {
          used = true
          reach()
          await opened
        }
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
  return { element, reached, release: (err) => release(err) }
}

async function inProcess(t: Test, element: Element): Promise<{ dp: Dataplane; table: ConnectionTable; registry: Registry }> {
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: ['/var/run/netns/*'], defaultTtlMs: 60_000 })
  for (const s of seedServices()) await registry.registerService(serviceMessage(s))
  const table = ConnectionTable.inMemory()
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: ['/var/run/netns/*'], log: silentLogger, insertAfter: { after: 'attach-once', element } })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  return { dp, table, registry }
}

t.test('in-process: attach-once is first in the pipeline', async (t) => {
  const { dp } = await inProcess(t, gate('none').element)
  t.same(dp.elements.map((e) => e.name), ['attach-once', 'gate', 'validate', 'select', 'ipam', 'mechanism-kernel', 'persist'])
})

t.test('in-process: a second ADD is refused while the first create is in flight, and after it', async (t) => {
  const cid = uniqueName('c')
  const g = gate(`${cid}-nsm-1`)
  const { dp, table, registry } = await inProcess(t, g.element)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29'] })
  const att: Att = { network: 'cluster', containerId: cid, ifname: 'eth0', netns: client.path }

  const first = dp.handler.request(kernelRequest(`${cid}-nsm-1`, client.path, 'nsm-1', { app: 'web' }), addContext(att, 'first'))
  first.catch(() => undefined)
  await g.reached
  // Another ADD of the same attachment whose plan names another interface (another id: no shared lock).
  for (const phase of ['first', 'next']) {
    await t.rejects(
      dp.handler.request(kernelRequest(`${cid}-eth2`, client.path, 'eth2', { app: 'web' }), addContext(att, phase)),
      { code: 'ALREADY_ATTACHED', message: `container ${cid} interface eth0 is already attached to network cluster (connections ${cid}-nsm-1 being made by another ADD): DEL it first` },
      `${phase} while another ADD's create is in flight`,
    )
  }
  g.release()
  const conn = await first
  t.equal(conn.id, `${cid}-nsm-1`)
  await t.rejects(
    dp.handler.request(kernelRequest(`${cid}-eth2`, client.path, 'eth2', { app: 'web' }), addContext(att, 'first')),
    { code: 'ALREADY_ATTACHED', message: `container ${cid} interface eth0 is already attached to network cluster (connections ${cid}-nsm-1): DEL it first` },
    'first after the other ADD succeeded',
  )
  t.same(linkNames(client.name).sort(), ['lo', 'nsm-1'], 'the refused creates made no interface')
  t.same(table.list().map((e) => e.connection.id), [`${cid}-nsm-1`])
  await dp.handler.close(conn, addContext(att, undefined))
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(fw.name), ['lo'])
})

t.test('in-process: a create that fails releases its in-flight entry; the retry succeeds', async (t) => {
  const cid = uniqueName('c')
  const g = gate(`${cid}-net1`)
  const { dp, table, registry } = await inProcess(t, g.element)
  const client = makeNetns(t, 'cl')
  const fw = makeNetns(t, 'fw')
  await registerEndpoint(registry, { name: 'firewall-1', netns: fw.path, labels: { app: 'firewall' }, pools: ['172.16.1.0/29'] })
  const att: Att = { network: 'nsm-net', containerId: cid, ifname: 'net1', netns: client.path }
  const req = kernelRequest(`${cid}-net1`, client.path, 'net1', { app: 'web' })
  const failing = dp.handler.request(req, addContext(att, 'first'))
  failing.catch(() => undefined)
  await g.reached
  g.release(new Error('injected: the create fails'))
  await t.rejects(failing, { message: 'injected: the create fails' })
  t.equal(table.size, 0)
  const conn = await dp.handler.request(req, addContext(att, 'first'))
  t.equal(conn.id, `${cid}-net1`, 'the retry is not refused')
  await dp.handler.close(conn, addContext(att, undefined))
  t.same(linkNames(client.name), ['lo'])
  t.equal(table.size, 0)
})

// --- through the agent process -------------------------------------------------------------------

const SERVICE = 'attach-once-test'

async function refused(p: Promise<unknown>): Promise<GrpcCallError> {
  try {
    await p
  } catch (err) {
    if (err instanceof GrpcCallError) return err
    throw err
  }
  throw new Error('expected the call to be refused')
}

t.test('agent: ADD metadata over gRPC', async (t) => {
  const agent = await startAgent(t)
  const client = makeNetns(t, 'ac')
  const other = makeNetns(t, 'ao')
  const ep = makeNetns(t, 'ae')
  await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: SERVICE, payload: 'IP' }))
  await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
    endpoint: NetworkServiceEndpoint.fromPartial({ name: `nse-${ep.name.toLowerCase()}`, networkServiceNames: [SERVICE], url: `file://${ep.path}` }),
    extension: EndpointExtension.fromPartial({ netnsPath: ep.path, cidrPools: ['172.31.17.0/24'] }),
  })
  const cid = uniqueName('ctr')
  const att: Att = { network: 'nsm-net', containerId: cid, ifname: 'net1', netns: client.path }
  const request = (id: string, netns: string, ifname: string, service = SERVICE): NetworkServiceRequest => kernelRequest(id, netns, ifname, { app: 'web' }, service)
  const call = (req: NetworkServiceRequest, metadata: Record<string, string>) => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, req, { metadata })
  const connections = async (): Promise<number> => (await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})).connections
  const state = async () => ({ client: linkNames(client.name).sort(), other: linkNames(other.name), ep: linkNames(ep.name).length, addr: linkAddresses(client.name, 'net1'), connections: await connections() })

  const conn = await call(request(`${cid}-net1`, client.path, 'net1'), addMetadata(att, 'first'))
  t.equal(conn.id, `${cid}-net1`)
  const before = await state()
  t.same(before.client, ['lo', 'net1'])

  await t.test('first for an attachment that has a connection: ALREADY_EXISTS / ALREADY_ATTACHED / 106', async (t) => {
    for (const [id, ifname] of [[`${cid}-net1`, 'net1'], [`${cid}-net2`, 'net2']] as const) {
      const err = await refused(call(request(id, client.path, ifname), addMetadata(att, 'first')))
      t.equal(err.code, GrpcStatus.ALREADY_EXISTS, `${id}: gRPC ALREADY_EXISTS`)
      t.equal(err.agentCode, 'ALREADY_ATTACHED')
      t.equal(err.cniCode, 106)
      t.match(err.message, `container ${cid} interface net1 is already attached to network nsm-net (connections ${cid}-net1): DEL it first`)
    }
    t.same(await state(), before, 'nothing changed')
  })

  await t.test('an existing id under another attachment: first and next are refused, never a refresh', async (t) => {
    const att2: Att = { network: 'other-net', containerId: uniqueName('ctr'), ifname: 'net1', netns: other.path }
    for (const phase of ['first', 'next']) {
      const err = await refused(call(request(`${cid}-net1`, other.path, 'net1'), addMetadata(att2, phase)))
      t.equal(err.code, GrpcStatus.ALREADY_EXISTS, phase)
      t.equal(err.agentCode, 'ALREADY_ATTACHED')
      t.match(err.message, `container ${att2.containerId} interface net1 cannot be attached to network other-net: connection ${cid}-net1 already exists, for container ${cid} interface net1 of network nsm-net: DEL it first`)
    }
    t.same(await state(), before, 'nothing changed')
  })

  await t.test('a bad value, or the key without the attachment: INVALID_ARGUMENT naming nsmcni-add', async (t) => {
    for (const [md, why] of [
      [addMetadata(att, 'second'), 'bad value'],
      [addMetadata(att, ''), 'empty value'],
      [addMetadata(undefined, 'first'), 'no attachment keys'],
    ] as const) {
      const err = await refused(call(request(`${cid}-net3`, client.path, 'net3'), md))
      t.equal(err.code, GrpcStatus.INVALID_ARGUMENT, why)
      t.equal(err.agentCode, 'INVALID_ARGUMENT')
      t.equal(err.cniCode, 7)
      t.match(err.message, /nsmcni-add/, `${why}: ${err.message}`)
    }
    t.same(await state(), before, 'nothing changed')
  })

  await t.test('no key: a Request with the same id refreshes as before', async (t) => {
    const again = await call(request(`${cid}-net1`, client.path, 'net1'), addMetadata(att, undefined))
    t.same(again.context?.ipContext?.srcIpAddrs, conn.context?.ipContext?.srcIpAddrs, 'same addresses')
    const bare = await call(request(`${cid}-net1`, client.path, 'net1'), {})
    t.equal(bare.id, conn.id, 'without any metadata too')
    t.same(await state(), before, 'the same interface and address, one connection')
  })

  await t.test('a failing create (no endpoint) releases its in-flight entry: the retry succeeds', async (t) => {
    const lonely = 'attach-once-later'
    await agent.client.unary(NS_REG, NS_REG.methods.register, NetworkService.fromPartial({ name: lonely, payload: 'IP' }))
    const att3: Att = { network: 'nsm-net', containerId: uniqueName('ctr'), ifname: 'net1', netns: other.path }
    const req = request(`${att3.containerId}-net1`, other.path, 'net1', lonely)
    const err = await refused(call(req, addMetadata(att3, 'first')))
    t.equal(err.agentCode, 'NO_ENDPOINT', err.message)
    const ep2 = makeNetns(t, 'ae')
    await agent.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, {
      endpoint: NetworkServiceEndpoint.fromPartial({ name: `nse-${ep2.name.toLowerCase()}`, networkServiceNames: [lonely], url: `file://${ep2.path}` }),
      extension: EndpointExtension.fromPartial({ netnsPath: ep2.path, cidrPools: ['172.31.18.0/24'] }),
    })
    const ok = await call(req, addMetadata(att3, 'first'))
    t.equal(ok.id, req.connection?.id)
    t.ok(linkNames(other.name).includes('net1'))
    await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, ok, { metadata: addMetadata(att3, undefined) })
    t.same(linkNames(other.name), ['lo'])
    t.same(linkNames(ep2.name), ['lo'])
  })

  await agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.close, conn, { metadata: addMetadata(att, undefined) })
  t.equal(await connections(), 0)
  t.same(linkNames(client.name), ['lo'])
  t.same(linkNames(ep.name), ['lo'])
})
