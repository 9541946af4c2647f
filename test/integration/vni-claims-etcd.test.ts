// agent/store/vni-claims.ts against a real etcd (test/lib/etcd.ts, one member on loopback): two agents on
// two separate EtcdKv connections take VNIs for connections to one endpoint node at once, from a small
// range (and from one forced starting VNI), so that their claims do meet in etcd's transactions; none
// collide on the shared node, every connection is claimed on both of its nodes, and a third agent learns
// them all from its watch. Released, nothing is left.
import t, { type Test } from 'tap'
import { EtcdKv } from '../../agent/store/etcd.js'
import type { Kv } from '../../agent/store/kv.js'
import { VniClaims, vniClaimName, type VniClaimsOptions } from '../../agent/store/vni-claims.js'
import { startEtcd } from '../lib/etcd.js'
import { countingConflicts, storedVniClaims as stored } from '../lib/vni.js'

const TIMEOUT_MS = 3000
const PREFIX = `/nsm-test-vni-${process.pid}`

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function open(t: Test, endpoints: string[]): Promise<EtcdKv> {
  const kv = await EtcdKv.open({ endpoints, prefix: PREFIX, timeoutMs: TIMEOUT_MS })
  t.teardown(() => kv.close())
  return kv
}

async function start(t: Test, kv: Kv, node: string, opts: VniClaimsOptions): Promise<VniClaims> {
  const c = await VniClaims.start(kv, node, opts)
  t.teardown(() => c.stop())
  return c
}

/** Polls `cond` until it holds; fails after 30 s (a hang, not a speed target). */
async function waitUntil(what: string, cond: () => boolean): Promise<void> {
  for (let waited = 0; !cond(); waited += 20) {
    if (waited > 30_000) throw new Error(`${what}: not within 30 s`)
    await sleep(20)
  }
}

for (const [title, random] of [
  ['random picks from 1..100', undefined],
  ['every search starting at VNI 7', () => 7],
] as const) {
  t.test(`two agents on two connections, 32 concurrent takes each towards one node (${title}): no collision`, async (t) => {
    const etcd = await startEtcd(t)
    const observer = await open(t, etcd.endpoints)
    const first = countingConflicts(await open(t, etcd.endpoints))
    const second = countingConflicts(await open(t, etcd.endpoints))
    const opts: VniClaimsOptions = { min: 1, max: 100, ...(random === undefined ? {} : { random }) }
    const a = await start(t, first.kv, 'node-a', opts)
    const c = await start(t, second.kv, 'node-c', opts)
    const b = await start(t, observer, 'node-b', opts)
    const ids = [...Array(32).keys()]
    const [fromA, fromC] = await Promise.all([
      Promise.all(ids.map((i) => a.take(`a-${i}`, 'node-b'))),
      Promise.all(ids.map((i) => c.take(`c-${i}`, 'node-b'))),
    ])
    const conflicts = first.conflicts() + second.conflicts()
    t.comment(`creates etcd refused: ${conflicts}`)
    if (random !== undefined) t.ok(conflicts > 0, 'the agents did meet in etcd')
    t.equal(new Set([...fromA, ...fromC]).size, 64, 'no VNI twice on node-b')
    const claims = await stored(observer)
    t.equal(claims.size, 128, 'two claims per connection, no half pair left')
    ids.forEach((i) => {
      for (const [agent, vni] of [['a', fromA[i]!], ['c', fromC[i]!]] as const) {
        for (const node of [`node-${agent}`, 'node-b']) {
          t.same(claims.get(vniClaimName(node, vni)), { vni, node, connectionId: `${agent}-${i}`, claimer: `node-${agent}` }, `${agent}-${i} on ${node}`)
        }
      }
    })
    await waitUntil("node-b's watch learning every claim", () => [...fromA, ...fromC].every((v) => b.taken('node-b', v)))

    await Promise.all([...ids.map((i) => a.release(`a-${i}`)), ...ids.map((i) => c.release(`c-${i}`))])
    t.equal((await stored(observer)).size, 0, 'released: nothing left')
    await waitUntil("node-b's watch learning the releases", () => [...fromA, ...fromC].every((v) => !b.taken('node-b', v)))
  })
}
