// DEL, holding the attachment's lock: close every connection of the attachment through the pipeline (the
// same path as the NSM API's Close: its per-id lock, its teardown), plus attachment mode's conventional id
// `<container id>-<ifname>` in case the table lost the attachment, then unregister the endpoints a CNI ADD
// registered for the container (named after its id, conf/endpoint-names.ts: no pod lookup, the pod may be
// gone from the API already).
//
// Idempotent: closing an unknown id succeeds, so a repeated DEL, a DEL without CNI_NETNS, after the netns
// is gone, or after the agent lost its state all succeed. It stops at the first connection it cannot
// close (11, try again: that connection stays in the table for the runtime's retried DEL).
import { Connection } from '../../proto/gen/networkservice/connection.js'
import { CniCode, CniError, type CallContext } from '../../cni/protocol/index.js'
import type { AttachmentInfo } from '../server/handler.js'
import { parseNsmConfig } from './config.js'
import { callContext } from './context.js'
import { toCniError, type CniDeps } from './deps.js'
import { unregisterContainer } from './endpoint.js'
import { connectionId } from './plan.js'

export async function del(deps: CniDeps, ctx: CallContext): Promise<void> {
  const cfg = parseNsmConfig(ctx)
  const att: AttachmentInfo = { network: cfg.network, containerId: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns }
  const conns = deps.table.byAttachment(att.network, att.containerId, att.ifname).map((e) => e.connection)
  if (ctx.conf.prevResult === undefined) {
    const id = connectionId(att.containerId, att.ifname)
    if (!conns.some((c) => c.id === id)) conns.push(deps.table.get(id)?.connection ?? Connection.fromPartial({ id }))
  }
  const call = callContext(deps, att.netns === '' ? undefined : att)
  const closed: string[] = []
  for (const c of conns) {
    try {
      await deps.handler().close(c, call)
    } catch (err) {
      deps.log.warn('DEL failed', { containerId: att.containerId, ifname: att.ifname, closed, connection: c.id, err })
      // Whatever failed, the runtime's answer is the same: retry the DEL (11); the cause is in the message.
      throw new CniError(CniCode.TRY_AGAIN_LATER, toCniError(err, `close ${c.id}`).message, { cause: err })
    }
    closed.push(c.id)
  }
  let unregistered: string[]
  try {
    unregistered = await unregisterContainer(deps.registry, att.containerId)
  } catch (err) {
    throw new CniError(CniCode.TRY_AGAIN_LATER, toCniError(err, 'unregister endpoints').message, { cause: err })
  }
  deps.log.info('DEL', { network: att.network, containerId: att.containerId, ifname: att.ifname, netns: att.netns, closed, unregistered })
}
