// ADD (DESIGN §4): look the pod up and make sure this attachment has no connections yet (both at once),
// plan the interfaces (plan.ts), register the pod's endpoint offers (before its own requests: an
// endpoint that is also a client gets its pools routed back through its client interface), then one
// Request per interface, in order. If any step fails, everything made by this call is closed or
// unregistered again, in reverse, before the error is returned: a failed ADD leaves nothing behind.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection'
import { CniError, type CallContext, type CniResult } from '../protocol/index'
import { toCniError, withAgent, type Agent, type AttachmentRef } from './agent'
import { NsmCode } from './codes'
import { parseNsmConfig, type NsmConfig } from './config'
import { checkOffers, registerOffers, unregisterNames } from './endpoint'
import { makePlan, type PlannedInterface } from './plan'
import { lookupPod } from './pod'
import { buildResult, type MadeConnection } from './result'

const MECHANISM_TYPE = { kernel: 'KERNEL', memif: 'MEMIF', vfio: 'VFIO' } as const

export function mechanismFor(p: PlannedInterface, netns: string, cfg: NsmConfig): Mechanism {
  const parameters: Record<string, string> = { name: p.ifname, inodeURL: `file://${netns}` }
  if (cfg.deviceId !== undefined) parameters.pciAddress = cfg.deviceId
  return { cls: 'LOCAL', type: MECHANISM_TYPE[p.request.mechanism], parameters }
}

export function connectionFor(p: PlannedInterface): Connection {
  const r = p.request
  return {
    id: p.id,
    networkService: r.domain === undefined ? r.service : `${r.service}@${r.domain}`,
    mechanism: undefined,
    context: undefined,
    labels: p.labels,
    path: undefined,
    networkServiceEndpointName: '',
    payload: '',
    state: 0,
  }
}

/** Close needs only the id. */
export function bareConnection(id: string): Connection {
  return { id, networkService: '', mechanism: undefined, context: undefined, labels: {}, path: undefined, networkServiceEndpointName: '', payload: '', state: 0 }
}

/** Closes what this call made, newest first; failures are collected, not thrown (the first error wins). */
async function rollback(agent: Agent, att: AttachmentRef, ids: readonly string[], endpoints: readonly string[]): Promise<string[]> {
  const problems: string[] = []
  for (const id of [...ids].reverse()) {
    await agent.closeConnection(bareConnection(id), att).catch((err: unknown) => {
      problems.push(`close ${id}: ${(err as Error).message}`)
    })
  }
  await unregisterNames(agent, endpoints).catch((err: unknown) => {
    problems.push(`unregister ${endpoints.join(', ')}: ${(err as Error).message}`)
  })
  return problems
}

export async function add(ctx: CallContext): Promise<CniResult> {
  const cfg = parseNsmConfig(ctx)
  const att: AttachmentRef = { network: cfg.network, containerId: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns }
  const prev = ctx.conf.prevResult
  return withAgent(cfg.socket, cfg.timeoutMs, async (agent) => {
    const [pod, existing] = await Promise.all([
      lookupPod(agent, cfg),
      agent.check(att, att.ifname).catch((err: unknown) => {
        throw toCniError(err, 'Check', cfg.socket)
      }),
    ])
    if (existing.connections.length > 0) {
      throw new CniError(
        NsmCode.AttachmentExists,
        `container ${att.containerId} interface ${att.ifname} is already attached to network ${att.network} (connections ${existing.connections.map((c) => c.id).join(', ')}): DEL it first`,
      )
    }
    const plan = makePlan({ cfg, containerId: att.containerId, ifname: att.ifname, prevResult: prev, pod })
    checkOffers(plan.offers)
    if (plan.interfaces.length === 0 && plan.offers.length === 0) return prev ?? {}

    const endpoints: string[] = []
    const requested: string[] = []
    const made: MadeConnection[] = []
    let step = ''
    try {
      if (plan.offers.length > 0) {
        step = `RegisterEndpoint ${plan.offers.map((o) => o.service).join(', ')}`
        endpoints.push(
          ...(await registerOffers(agent, plan.offers, { containerId: att.containerId, netns: att.netns, labels: pod?.labels ?? {}, nodeName: pod?.nodeName ?? '' })),
        )
      }
      for (const p of plan.interfaces) {
        step = `Request ${p.request.service} for ${p.ifname}`
        requested.push(p.id)
        const connection = await agent.request(connectionFor(p), mechanismFor(p, att.netns, cfg), att)
        made.push({ ifname: p.ifname, connection })
      }
    } catch (err) {
      const e = toCniError(err, step, cfg.socket)
      const problems = await rollback(agent, att, requested, endpoints)
      if (problems.length > 0) throw new CniError(e.code, `${e.message}; undoing this ADD also failed: ${problems.join('; ')}`, { cause: err })
      throw e
    }
    return buildResult(made, att.netns, prev)
  })
}
