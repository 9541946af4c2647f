// GC: the runtime lists the attachments of this network it still uses (cni.dev/valid-attachments); every
// other connection made for this network is closed, each under its attachment's lock. A null list
// (libcni's nil: CRI-O's GC of a network without pods) or an absent one (libcni v1.2.0's `cnitool gc`) is
// the empty list, as the reference plugins read it: every connection of the network is closed. Endpoint
// registrations are per container, not per network: the healer unregisters those whose netns has gone.
//
// STATUS: whether ADD can be served: 50 when the agent is not ready (its reason). 51 is never answered:
// the datapaths are kernel state in the pods' namespaces and keep forwarding whatever the agent does.
import { CniCode, CniError, type CallContext } from '../../cni/protocol/index.js'
import { parseNsmConfig } from './config.js'
import { callContext } from './context.js'
import type { CniDeps } from './deps.js'
import { attachmentKey, type AttachmentLocks } from './lock.js'

export async function gc(deps: CniDeps, locks: AttachmentLocks, ctx: CallContext): Promise<void> {
  const valid = ctx.conf.validAttachments
  const cfg = parseNsmConfig(ctx)
  const keep = new Set(valid.map((a) => attachmentKey(a.containerID, a.ifname)))
  const closed: string[] = []
  const failures: string[] = []
  for (const e of deps.table.byAttachment(cfg.network)) {
    const a = e.attachment
    if (a === undefined || keep.has(attachmentKey(a.containerId, a.ifname))) continue
    await locks.run(attachmentKey(a.containerId, a.ifname), async () => {
      if (deps.table.get(e.connection.id) === undefined) return // closed meanwhile (a DEL)
      await deps.handler().close(e.connection, callContext(deps, a))
      closed.push(e.connection.id)
    }).catch((err: unknown) => {
      failures.push(`${e.connection.id}: ${(err as Error).message}`)
    })
  }
  deps.log.info('GC', { network: cfg.network, closed, failures })
  if (failures.length > 0) throw new CniError(CniCode.TRY_AGAIN_LATER, `GC closed ${closed.length} connection(s) but failed on: ${failures.join('; ')}`)
}

export function status(deps: CniDeps, ctx: CallContext): void {
  parseNsmConfig(ctx)
  const r = deps.shutdown.aborted ? { ready: false, reason: 'shutting down' } : deps.readiness()
  if (!r.ready) throw new CniError(CniCode.NOT_AVAILABLE, `nsm agent is not ready: ${r.reason || 'no reason given'}`)
}
