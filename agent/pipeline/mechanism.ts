// mechanism — builds the connection's datapath through the implementation validate picked from the
// mechanism registry by the requested type (agent/mechanisms/: KERNEL today). This element knows no
// datapath: it assembles the record (client side, MTU, the IP context the IPAM element computed, the
// mechanism's own part), asks the mechanism to build it, and answers with the mechanism and context the
// mechanism reports.
//
// On a re-request (refresh, heal) a datapath that is the same as the stored one and passes the
// mechanism's own intactness test (the one CHECK and restart reconciliation run) is left alone; otherwise
// the previous one is removed (by the mechanism that built it) and the new one built.
// Needs: mechanism, clientNetns, clientIfname, endpoint, addresses (and previous, to rebuild in place).
// Provides: datapath (the record persisted with the connection).
// Undoes: removes what it built when a later element fails. Close tears the datapath down (idempotent).
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import { State } from '../../proto/gen/networkservice/connection.js'
import type { MechanismRegistry } from '../mechanisms/registry.js'
import { sameDatapath } from '../mechanisms/record.js'
import { AgentError } from '../errors.js'
import { withUndo, type Element, type PipelineRequest } from './chain.js'
import type { RequestedMechanism } from '../mechanisms/types.js'
import type { DatapathRecord } from './types.js'

export interface MechanismElementOptions {
  mechanisms: MechanismRegistry
  /** MTU when the request does not set one. */
  defaultMtu: number
  onUndoError(err: unknown): void
}

export function mechanismElement(opts: MechanismElementOptions): Element {
  // The entry validate picked (the same pick, deterministic): its parameters are the mechanism's to plan with.
  const requestedOf = (r: PipelineRequest): { requested?: RequestedMechanism } => {
    if (r.connection.mechanism !== undefined) return { requested: r.connection.mechanism }
    try {
      return { requested: opts.mechanisms.pick(r.mechanismPreferences, 'mechanism_preferences').parameters }
    } catch {
      return {}
    }
  }
  return {
    name: 'mechanism',
    needs: ['mechanism', 'clientNetns', 'clientIfname', 'endpoint', 'addresses'],
    provides: ['datapath'],
    wrap: (next) => ({
      async request(r) {
        const { mechanism, clientNetns, clientIfname, endpoint, addresses, previous } = r.state
        if (mechanism === undefined || clientNetns === undefined || clientIfname === undefined || endpoint === undefined || addresses === undefined) {
          throw new AgentError('INTERNAL', 'mechanism: a required earlier element did not run')
        }
        const c = r.connection
        const { record: p2p, ...ipContext } = addresses
        const record: DatapathRecord = {
          version: 2,
          connectionId: c.id,
          service: c.networkService,
          endpointName: endpoint.name,
          clientNetns,
          clientIfname,
          mtu: c.context?.MTU !== undefined && c.context.MTU > 0 ? c.context.MTU : opts.defaultMtu,
          ipContext,
          mechanism: mechanism.plan({ connection: c, client: { netns: clientNetns, ifname: clientIfname }, endpoint, ...(r.state.peerNode === undefined ? {} : { peer: r.state.peerNode }), ...requestedOf(r) }),
          p2p,
          clientLabels: r.state.clientLabels ?? {},
        }
        const unchanged = previous !== undefined && sameDatapath(previous, record) && (await mechanism.check(record)).length === 0
        if (!unchanged) {
          if (previous !== undefined && previous.mechanism.type === record.mechanism.type && mechanism.replace !== undefined) await mechanism.replace(previous, record)
          else {
            if (previous !== undefined) await opts.mechanisms.of(previous).remove(previous)
            await mechanism.build(record)
          }
        }
        r.state.datapath = record
        const out: Connection = {
          ...c,
          mechanism: mechanism.connectionMechanism(record),
          context: mechanism.context(record, c.context),
          networkServiceEndpointName: endpoint.name,
          state: State.UP,
        }
        return withUndo(
          () => next.request({ ...r, connection: out }),
          async () => {
            if (!unchanged) await mechanism.remove(record)
          },
          opts.onUndoError,
        )
      },
      async close(cl) {
        await next.close(cl)
        if (cl.record !== undefined) await opts.mechanisms.of(cl.record).close(cl.record)
      },
    }),
  }
}
