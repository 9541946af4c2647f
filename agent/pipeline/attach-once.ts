// attach-once — first element: the Requests of a CNI ADD create a connection, they never refresh one, so
// the agent itself answers "a second ADD of this attachment" (CNI 106) in the same round trip as the
// Request (the plugin no longer asks Check first, and two concurrent ADDs cannot both pass a Check).
//
// The plugin marks an ADD's Requests with `nsmcni-add` metadata (ADD_METADATA, next to the nsmcni-*
// attachment keys): `first` on its first Request, `next` on the later ones of the same ADD (chained mode
// makes one per interface). Without the key a Request passes straight through: NSM clients refresh by
// re-sending a Request with the same id, and healing calls the chain without metadata.
//   first        refused when the attachment (network, container id, CNI_IFNAME) has any connection in
//                the table;
//   first, next  refused when a connection with this id exists (a create never becomes a refresh), or
//                when a create for the same attachment is in flight: the plugin sends an ADD's Requests
//                one after another, so a create in flight when one starts is another ADD's.
// The refusal is ALREADY_ATTACHED (gRPC ALREADY_EXISTS, CNI 106) naming the attachment and the existing
// (or in-flight) connection ids. A bad value, or the key without the four attachment keys, is
// INVALID_ARGUMENT naming `nsmcni-add`.
//
// Concurrency: the handler's per-id lock (handler.ts) serializes two ADDs' Requests of the same id, so
// the later one finds the earlier one's connection in the table; creates of one attachment under
// different ids are tracked here in memory, from the check to the end of the request (released when it
// settles, success or failure). The table lookups and the registration run with no `await` between
// them, so two creates of one attachment can never both pass.
//
// Position: first, before validate. A create of an existing attachment or id is refused before any work
// (a 106 costs no validation, no netns open), and it is refused as 106 even when validate would have
// answered otherwise (validate's "id already exists for another netns" is a refresh's error, never a
// create's). Nothing here relies on validated fields: the id is only a map key and a word in a message.
// Needs: nothing. Provides: nothing. Undoes: nothing (it changes no kernel or store state; its in-flight
// entry is released in `finally`).
import { AgentError } from '../server/agent-error.js'
import { ADD_METADATA, ATTACHMENT_METADATA, type AddPhase, type AttachmentInfo } from '../server/handler.js'
import type { ConnectionEntry } from '../connections/table.js'
import type { Element } from './chain.js'

export interface AttachOnceOptions {
  /** The table's entry for a connection id, if any. */
  connection(id: string): ConnectionEntry | undefined
  /** The table's connections serving this CNI attachment (network, container id, ifname). */
  connectionsOf(a: AttachmentInfo): ConnectionEntry[]
}

/** Reads `nsmcni-add`: undefined when absent (a plain NSM Request), INVALID_ARGUMENT when malformed. */
export function addPhaseFrom(metadata: ReadonlyMap<string, string>): AddPhase | undefined {
  const v = metadata.get(ADD_METADATA.key)
  if (v === undefined) return undefined
  if (v === ADD_METADATA.first || v === ADD_METADATA.next) return v
  throw AgentError.invalid(ADD_METADATA.key, `${JSON.stringify(v)} must be "${ADD_METADATA.first}" or "${ADD_METADATA.next}"`)
}

/** Creates in flight per attachment: the connection ids being requested with `nsmcni-add`. */
class InFlightCreates {
  private readonly byAttachment = new Map<string, string[]>()

  ids(key: string): readonly string[] {
    return this.byAttachment.get(key) ?? []
  }

  add(key: string, id: string): void {
    const ids = this.byAttachment.get(key)
    if (ids === undefined) this.byAttachment.set(key, [id])
    else ids.push(id)
  }

  release(key: string, id: string): void {
    const ids = this.byAttachment.get(key)
    if (ids === undefined) return
    const i = ids.indexOf(id)
    if (i >= 0) ids.splice(i, 1)
    if (ids.length === 0) this.byAttachment.delete(key)
  }
}

// NUL cannot occur in gRPC metadata values, so the key is unambiguous.
const attachmentKey = (a: AttachmentInfo): string => `${a.network}\0${a.containerId}\0${a.ifname}`

/** Who holds an existing connection, and how it goes away. */
function owner(e: ConnectionEntry): string {
  const a = e.attachment
  return a === undefined ? 'made by an NSM client, not by a CNI ADD: close it first' : `for container ${a.containerId} interface ${a.ifname} of network ${a.network}: DEL it first`
}

/** The refusal for this create, or undefined when it may go ahead. Synchronous on purpose (see above). */
function refusal(o: AttachOnceOptions, inFlight: InFlightCreates, phase: AddPhase, a: AttachmentInfo, id: string): AgentError | undefined {
  if (phase === ADD_METADATA.first) {
    const existing = o.connectionsOf(a)
    if (existing.length > 0) return AgentError.alreadyAttached(a, existing.map((e) => e.connection.id))
  }
  const same = o.connection(id)
  if (same !== undefined) {
    return new AgentError('ALREADY_ATTACHED', `container ${a.containerId} interface ${a.ifname} cannot be attached to network ${a.network}: connection ${id} already exists, ${owner(same)}`)
  }
  const busy = inFlight.ids(attachmentKey(a))
  if (busy.length > 0) return AgentError.alreadyAttached(a, busy, 'being made by another ADD')
  return undefined
}

export function attachOnce(opts: AttachOnceOptions): Element {
  const inFlight = new InFlightCreates()
  return {
    name: 'attach-once',
    needs: [],
    provides: [],
    wrap: (next) => ({
      async request(r) {
        const phase = addPhaseFrom(r.ctx.metadata)
        if (phase === undefined) return next.request(r)
        const a = r.ctx.attachment
        if (a === undefined) {
          throw AgentError.invalid(ADD_METADATA.key, `needs the CNI attachment metadata (${Object.values(ATTACHMENT_METADATA).join(', ')})`)
        }
        const id = r.connection.id
        const refused = refusal(opts, inFlight, phase, a, id)
        if (refused !== undefined) throw refused
        const key = attachmentKey(a)
        inFlight.add(key, id)
        try {
          return await next.request(r)
        } finally {
          inFlight.release(key, id)
        }
      },
      close: (c) => next.close(c),
    }),
  }
}
