// path — this agent's segment of the connection's path, as each NSM hop adds its own (ARCHITECTURE §12):
// name (the node), id (the connection's), a fresh opaque token and `expires` = now + the token lifetime.
// A caller's path (an NSM client's segment, or the client node's agent's) is kept and ours goes after it;
// a re-request of a connection this agent answered before (its stored path, healing) updates ours in place.
// Segments after ours are dropped: the next hop (a peer agent, an NSM endpoint) adds its own again.
//
// The endpoint's half of a remote cross-connect lives as long as its segment has not expired: the
// client's agent refreshes it (./remote.ts), and the endpoint node's agent closes it when it is not.
// Needs: nothing. Provides: nothing (it shapes `connection.path`). Undoes: nothing.
import { randomBytes } from 'node:crypto'
import type { Path, PathSegment } from '../../proto/gen/networkservice/connection.js'
import { timestampMs, timestampOf } from '../registry/records.js'
import type { Element } from './chain.js'

export interface PathOptions {
  /** This hop's name: the node name. */
  name: string
  /** How long a segment is valid without a refresh. */
  lifetimeMs: number
  now(): number
}

/** Our segment's index in `path`: where we stood (our name at path.index), else after the caller's. */
export function ownIndex(path: Path | undefined, name: string): number {
  const segs = path?.pathSegments ?? []
  if (segs.length === 0 || path === undefined) return 0
  const at = Math.min(Math.max(path.index, 0), segs.length - 1)
  return segs[at]?.name === name ? at : at + 1
}

/** `path` with our segment (fresh token and expiry) at its place; later segments dropped. */
export function withOwnSegment(path: Path | undefined, connectionId: string, o: PathOptions): Path {
  const index = ownIndex(path, o.name)
  const segs = (path?.pathSegments ?? []).slice(0, index)
  const segment: PathSegment = { name: o.name, id: connectionId, token: randomBytes(16).toString('hex'), expires: timestampOf(o.now() + o.lifetimeMs), metrics: {} }
  return { index, pathSegments: [...segs, segment] }
}

/** When our segment of `path` expires (ms), if it carries one. */
export function ownExpiry(path: Path | undefined, name: string): number | undefined {
  const segs = path?.pathSegments ?? []
  for (let i = segs.length - 1; i >= 0; i--) if (segs[i]?.name === name) return timestampMs(segs[i]?.expires)
  return undefined
}

export function pathElement(o: PathOptions): Element {
  return {
    name: 'path',
    needs: [],
    provides: [],
    // Its close only hands the call on: no span, no timing of its own (chain.ts `observed`).
    observed: { close: false },
    wrap: (next) => ({
      request: (r) => next.request({ ...r, connection: { ...r.connection, path: withOwnSegment(r.connection.path, r.connection.id, o) } }),
      close: (c) => next.close(c),
    }),
  }
}
