// ADD (ARCHITECTURE §4), holding the attachment's lock: refuse a second ADD of the attachment (106), look the
// pod up (only when CNI_ARGS name it), plan the interfaces (plan.ts), register the pod's endpoint offers
// (before its own requests: an endpoint that is also a client gets its pools routed back through its
// client interface), then one pipeline Request per interface, in order.
//
// Rollback happens here and only here: if any step fails, every connection this ADD made is closed and
// every endpoint it registered is unregistered again, newest first, before the error is returned. A failed
// ADD leaves nothing behind.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection.js'
import { ConnectionContext } from '../../proto/gen/networkservice/connectioncontext.js'
import { CniCode, CniError, type CallContext, type CniResult } from '../../cni/protocol/index.js'
import { alreadyAttachedMessage } from '../errors.js'
import type { AttachmentInfo } from '../server/handler.js'
import { parseNsmConfig, type Device, type NsmConfig } from './config.js'
import { toCniError, type CniDeps } from './deps.js'
import { checkOffers, refuseUnauthorized, registerOffers, unregisterNames } from './endpoint.js'
import { makePlan, type PlannedInterface } from './plan.js'
import { lookupPod } from './pod.js'
import { buildResult, type MadeConnection } from './result.js'
import { callContext } from './context.js'
import { netnsFileUrl } from '../../pkg/netns-url.js'
import { memifDirProblem } from '../mechanisms/memif/params.js'

const MECHANISM_TYPE = { kernel: 'KERNEL', memif: 'MEMIF', vfio: 'VFIO' } as const

/**
 * The requested mechanism. With a VF (`device`): NSM's `pciAddress` on the KERNEL (or VFIO) request, which
 * the agent's SR-IOV mechanism serves (a VF bound to vfio-pci becomes VFIO there), and where the
 * device-info file goes: Multus's CNIDeviceInfoFile, else Multus's own naming `<network>-<container>_<ifname>`.
 */
