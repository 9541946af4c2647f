// validate — first element. Checks every field the later elements rely on and rejects a bad request
// with INVALID_ARGUMENT (or BAD_NETNS) naming the field, before anything changes. Provides the client's
// netns, interface name and labels, and the previous record when this id was requested before.
// Needs: nothing. Undoes: nothing (changes nothing).
import { NetnsAllowlist } from '../../pkg/netns.js'
import { KernelError } from '../../pkg/errors.js'
import { validateLinkName } from '../../pkg/netlink/links.js'
import { isValidServiceName } from '../../conf/networkservice.js'
import { AgentError } from '../server/agent-error.js'
import type { Element } from './chain.js'
import type { DatapathRecord } from './types.js'

export interface ValidateOptions {
  allowlist: NetnsAllowlist
  /** The stored record for a connection id, if any. */
  recordOf(id: string): DatapathRecord | undefined
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,252}$/

export function validate(opts: ValidateOptions): Element {
  return {
    name: 'validate',
    needs: [],
    provides: ['clientNetns', 'clientIfname', 'clientLabels', 'previous'],
    wrap: (next) => ({
      async request(r) {
        const c = r.connection
        if (!ID_RE.test(c.id)) throw AgentError.invalid('connection.id', c.id === '' ? 'is required' : `${JSON.stringify(c.id)} must be 1-253 characters of letters, digits, _ . : -`)
        if (c.networkService === '') throw AgentError.invalid('connection.network_service', 'is required')
        if (!isValidServiceName(c.networkService)) throw AgentError.invalid('connection.network_service', `${JSON.stringify(c.networkService)} is not a valid service name`)
        for (const [k, v] of Object.entries(c.labels)) {
          if (k === '' || k.length > 317) throw AgentError.invalid('connection.labels', `key ${JSON.stringify(k)} is not a label key`)
          if (v.length > 63) throw AgentError.invalid(`connection.labels[${k}]`, 'value is longer than 63 characters')
        }
        const mechs = c.mechanism !== undefined ? [c.mechanism] : r.mechanismPreferences
        const field = c.mechanism !== undefined ? 'connection.mechanism' : 'mechanism_preferences'
        const idx = mechs.findIndex((m) => m.type === 'KERNEL')
        if (mechs.length === 0) throw AgentError.invalid('mechanism_preferences', 'at least one mechanism is required')
        const kernel = mechs[idx]
        if (kernel === undefined) {
          throw new AgentError('MECHANISM_NOT_SUPPORTED', `${field}: none of ${mechs.map((m) => m.type || '(empty)').join(', ')} is supported (KERNEL is)`)
        }
        const at = c.mechanism !== undefined ? field : `${field}[${idx}]`
        const ifname = kernel.parameters.name ?? ''
        try {
          validateLinkName(ifname, `${at}.parameters.name`)
        } catch (err) {
          throw AgentError.invalid(`${at}.parameters.name`, (err as Error).message)
        }
        const url = kernel.parameters.inodeURL ?? ''
        if (!url.startsWith('file://')) throw AgentError.invalid(`${at}.parameters.inodeURL`, `${JSON.stringify(url)} must be a file:// URL of a netns`)
        let netns: string
        try {
          netns = opts.allowlist.check(decodeURIComponent(url.slice('file://'.length)))
        } catch (err) {
          const msg = err instanceof KernelError ? err.message : String(err)
          throw new AgentError('BAD_NETNS', `${at}.parameters.inodeURL: ${msg}`, { field: `${at}.parameters.inodeURL`, cause: err })
        }
        const previous = opts.recordOf(c.id)
        if (previous !== undefined && (previous.clientNetns !== netns || previous.clientIfname !== ifname)) {
          throw AgentError.invalid('connection.id', `${c.id} already exists for ${previous.clientIfname} in ${previous.clientNetns}`)
        }
        r.state.clientNetns = netns
        r.state.clientIfname = ifname
        r.state.clientLabels = { ...c.labels }
        if (previous !== undefined) r.state.previous = previous
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
}
