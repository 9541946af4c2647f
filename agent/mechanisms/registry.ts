// The mechanisms the agent serves, keyed by NSM mechanism type. Validation picks from here (a type not
// registered is MECHANISM_NOT_SUPPORTED naming the field), and the pipeline, CHECK and healing look a
// record's implementation up here by the type stored in it.
import { AgentError } from '../errors.js'
import type { DatapathRecord, Mechanism, RequestedMechanism } from './types.js'

export class MechanismRegistry {
  private readonly byType = new Map<string, Mechanism>()

  constructor(mechanisms: Iterable<Mechanism>) {
    for (const m of mechanisms) {
      if (this.byType.has(m.type)) throw new Error(`mechanism registry: ${m.type} is registered twice`)
      this.byType.set(m.type, m)
    }
  }

  get(type: string): Mechanism | undefined {
    return this.byType.get(type)
  }

  /** The implementation that built `rec`; INTERNAL when none is registered (a record from another build). */
  of(rec: DatapathRecord): Mechanism {
    const m = this.byType.get(rec.mechanism.type)
    if (m === undefined) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: no mechanism ${rec.mechanism.type} to handle its datapath`)
    return m
  }

  types(): string[] {
    return [...this.byType.keys()]
  }

  /** The mechanism serving a requested type: one that claims it (`serves` + `accepts`), else the one registered under it. */
  private serving(r: RequestedMechanism): Mechanism | undefined {
    for (const m of this.byType.values()) if (m.serves?.includes(r.type) === true && (m.accepts?.(r) ?? true)) return m
    return this.byType.get(r.type)
  }

  /**
   * The first of the requested mechanisms (NSM preference order) that is registered, with its index and
   * the request's entry for it.
   * Throws MECHANISM_NOT_SUPPORTED naming `field` and what is supported when none is.
   */
  pick(requested: readonly RequestedMechanism[], field: string): { mechanism: Mechanism; index: number; parameters: RequestedMechanism } {
    for (const [index, r] of requested.entries()) {
      const mechanism = this.serving(r)
      if (mechanism !== undefined) return { mechanism, index, parameters: r }
    }
    const requestable = [...new Set([...this.byType.values()].flatMap((m) => (m.serves === undefined ? [m.type] : [...m.serves])))]
    throw new AgentError(
      'MECHANISM_NOT_SUPPORTED',
      `${field}: none of ${requested.map((m) => m.type || '(empty)').join(', ')} is supported (${requestable.join(', ')} ${requestable.length === 1 ? 'is' : 'are'})`,
      { field },
    )
  }
}
