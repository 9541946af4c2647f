// The reservation store contract shared by the allocators (../range, and anyone else who wants it).
//
// A reservation ties one address to one owner (container id + interface name) in one network. The
// contract a backend must keep:
// - reserve() is an atomic test-and-set on the address: of many concurrent calls for one address (from
//   any process), exactly one returns true. This alone guarantees an address is never handed out twice.
// - After a crash, a reservation is either wholly present or absent.
// - release() removes a reservation only if the named owner still holds it, even when other releases
//   and claims of the same address race with it (never someone else's fresh reservation).
// - list() returns whole reservations; it may miss changes racing with it, never invent any.
// - lastReserved/setLastReserved are hints for round-robin allocation: losing one is harmless.

export interface Owner {
  containerID: string
  ifname: string
}

export interface Reservation extends Owner {
  /** Canonical text form of the address (ipam/range/ip.ts formatIp). */
  ip: string
  /** Index of the range set the address came from. */
  rangeSet: number
}

export interface Store {
  /** Atomically claims `r.ip` for `r`'s owner. False when the address is already held. */
  reserve(r: Reservation): Promise<boolean>
  /** Makes every successful reserve() of this instance durable; called once before answering. */
  sync(): Promise<void>
  /** Removes the reservations of `ips` still held by `owner`; returns the addresses removed. */
  release(owner: Owner, ips: readonly string[]): Promise<string[]>
  /** Every reservation. */
  list(): Promise<Reservation[]>
  lastReserved(rangeSet: number): Promise<string | undefined>
  setLastReserved(rangeSet: number, ip: string): Promise<void>
  /** Throws (IpamError STORE) when the store cannot be used. */
  health(): Promise<void>
}

export const sameOwner = (a: Owner, b: Owner): boolean => a.containerID === b.containerID && a.ifname === b.ifname
