// agent/pipeline/path.ts: where this agent's path segment goes and what it carries.
import t from 'tap'
import { ownExpiry, ownIndex, withOwnSegment } from '../../agent/pipeline/path'
import type { Path, PathSegment } from '../../proto/gen/networkservice/connection'

const seg = (name: string, expiresS = 0): PathSegment => ({ name, id: `${name}-id`, token: 't', expires: { seconds: expiresS, nanos: 0 }, metrics: {} })
const o = { name: 'n2', lifetimeMs: 60_000, now: () => 1_000_000 }

t.test('first hop, after a caller, and in place on a re-request', async (t) => {
  t.equal(ownIndex(undefined, 'n2'), 0)
  const first = withOwnSegment(undefined, 'c1', o)
  t.equal(first.index, 0)
  t.match(first.pathSegments[0], { name: 'n2', id: 'c1', expires: { seconds: 1060, nanos: 0 } })
  t.match(first.pathSegments[0]?.token, /^[0-9a-f]{32}$/)

  const caller: Path = { index: 0, pathSegments: [seg('n1')] }
  const after = withOwnSegment(caller, 'c1', o)
  t.equal(after.index, 1, 'after the caller')
  t.same(after.pathSegments.map((s) => s.name), ['n1', 'n2'])

  // Our own stored path (with a later hop's segment) requested again: ours updated, later ones dropped.
  const stored: Path = { index: 1, pathSegments: [seg('n1'), seg('n2', 5), seg('n3')] }
  const again = withOwnSegment(stored, 'c1', o)
  t.equal(again.index, 1)
  t.same(again.pathSegments.map((s) => s.name), ['n1', 'n2'])
  t.not(again.pathSegments[1]?.token, 't', 'a fresh token')
  t.equal(ownExpiry(again, 'n2'), 1_060_000)
  t.equal(ownExpiry(again, 'n9'), undefined)

  // An out-of-range index from a client is clamped, never a hole in the path.
  const odd = withOwnSegment({ index: 7, pathSegments: [seg('nsc')] }, 'c1', o)
  t.same(odd.pathSegments.map((s) => s.name), ['nsc', 'n2'])
  t.equal(odd.index, 1)
})
