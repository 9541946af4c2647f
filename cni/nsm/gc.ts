// GC: the runtime lists the attachments of this network it still uses (cni.dev/valid-attachments); the
// agent closes every other connection it made for this network. Refused without the list (7) rather than
// wiping the network. Endpoint registrations are not touched here: they are per container, not per
// network, and the agent's healer unregisters those whose netns has gone.
import { CniCode, CniError, type CallContext } from '../protocol/index'
import { toCniError, withAgent } from './agent'
import { parseNsmConfig } from './config'

export async function gc(ctx: CallContext): Promise<void> {
  const valid = ctx.conf.validAttachments
  if (valid === undefined) throw new CniError(CniCode.InvalidConfig, 'cni.dev/valid-attachments: missing (GC needs the list of attachments to keep)')
  const cfg = parseNsmConfig(ctx)
  await withAgent(cfg.socket, cfg.timeoutMs, async (agent) => {
    await agent.gc(cfg.network, valid.map((a) => ({ containerId: a.containerID, ifname: a.ifname }))).catch((err: unknown) => {
      throw toCniError(err, 'GC', cfg.socket)
    })
  })
}
