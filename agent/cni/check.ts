// CHECK, holding the attachment's lock: the attachment's connections are UP and their datapaths intact
// (the mechanism checks links, state, addresses and routes on both sides), and prevResult lists each
// connection's interface in this sandbox and its addresses. An attachment with no connection is fine only
// when nothing was asked of it (a chained pod without annotations), decided as ADD would.
//   3   no connection although the attachment asks for services
//   110 the datapath or prevResult does not match (every problem listed)
import { State } from '../../proto/gen/networkservice/connection.js'
import { CniCode, CniError, type CallContext } from '../../cni/protocol/index.js'
import { parseNsmConfig } from './config.js'
import type { CniDeps } from './deps.js'
import { makePlan } from './plan.js'
import { lookupPod } from './pod.js'

const host = (cidr: string): string => cidr.split('/')[0] ?? cidr

export async function check(deps: CniDeps, ctx: CallContext): Promise<void> {
  const cfg = parseNsmConfig(ctx)
  const { containerId, ifname, netns } = ctx.env
  const entries = deps.table.byAttachment(cfg.network, containerId, ifname)
  if (entries.length === 0) {
    const pod = await lookupPod(deps, cfg)
    const plan = makePlan({ cfg, containerId, ifname, prevResult: ctx.conf.prevResult, pod })
    if (plan.interfaces.length === 0) return
    throw new CniError(CniCode.UNKNOWN_CONTAINER, `container ${containerId} interface ${ifname} has no connection in network ${cfg.network} (expected ${plan.interfaces.map((i) => `${i.request.service} on ${i.ifname}`).join(', ')})`)
  }
  const problems: string[] = []
  for (const e of entries) {
    const c = e.connection
    if (c.state !== State.UP) problems.push(`connection-down: connection ${c.id} is ${State[c.state] ?? c.state}`)
    for (const p of await deps.check(e)) problems.push(`${p.code}: ${p.message}`)
  }
  const prev = ctx.conf.prevResult
  if (prev !== undefined) {
    const listed = new Set((prev.ips ?? []).map((i) => host(i.address)))
    for (const { connection: c } of entries) {
      const name = c.mechanism?.parameters.name ?? ''
      if (!(prev.interfaces ?? []).some((i) => i.name === name && i.sandbox === netns)) problems.push(`prevResult: no interface ${name} in sandbox ${netns} (connection ${c.id})`)
      for (const a of c.context?.ipContext?.srcIpAddrs ?? []) if (!listed.has(host(a))) problems.push(`prevResult: ips does not list ${a} of ${name} (connection ${c.id})`)
    }
  }
  if (problems.length > 0) throw new CniError(CniCode.DATAPATH_MISMATCH, `container ${containerId} interface ${ifname}: ${problems.join('; ')}`)
}
