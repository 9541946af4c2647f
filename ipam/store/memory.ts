// An in-memory Store for unit tests of allocators (same contract as the file store, one process only).
import { sameOwner, type Owner, type Reservation, type Store } from './store'

export class MemoryStore implements Store {
  readonly reservations = new Map<string, Reservation>()
  readonly last = new Map<number, string>()
  /** Set to make every call fail (to test error paths). */
  broken: Error | undefined

  private ok(): void {
    if (this.broken !== undefined) throw this.broken
  }
  async reserve(r: Reservation): Promise<boolean> {
    this.ok()
    if (this.reservations.has(r.ip)) return false
    this.reservations.set(r.ip, { ...r })
    return true
  }
  async sync(): Promise<void> {
    this.ok()
  }
  async release(owner: Owner, ips: readonly string[]): Promise<string[]> {
    this.ok()
    const done: string[] = []
    for (const ip of ips) {
      const r = this.reservations.get(ip)
      if (r !== undefined && sameOwner(r, owner)) {
        this.reservations.delete(ip)
        done.push(ip)
      }
    }
    return done
  }
  async list(): Promise<Reservation[]> {
    this.ok()
    return [...this.reservations.values()].map((r) => ({ ...r }))
  }
  async lastReserved(rangeSet: number): Promise<string | undefined> {
    this.ok()
    return this.last.get(rangeSet)
  }
  async setLastReserved(rangeSet: number, ip: string): Promise<void> {
    this.ok()
    this.last.set(rangeSet, ip)
  }
  async health(): Promise<void> {
    this.ok()
  }
}