function mechanismFor(p: PlannedInterface, netns: string, device: Device | undefined, att: AttachmentInfo, podUid: string | undefined): Mechanism {
  const parameters: Record<string, string> = { name: p.ifname, inodeURL: netnsFileUrl(netns) }
  // A memif's socket goes in the pod's directory under the agent's memif root: named by the pod's UID when
  // the runtime gives it (a pod mounts it with subPathExpr $(POD_UID)), else by the container id.
  if (p.request.mechanism === 'memif') parameters.memifDir = podUid ?? att.containerId
  if (device !== undefined) {
    parameters.pciAddress = device.pciAddress
    parameters.deviceInfoFile = device.deviceInfoFile ?? `${att.network}-${att.containerId}_${p.ifname}`.replace(/\//g, '-')
  }
  return { cls: 'LOCAL', type: MECHANISM_TYPE[p.request.mechanism], parameters }
}

function connectionFor(p: PlannedInterface, device: Device | undefined): Connection {
  const r = p.request
  return {
    id: p.id,
    networkService: r.domain === undefined ? r.service : `${r.service}@${r.domain}`,
    mechanism: undefined,
    // The VF's MAC (runtimeConfig.mac) is the client's ethernet_context.src_mac, as an NSM client asks for it.
    context: device?.mac === undefined ? undefined : ConnectionContext.fromPartial({ ethernetContext: { srcMac: device.mac } }),
    labels: p.labels,
    path: undefined,
    networkServiceEndpointName: '',
    payload: '',
    state: 0,
  }
}

/** A VF is one interface's: with several planned (a chained pod asking for several services), which one is unclear. */
function checkDevice(cfg: NsmConfig, planned: readonly PlannedInterface[]): void {
  if (cfg.device === undefined || planned.length <= 1) return
  throw new CniError(CniCode.INVALID_CONFIG, `${cfg.device.field}: names one VF (${cfg.device.pciAddress}) for ${planned.length} interfaces (${planned.map((p) => p.ifname).join(', ')}): attach one service with it`)
}

/** CNI_ARGS K8S_POD_UID when a memif is asked for (it names the pod's socket directory): checked, or undefined. */
function podUidOf(ctx: CallContext, planned: readonly PlannedInterface[]): string | undefined {
  const uid = ctx.envArgs.get('K8S_POD_UID') ?? ''
  if (uid === '' || !planned.some((p) => p.request.mechanism === 'memif')) return undefined
  const problem = memifDirProblem(uid)
  if (problem !== undefined) throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS K8S_POD_UID: ${problem}`)
  return uid
}

/** Refuses the ADD when the attachment, or any connection id it would make, exists already. */
function refuseExisting(deps: CniDeps, att: AttachmentInfo, planned: readonly PlannedInterface[]): void {
  const existing = deps.table.byAttachment(att.network, att.containerId, att.ifname)
  if (existing.length > 0) throw new CniError(CniCode.ALREADY_ATTACHED, alreadyAttachedMessage(att, existing.map((e) => e.connection.id)))
  for (const p of planned) {
    const entry = deps.table.get(p.id)
    if (entry === undefined) continue
    const owner = entry.attachment
    const by = owner === undefined ? 'made by an NSM client' : `held by container ${owner.containerId} interface ${owner.ifname} of network ${owner.network}`
    throw new CniError(CniCode.ALREADY_ATTACHED, `container ${att.containerId} interface ${att.ifname} cannot be attached to network ${att.network}: connection ${p.id} already exists, ${by}`)
  }
}

export async function add(deps: CniDeps, ctx: CallContext): Promise<CniResult> {
  const cfg = parseNsmConfig(ctx)
  const att: AttachmentInfo = { network: cfg.network, containerId: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns }
  const prev = ctx.conf.prevResult
  try {
    deps.netns.check(att.netns)
  } catch (err) {
    throw toCniError(err, 'CNI_NETNS')
  }
  const pod = await lookupPod(deps, cfg)
  const plan = makePlan({ cfg, containerId: att.containerId, ifname: att.ifname, prevResult: prev, pod })
  checkOffers(plan.offers)
  if (plan.offers.length > 0 && pod !== undefined) refuseUnauthorized(deps, plan.offers, { namespace: pod.namespace, name: pod.name, labels: pod.labels, containerId: att.containerId })
  refuseExisting(deps, att, plan.interfaces)
  checkDevice(cfg, plan.interfaces)
  if (plan.interfaces.length === 0 && plan.offers.length === 0) return prev ?? {}

  const podUid = podUidOf(ctx, plan.interfaces)
  const call = callContext(deps, att)
  const endpoints: string[] = []
  const made: MadeConnection[] = []
  let step = ''
  try {
    if (plan.offers.length > 0) {
      step = `register endpoint ${plan.offers.map((o) => o.service).join(', ')}`
      endpoints.push(...(await registerOffers(deps.registry, plan.offers, { containerId: att.containerId, netns: att.netns, labels: pod?.labels ?? {}, nodeName: pod?.nodeName ?? '' }, deps.endpointLifetimeMs)))
    }
    for (const p of plan.interfaces) {
      step = `request ${p.request.service} for ${p.ifname}${cfg.device === undefined ? '' : ` with the VF of ${cfg.device.field} ${cfg.device.pciAddress}`}`
      const connection = await deps.handler().request({ connection: connectionFor(p, cfg.device), mechanismPreferences: [mechanismFor(p, att.netns, cfg.device, att, podUid)] }, call)
      made.push({ ifname: p.ifname, connection })
    }
  } catch (err) {
    const e = toCniError(err, step)
    const problems = await rollback(deps, att, made.map((m) => m.connection), endpoints)
    if (problems.length > 0) throw new CniError(e.code, `${e.message}; undoing this ADD also failed: ${problems.join('; ')}`, { cause: err })
    throw e
  }
  return buildResult(made, att.netns, prev)
}

/** Closes what this ADD made, newest first; failures are collected, not thrown (the first error wins). */
async function rollback(deps: CniDeps, att: AttachmentInfo, made: readonly Connection[], endpoints: readonly string[]): Promise<string[]> {
  const problems: string[] = []
  const call = callContext(deps, att)
  for (const c of [...made].reverse()) {
    await deps.handler().close(c, call).catch((err: unknown) => {
      problems.push(`close ${c.id}: ${(err as Error).message}`)
    })
  }
  await unregisterNames(deps.registry, endpoints).catch((err: unknown) => {
    problems.push(`unregister ${endpoints.join(', ')}: ${(err as Error).message}`)
  })
  if (problems.length > 0) deps.log.error('ADD rollback incomplete', { containerId: att.containerId, ifname: att.ifname, problems })
  return problems
}
