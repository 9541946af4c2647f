// validate — first element. Checks every field the later elements rely on and rejects a bad request
// with INVALID_ARGUMENT (or BAD_NETNS, MECHANISM_NOT_SUPPORTED) naming the field, before anything changes.
// The mechanism is the first requested type the mechanism registry serves; its own parameters (and the
// client netns, through the netns policy) are checked by that mechanism (agent/mechanisms/).
// Provides the chosen mechanism, the client's netns, interface name and labels, and the previous record
// when this id was requested before.
// Needs: nothing. Undoes: nothing (changes nothing).
import { isValidServiceName } from '../../conf/networkservice.js'
import type { MechanismRegistry } from '../mechanisms/registry.js'
import { AgentError } from '../errors.js'
import type { Element, PipelineRequest } from './chain.js'
import type { DatapathRecord } from './types.js'

export interface ValidateOptions {
  mechanisms: MechanismRegistry
  /** The stored record for a connection id, if any. */
  recordOf(id: string): DatapathRecord | undefined
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,252}$/

export function validate(opts: ValidateOptions): Element {
  /** Every check, the state it provides filled in; throws the first failure. */
  const check = (r: PipelineRequest): void => {
    const c = r.connection
    if (!ID_RE.test(c.id)) throw AgentError.invalid('connection.id', c.id === '' ? 'is required' : `${JSON.stringify(c.id)} must be 1-253 characters of letters, digits, _ . : -`)
    if (c.networkService === '') throw AgentError.invalid('connection.network_service', 'is required')
    if (!isValidServiceName(c.networkService)) throw AgentError.invalid('connection.network_service', `${JSON.stringify(c.networkService)} is not a valid service name`)
    for (const [k, v] of Object.entries(c.labels)) {
      if (k === '' || k.length > 317) throw AgentError.invalid('connection.labels', `key ${JSON.stringify(k)} is not a label key`)
      if (v.length > 63) throw AgentError.invalid(`connection.labels[${k}]`, 'value is longer than 63 characters')
    }
    const requested = c.mechanism !== undefined ? [c.mechanism] : r.mechanismPreferences
    const field = c.mechanism !== undefined ? 'connection.mechanism' : 'mechanism_preferences'
    if (requested.length === 0) throw AgentError.invalid('mechanism_preferences', 'at least one mechanism is required')
    const { mechanism, index, parameters } = opts.mechanisms.pick(requested, field)
    const at = c.mechanism !== undefined ? field : `${field}[${index}]`
    const { netns, ifname } = mechanism.parseRequest(parameters, at)
    const previous = opts.recordOf(c.id)
    if (previous !== undefined && (previous.clientNetns !== netns || previous.clientIfname !== ifname)) {
      throw AgentError.invalid('connection.id', `${c.id} already exists for ${previous.clientIfname} in ${previous.clientNetns}`)
    }
    r.state.mechanism = mechanism
    r.state.clientNetns = netns
    r.state.clientIfname = ifname
    r.state.clientLabels = { ...c.labels }
    if (previous !== undefined) r.state.previous = previous
  }
  return {
    name: 'validate',
    needs: [],
    provides: ['mechanism', 'clientNetns', 'clientIfname', 'clientLabels', 'previous'],
    // Its close only hands the call on: no span, no timing of its own (chain.ts `observed`).
    observed: { close: false },
    wrap: (next) => ({
      // Not async: its checks throw before anything runs, and a valid request gets the next element's promise
      // as it is (no promise of its own: the chain's instrumentation times it without a reaction of its own).
      request(r) {
        try {
          check(r)
        } catch (err) {
          return Promise.reject(err)
        }
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
}
