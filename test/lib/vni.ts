// Helpers for the VNI claim tests (agent/store/vni-claims.ts), on any store: the VNI claims a store holds,
// and a store whose lost creates are counted (that concurrent agents did meet).
import { KvConflict, type Kv } from '../../agent/store/kv.js'
import type { VniClaimValue } from '../../agent/store/vni-claims.js'

/** The VNI claims in the store, by name (address claims, sharing the kind, left out). */
export async function storedVniClaims(kv: Kv): Promise<Map<string, VniClaimValue>> {
  const { entries } = await kv.list('claims')
  return new Map(entries.filter((e) => e.name.startsWith('vni-')).map((e) => [e.name, e.value as VniClaimValue]))
}

/** `kv` whose creates that lose are counted. */
export function countingConflicts(kv: Kv): { kv: Kv; conflicts: () => number } {
  let n = 0
  const wrapped: Kv = Object.create(kv) as Kv
  wrapped.create = async (...args) => {
    try {
      return await kv.create(...args)
    } catch (err) {
      if (err instanceof KvConflict) n++
      throw err
    }
  }
  return { kv: wrapped, conflicts: () => n }
}
