// STATUS: whether ADD can be served, i.e. whether the agent answers and says it is ready.
//   50  the agent is unreachable, or answers not ready (its reason in the message)
// 51 ("existing containers may have limited connectivity") is never answered: the datapaths the agent
// built are kernel state in the pods' namespaces and keep forwarding while the agent is down.
import { CniCode, CniError, type CallContext } from '../protocol/index'
import { toCniError, withAgent } from './agent'
import { parseNsmConfig } from './config'

export async function status(ctx: CallContext): Promise<void> {
  const cfg = parseNsmConfig(ctx)
  await withAgent(cfg.socket, cfg.timeoutMs, async (agent) => {
    let res
    try {
      res = await agent.status()
    } catch (err) {
      const e = toCniError(err, 'Status', cfg.socket)
      throw new CniError(CniCode.NotAvailable, e.message, { cause: err })
    }
    if (!res.ready) throw new CniError(CniCode.NotAvailable, `nsm agent at ${cfg.socket} is not ready: ${res.reason || 'no reason given'}`)
  })
}
