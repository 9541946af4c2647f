// DEL: close every connection of this attachment and unregister the endpoints this container registered,
// in one agent call: Detach (the agent lists the attachment's connections, closes each through the same
// path as Close, then unregisters the endpoints named after the container id, conf/endpoint-names.ts).
// Attachment mode's conventional id `<container id>-<ifname>` goes with it, closed too in case the table
// lost the attachment. An agent older than Detach answers UNIMPLEMENTED: then the same is done call by
// call (Check, a Close per connection, ListEndpoints, UnregisterEndpoint per endpoint).
//
// Idempotent: the agent lists the attachment's connections and closing an unknown id succeeds, so
// a repeated DEL, a DEL without CNI_NETNS, after the netns is gone, or after the agent lost its state all
// succeed. No pod lookup: the pod may already be gone from the API.
//
// Agent not running (no socket, connection refused): DEL succeeds, with a warning on stderr. A DEL that
// fails is retried by the runtime for as long as it fails, which keeps pods Terminating for as long as
// the agent is down (or forever, once NSM is uninstalled), while nothing is lost by succeeding: the
// kernel state lives in the pod's netns and goes with it, and when the agent runs again it closes every
// connection whose client netns has gone and unregisters every endpoint whose netns has gone (healing,
// DESIGN §10), and CNI GC closes the rest. An agent that answers but fails (or times out) is an error
// (11, try again): it may hold state it could not release yet; the agent stops at the first connection
// it cannot close, which stays in its table for the retried DEL.
import type { Connection } from '../../proto/gen/networkservice/connection'
import type { CallContext } from '../protocol/index'
import { isUnimplemented, isUnreachable, toCniError, withAgent, type Agent, type AttachmentRef } from './agent'
import { bareConnection } from './add'
import { parseNsmConfig } from './config'
import { unregisterContainer } from './endpoint'
import { connectionId } from './plan'

/** DEL against an agent without Detach: what Detach does, one call at a time (`step` names the call). */
async function detachCallByCall(agent: Agent, att: AttachmentRef, extraIds: readonly string[], step: { name: string }): Promise<void> {
  step.name = 'Check'
  const listed = await agent.check(att, att.ifname)
  const conns: Connection[] = [...listed.connections]
  for (const id of extraIds) if (!conns.some((c) => c.id === id)) conns.push(bareConnection(id))
  for (const c of conns) {
    step.name = `Close ${c.id}`
    await agent.closeConnection(c, att)
  }
  step.name = 'UnregisterEndpoint'
  await unregisterContainer(agent, att.containerId)
}

export async function del(ctx: CallContext, warn: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<void> {
  const cfg = parseNsmConfig(ctx)
  const att: AttachmentRef = { network: cfg.network, containerId: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns }
  // Attachment mode's one connection by its conventional id too, in case the table lost the attachment.
  const extraIds = ctx.conf.prevResult === undefined ? [connectionId(att.containerId, att.ifname)] : []
  await withAgent(cfg.socket, cfg.timeoutMs, async (agent) => {
    const step = { name: 'Detach' }
    try {
      try {
        await agent.detach(att, extraIds)
      } catch (err) {
        if (!isUnimplemented(err)) throw err
        await detachCallByCall(agent, att, extraIds, step)
      }
    } catch (err) {
      if (isUnreachable(err)) {
        warn(`nsm: DEL of ${att.containerId}/${att.ifname}: the agent at ${cfg.socket} is not running; its connections are closed when it runs again (heal, GC)`)
        return
      }
      throw toCniError(err, step.name, cfg.socket)
    }
  })
}
