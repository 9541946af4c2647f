// ADD (DESIGN §4): look the pod up (only when CNI_ARGS name it), plan the interfaces (plan.ts), register
// the pod's endpoint offers (before its own requests: an endpoint that is also a client gets its pools
// routed back through its client interface), then one Request per interface, in order, marked
// `nsmcni-add: first` / `next`.
//
// A second ADD of the attachment is 106, answered by the agent on the first Request (attach-once in its
// pipeline): no Check round trip before it, and no race between two concurrent ADDs. Only a pod with
// endpoint offers asks Check first, before registering: its second ADD must not re-register the first
// one's endpoints and then unregister them when its Request is refused.
//
// If any step fails, everything made by this call is closed or unregistered again, in reverse, before the
// error is returned: a failed ADD leaves nothing behind. A Request the agent refused as 106 made nothing,
// and its id is the other ADD's connection: it is not closed. Refused on the first Request, this ADD is
// not the attachment's owner, and the endpoints it registered carry the owner's names (the same
// container): they are left to the owner.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection'
import { CniError, type CallContext, type CniResult } from '../protocol/index'
import { alreadyAttachedMessage } from '../../agent/server/agent-error'
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
    const pod = await lookupPod(agent, cfg)
    const plan = makePlan({ cfg, containerId: att.containerId, ifname: att.ifname, prevResult: prev, pod })
    checkOffers(plan.offers)
    if (plan.interfaces.length === 0 && plan.offers.length === 0) return prev ?? {}
    if (plan.offers.length > 0) {
      const existing = await agent.check(att, att.ifname).catch((err: unknown) => {
        throw toCniError(err, 'Check', cfg.socket)
      })
      if (existing.connections.length > 0) {
        throw new CniError(NsmCode.AttachmentExists, alreadyAttachedMessage(att, existing.connections.map((c) => c.id)))
      }
    }

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
        const connection = await agent.request(connectionFor(p), mechanismFor(p, att.netns, cfg), att, made.length === 0 ? 'first' : 'next')
        made.push({ ifname: p.ifname, connection })
      }
    } catch (err) {
      const e = toCniError(err, step, cfg.socket)
      // Refused by the agent (106) on the Request in progress: see the header.
      if (e.code === NsmCode.AttachmentExists && requested.length > made.length) {
        requested.pop()
        if (made.length === 0) endpoints.length = 0
      }
      const problems = await rollback(agent, att, requested, endpoints)
      if (problems.length > 0) throw new CniError(e.code, `${e.message}; undoing this ADD also failed: ${problems.join('; ')}`, { cause: err })
      throw e
    }
    return buildResult(made, att.netns, prev)
  })
}
