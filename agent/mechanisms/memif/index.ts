// The MEMIF mechanism (ARCHITECTURE §8): a pod is given a memif socket, not an interface. memif is a
// shared-memory packet interface: the pod's application (DPDK, VPP, libmemif) opens the socket file as the
// memif *client*; the agent's userspace forwarder (./forwarder.ts: DPDK testpmd, one process for up to 16
// connections) is the *server* and copies frames between that memif and a veth whose other end is in the
// endpoint's netns (./endpoint.ts). Nothing is moved into the pod's netns.
//
// Asked for by a MEMIF mechanism (NSM: `memif://service/ifname` annotations, `"mechanism": "memif"` in a
// netconf, a MEMIF preference on the NSM API) with KERNEL's `name` and `inodeURL` (the client's netns,
// through the netns policy: it tells when the pod is gone) and where the socket goes (./params.ts: a
// directory per pod under `--memif-root`). Answered with NSM's `socketfile` (the CNI result's
// `socketPath`), and the client's addresses in the IP context for the pod's application; the MAC in
// ethernet_context.src_mac is the one the pod's memif should use (DPDK's `mac=` device argument), since
// the endpoint side learns it from the frames.
//
// Lifecycle: build = the pod's directory, the veth, then the forwarder's port pair (the socket is served
// before the answer goes out, so a client that starts on the answer finds it); remove/close = the
// forwarder's pair (its socket removed), the veth, the pod's directory once empty. CHECK = the veth both
// ends (addresses, routes, up, tags) and the forwarder serving the socket. After a restart the forwarders
// that kept running are adopted (./forwarder.ts), a record whose pair is missing gets it again, and pairs
// and host-side veth ends no connection owns are removed by the sweep. A forwarder that dies is restarted
// by the supervisor with all its pairs; DPDK clients (which do not reconnect by themselves) must reopen
// their port, libmemif and VPP reconnect.
//
// Endpoints: on this node, with a netns (kernel endpoints). A memif endpoint (memif on both sides) and
// endpoints on other nodes are not served: MEMIF towards another node is refused by the forwarding element.
import { mkdirSync, chmodSync, existsSync, rmdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { netnsFileUrl } from '../../../pkg/netns-url.js'
import { netnsKey } from '../../../pkg/netns.js'
import type { ConnectionContext } from '../../../proto/gen/networkservice/connectioncontext.js'
import { AgentError } from '../../errors.js'
import type { Logger } from '../../server/log.js'
import { forwardingSwitch } from '../forwarding.js'
import { clientMac, endpointIfname } from '../kernel/names.js'
import { connectionContextOf, ipContextOfRecord } from '../record.js'
import type { CheckProblem, ClientSide, DatapathRecord, Mechanism, PlanInput, RequestedMechanism, Route } from '../types.js'
import { endpointMac } from '../vxlan/index.js'
import { buildKernelSide, checkKernelSide, hostIfname, removeKernelSide, sweepHostEnds, type KernelSide } from './endpoint.js'
import { MEMIF_DIR_PARAM, memifDirProblem, SOCKET_FILE_PARAM, socketPath } from './params.js'
import type { MemifRecord } from './record.js'
import type { NetlinkSessions } from '../../../pkg/netlink/index.js'

export { isMemifRecord, type MemifRecord } from './record.js'
export { DEFAULT_MEMIF_ROOT, MEMIF_DIR_PARAM, SOCKET_FILE_PARAM, memifRootProblem } from './params.js'

export const MEMIF = 'MEMIF'

/** A port pair of the forwarder: the pod's memif socket and the kernel interface it is joined to. */
export interface MemifPort {
  id: string
  socket: string
  iface: string
}

/** What the mechanism needs of the forwarder supervisor (./forwarder.ts MemifForwarders). */
export interface ForwarderControl {
  start(): Promise<void>
  attach(p: MemifPort): Promise<void>
  /** Re-attaches a pair's af_packet port after its veth was made anew; false: not done, attach anew. */
  rejoinKernel(id: string): Promise<boolean>
  detach(id: string): Promise<void>
  state(id: string): { served: boolean; connected: boolean; pid: number } | undefined
  ports(): MemifPort[]
}

export interface MemifMechanismOptions {
  sessions: NetlinkSessions
  /** `--memif-root`: the pods' socket directories are made under it. */
  root: string
  /** This agent's key in the tags of its veth ends in the agent's netns (./endpoint.ts agentKey of the state dir). */
  agent: string
  forwarder: ForwarderControl
  /** The client side (`name`, `inodeURL` through the netns policy) as the KERNEL mechanism parses it. */
  clientSide(requested: RequestedMechanism, field: string): ClientSide
  log?: Logger
}

export function memifMechanism(opts: MemifMechanismOptions): Mechanism {
  const { sessions, forwarder } = opts
  const enableForwarding = forwardingSwitch(sessions)
  let started: Promise<void> | undefined
  /** The supervisor adopts the forwarders a previous agent left running, once, before anything else. */
  const ready = (): Promise<void> => (started ??= forwarder.start())
  const memif = (rec: DatapathRecord): MemifRecord => {
    if (rec.mechanism.type !== MEMIF) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${rec.mechanism.type} record reached the MEMIF mechanism`)
    return rec.mechanism
  }
  const kernelSide = (rec: DatapathRecord): KernelSide => {
    const m = memif(rec)
    return { connectionId: rec.connectionId, agent: opts.agent, hostIfname: m.hostIfname, endpointNetns: m.endpointNetns, endpointIfname: m.endpointIfname, endpointMac: m.endpointMac, mtu: rec.mtu, addresses: rec.ipContext.dst, routes: rec.ipContext.dstRoutes }
  }
  const port = (rec: DatapathRecord): MemifPort => ({ id: rec.connectionId, socket: memif(rec).socket, iface: memif(rec).hostIfname })

  /** The pod's directory of a request: `memifDir`, else the one `socketfile` names, else `fallback`. */
  const socketOf = (requested: RequestedMechanism, field: string, ifname: string, fallback: string): { dir: string; socket: string } => {
    const p = requested.parameters
    const dField = `${field}.parameters.${MEMIF_DIR_PARAM}`
    const sField = `${field}.parameters.${SOCKET_FILE_PARAM}`
    const given = p[SOCKET_FILE_PARAM] ?? ''
    let dir = p[MEMIF_DIR_PARAM] ?? ''
    if (dir === '' && given !== '') {
      const under = `${opts.root}/`
      const rest = given.startsWith(under) ? given.slice(under.length).split('/') : []
      if (rest.length !== 2) throw AgentError.invalid(sField, `${JSON.stringify(given)}: the agent places memif sockets itself, at ${opts.root}/<pod directory>/<name>.sock`)
      dir = rest[0] ?? ''
    }
    if (dir === '') dir = fallback
    const problem = memifDirProblem(dir)
    if (problem !== undefined) throw AgentError.invalid(dField, problem)
    const where = socketPath(opts.root, dir, ifname)
    if ('problem' in where) throw AgentError.invalid(dField, where.problem)
    if (given !== '' && given !== where.path) throw AgentError.invalid(sField, `${JSON.stringify(given)}: the agent places memif sockets itself; this one is ${where.path}`)
    return { dir, socket: where.path }
  }

  const removeDir = (m: MemifRecord): void => {
    try {
      rmdirSync(dirname(m.socket))
    } catch {
      // Not empty (the pod's other interfaces), or gone already.
    }
  }

  const remove = async (rec: DatapathRecord): Promise<void> => {
    const m = memif(rec)
    await ready()
    await forwarder.detach(rec.connectionId)
    await removeKernelSide(sessions, kernelSide(rec), (where, alias) => opts.log?.warn("link is not ours (not this connection's tag): left alone", { connection: rec.connectionId, where, alias: alias ?? null }))
    removeDir(m)
  }

  const build = async (rec: DatapathRecord): Promise<void> => {
    const m = memif(rec)
    await ready()
    // The pod's directory: a pod running as non-root opens its socket there (DPDK wants the directory rwx).
    mkdirSync(dirname(m.socket), { recursive: true, mode: 0o777 })
    chmodSync(dirname(m.socket), 0o777)
    try {
      await buildKernelSide(sessions, kernelSide(rec))
      try {
        await forwarder.attach(port(rec))
      } catch (err) {
        throw new AgentError('UNAVAILABLE', `memif forwarder: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }
      const forwards = (routes: readonly Route[]): boolean => routes.some((r) => r.nextHop !== '')
      if (forwards(rec.ipContext.srcRoutes)) enableForwarding(m.endpointNetns)
    } catch (err) {
      await forwarder.detach(rec.connectionId).catch(() => undefined)
      await removeKernelSide(sessions, kernelSide(rec)).catch(() => undefined)
      removeDir(m)
      throw err
    }
  }

  const checkForwarder = (rec: DatapathRecord): CheckProblem[] => {
    const m = memif(rec)
    const s = forwarder.state(rec.connectionId)
    if (s?.served !== true) return [{ code: 'link-missing', message: `memif socket ${m.socket}: the forwarder does not serve it`, connectionId: rec.connectionId }]
    if (!existsSync(m.socket)) return [{ code: 'link-missing', message: `memif socket ${m.socket} is missing`, connectionId: rec.connectionId }]
    return []
  }

  const check = async (rec: DatapathRecord): Promise<CheckProblem[]> => {
    await ready()
    return [...(await checkKernelSide(sessions, kernelSide(rec))), ...checkForwarder(rec)]
  }

  return {
    type: MEMIF,

    parseRequest(requested, field) {
      const { [SOCKET_FILE_PARAM]: _s, [MEMIF_DIR_PARAM]: _d, ...rest } = requested.parameters
      const client = opts.clientSide({ ...requested, parameters: rest }, field)
      socketOf(requested, field, client.ifname, 'x')
      return client
    },

    plan(input: PlanInput): MemifRecord {
      const field = 'mechanism_preferences'
      if (!input.endpoint.local || input.endpoint.netns === '') throw AgentError.invalid(field, `endpoint ${input.endpoint.name} is not a kernel endpoint on this node: a memif reaches those only`)
      const requested = input.requested ?? { cls: 'LOCAL', type: MEMIF, parameters: {} }
      const { dir, socket } = socketOf(requested, field, input.client.ifname, input.connection.id)
      return {
        type: MEMIF,
        dir,
        socket,
        mac: clientMac(input.connection.id),
        endpointNetns: input.endpoint.netns,
        endpointIfname: endpointIfname(input.connection.id),
        endpointMac: endpointMac(input.connection.id),
        hostIfname: hostIfname(input.connection.id),
      }
    },

    build,

    remove,

    /**
     * A heal or a re-request that changed the datapath. When the pod's socket stays the same and the
     * forwarder serves it, only the kernel side is made anew (the veth toward the new endpoint, under the
     * same name) and the pair's af_packet port attached again: the pod's memif client stays connected. Else
     * (another socket, or the forwarder cannot rejoin in place) remove and build.
     */
    async replace(previous, next) {
      const [p, n] = [memif(previous), memif(next)]
      await ready()
      if (p.socket !== n.socket || p.hostIfname !== n.hostIfname || forwarder.state(next.connectionId)?.served !== true) {
        await remove(previous)
        await build(next)
        return
      }
      await removeKernelSide(sessions, kernelSide(previous))
      try {
        await buildKernelSide(sessions, kernelSide(next))
      } catch (err) {
        await forwarder.detach(next.connectionId).catch(() => undefined)
        removeDir(n)
        throw err
      }
      if (!(await forwarder.rejoinKernel(next.connectionId))) {
        try {
          await forwarder.detach(next.connectionId)
          await forwarder.attach(port(next))
        } catch (err) {
          await forwarder.detach(next.connectionId).catch(() => undefined)
          await removeKernelSide(sessions, kernelSide(next)).catch(() => undefined)
          removeDir(n)
          throw new AgentError('UNAVAILABLE', `memif forwarder: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
        }
      }
      const forwards = (routes: readonly Route[]): boolean => routes.some((r) => r.nextHop !== '')
      if (forwards(next.ipContext.srcRoutes)) enableForwarding(n.endpointNetns)
    },

    close: remove,
    check,

    async reconcile(rec) {
      if (netnsKey(rec.clientNetns) === undefined) return { state: 'client-gone' }
      await ready()
      const kernel = await checkKernelSide(sessions, kernelSide(rec))
      if (kernel.length > 0) return { state: 'broken', problems: kernel }
      // The veth is whole: a pair the forwarder lacks (its process was gone at start) is attached again in place.
      if (checkForwarder(rec).length > 0) {
        try {
          await forwarder.attach(port(rec))
        } catch (err) {
          return { state: 'broken', problems: [{ code: 'link-missing', message: `memif socket ${memif(rec).socket}: ${err instanceof Error ? err.message : String(err)}`, connectionId: rec.connectionId }] }
        }
      }
      const problems = checkForwarder(rec)
      return problems.length === 0 ? { state: 'intact' } : { state: 'broken', problems }
    },

    namespaces(rec) {
      return [rec.clientNetns, memif(rec).endpointNetns]
    },

    /** Forwarder pairs and agent-side veth ends whose connection is not live (left by a crash). */
    async sweep(input) {
      await ready()
      const live = input.live()
      for (const p of forwarder.ports()) {
        if (live.has(p.id)) continue
        await forwarder.detach(p.id)
        opts.log?.warn('removed a memif forwarder pair no connection owns (left by a crash)', { connection: p.id, socket: p.socket })
      }
      return sweepHostEnds(sessions, opts.agent, input)
    },

    ipContext: ipContextOfRecord,

    connectionMechanism(rec) {
      const m = memif(rec)
      return { cls: 'LOCAL', type: MEMIF, parameters: { name: rec.clientIfname, inodeURL: netnsFileUrl(rec.clientNetns), [SOCKET_FILE_PARAM]: m.socket, [MEMIF_DIR_PARAM]: m.dir } }
    },

    context(rec, requested): ConnectionContext {
      const m = memif(rec)
      return connectionContextOf(rec, requested, { srcMac: m.mac, dstMac: m.endpointMac })
    },
  }
}
