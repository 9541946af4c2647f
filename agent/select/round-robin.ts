// agent/select/round-robin.ts: the round-robin cursor per network service (ARCHITECTURE §6).
//
// Needs: nothing. Owned by whoever runs selection (the agent's select element holds one for its lifetime).
// Contract: `peek` reads a service's cursor without moving it (explain), `advance` moves it after a
// selection was handed out. The cursor only grows; selection takes it modulo the number of winners, so a
// changing endpoint set never makes it invalid. `toJSON`/`from` let the agent persist it if it wants to.

export class RoundRobin {
  private readonly cursors = new Map<string, number>()

  peek(service: string): number {
    return this.cursors.get(service) ?? 0
  }

  advance(service: string): void {
    // Wrap well before 2^53 so the cursor stays an exact integer forever.
    this.cursors.set(service, (this.peek(service) + 1) % Number.MAX_SAFE_INTEGER)
  }

  /** Forgets a service (e.g. when it is unregistered). */
  forget(service: string): void {
    this.cursors.delete(service)
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries(this.cursors)
  }

  static from(state: Readonly<Record<string, number>>): RoundRobin {
    const rr = new RoundRobin()
    for (const [k, v] of Object.entries(state)) {
      if (Number.isSafeInteger(v) && v >= 0) rr.cursors.set(k, v)
    }
    return rr
  }
}
