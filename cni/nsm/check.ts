// CHECK: the agent verifies its connections for this attachment against the kernel (interface present
// and up, addresses on it: agent Check), and the plugin verifies prevResult lists each connection's
// interface in this sandbox and its addresses. An attachment with no connection is fine only when nothing
// was asked of it (a chained pod without annotations), decided as ADD would.
//   3   no connection although the attachment asks for services
//   110 the datapath or prevResult does not match (every problem listed)
import { CniCode, CniError, type CallContext } from '../protocol/index'
import { toCniError, withAgent, type AttachmentRef } from './agent'
import { NsmCode } from './codes'
import { parseNsmConfig } from './config'
import { makePlan } from './plan'
import { lookupPod } from './pod'

const host = (cidr: string): string => cidr.split('/')[0] ?? cidr

export async function check(ctx: CallContext): Promise<void> {
  const cfg = parseNsmConfig(ctx)
  const att: AttachmentRef = { network: cfg.network, containerId: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns }
  await withAgent(cfg.socket, cfg.timeoutMs, async (agent) => {
    const res = await agent.check(att, att.ifname).catch((err: unknown) => {
      throw toCniError(err, 'Check', cfg.socket)
    })
    if (res.connections.length === 0) {
      const pod = await lookupPod(agent, cfg)
      const plan = makePlan({ cfg, containerId: att.containerId, ifname: att.ifname, prevResult: ctx.conf.prevResult, pod })
      if (plan.interfaces.length === 0) return
      throw new CniError(CniCode.UnknownContainer, `container ${att.containerId} interface ${att.ifname} has no connection in network ${att.network} (expected ${plan.interfaces.map((i) => `${i.request.service} on ${i.ifname}`).join(', ')})`)
    }
    const problems = res.problems.map((p) => `${p.code}: ${p.message}`)
    const prev = ctx.conf.prevResult
    if (prev !== undefined) {
      const listed = new Set((prev.ips ?? []).map((i) => host(i.address)))
      for (const c of res.connections) {
        const ifname = c.mechanism?.parameters.name ?? ''
        if (!(prev.interfaces ?? []).some((i) => i.name === ifname && i.sandbox === att.netns)) problems.push(`prevResult: no interface ${ifname} in sandbox ${att.netns} (connection ${c.id})`)
        for (const a of c.context?.ipContext?.srcIpAddrs ?? []) if (!listed.has(host(a))) problems.push(`prevResult: ips does not list ${a} of ${ifname} (connection ${c.id})`)
      }
    }
    if (problems.length > 0) throw new CniError(NsmCode.DatapathMismatch, `container ${att.containerId} interface ${att.ifname}: ${problems.join('; ')}`)
  })
}
