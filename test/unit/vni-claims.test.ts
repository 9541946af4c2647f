// agent/store/vni-claims.ts on the in-process store: VNIs claimed on both nodes of a remote cross-connect
// by agents sharing one store never collide (concurrent takes, forced collisions, a watch that lags); a
// connection gets its VNI again; release, restart (retain) and the collection of a gone agent's claims;
// the store away is STORE_FAILURE with no half claim left; address claims share the kind untouched.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { parse } from 'yaml'
import { AgentError } from '../../agent/errors.js'
import { VNI_MAX, VNI_MIN } from '../../agent/mechanisms/vxlan/params.js'
import { AddressClaims, claimName } from '../../agent/store/claims.js'
import { checkKvName, type Kv, type KvEntry } from '../../agent/store/kv.js'
import { MemoryKv } from '../../agent/store/memory.js'
import { VniClaims, vniClaimName, type VniClaimsOptions } from '../../agent/store/vni-claims.js'
import { countingConflicts, storedVniClaims as stored } from '../lib/vni.js'

/** Lets the watches deliver what is pending (memory store handlers run on microtasks). */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r))

async function start(t: Test, kv: Kv, node: string, opts: VniClaimsOptions = {}): Promise<VniClaims> {
  const c = await VniClaims.start(kv, node, { min: 1, max: 200, ...opts })
  t.teardown(() => c.stop())
  return c
}

t.test('claim names: valid store names, one per (node, VNI), the VNI first', async (t) => {
  const cases: Array<[string, number]> = [['a-1', 2], ['a', 12], ['a', 1], ['a.1', 2], ['a', 2], ['1.a', 2], ['node.example.com', VNI_MAX]]
  const names = cases.map(([n, v]) => vniClaimName(n, v))
  t.equal(new Set(names).size, cases.length, 'distinct')
  for (const name of names) t.doesNotThrow(() => checkKvName('claims', name), name)
  t.equal(vniClaimName('a-1', 2), 'vni-2.a-1')
  // An address claim's name is `<family>-<hex>-<len>.<hex>`: never `vni-...`.
  t.notOk(claimName('10.0.0.0/24', '10.0.0.1').startsWith('vni-'))
})

t.test('range: 1..16777215 by default, a smaller one on request, nothing outside', async (t) => {
  const kv = new MemoryKv()
  const seen: Array<[number, number]> = []
  const c = await VniClaims.start(kv, 'a', { random: (min, max) => (seen.push([min, max]), 4242) })
  t.teardown(() => c.stop())
  t.equal(await c.take('x', 'b'), 4242)
  t.same(seen, [[VNI_MIN, VNI_MAX]])
  t.same([VNI_MIN, VNI_MAX], [1, 16777215])
  await t.rejects(VniClaims.start(kv, 'a', { min: 0 }), RangeError)
  await t.rejects(VniClaims.start(kv, 'a', { max: VNI_MAX + 1 }), RangeError)
  await t.rejects(VniClaims.start(kv, 'a', { min: 9, max: 8 }), RangeError)
  await t.rejects(VniClaims.start(kv, 'A_b'), TypeError, 'a node name that makes no store name')
  const wild = await start(t, kv, 'a', { min: 5, max: 9, random: () => 10 })
  await t.rejects(wild.take('y', 'b'), RangeError, 'a random pick outside the range is a bug, not a VNI')
  await t.rejects(wild.take('y', 'B'), TypeError)
})

t.test('32 concurrent takes a→b and 32 c→b: distinct on b, each claimed on both nodes', async (t) => {
  const mem = new MemoryKv()
  const counted = countingConflicts(mem)
  const a = await start(t, counted.kv, 'a')
  const b = await start(t, mem.connect(), 'b')
  const c = await start(t, counted.kv, 'c')
  const ids = [...Array(32).keys()]
  const [fromA, fromC] = await Promise.all([Promise.all(ids.map((i) => a.take(`a-${i}`, 'b'))), Promise.all(ids.map((i) => c.take(`c-${i}`, 'b')))])
  t.equal(new Set([...fromA, ...fromC]).size, 64, 'no VNI twice on b')
  for (const v of [...fromA, ...fromC]) t.ok(v >= 1 && v <= 200)
  const claims = await stored(mem)
  t.equal(claims.size, 128, 'two claims per connection, nothing else')
  ids.forEach((i) => {
    for (const [agent, vni] of [['a', fromA[i]!], ['c', fromC[i]!]] as const) {
      for (const node of [agent, 'b']) {
        t.same(claims.get(vniClaimName(node, vni)), { vni, node, connectionId: `${agent}-${i}`, claimer: agent })
      }
    }
  })
  t.equal(a.held('a-3'), fromA[3])
  await settle()
  t.ok([...fromA, ...fromC].every((v) => b.taken('b', v)), "b's agent knows every VNI taken on b from its watch")
  t.ok(fromA.every((v) => b.taken('a', v)) && fromC.every((v) => b.taken('c', v)), 'and on the client nodes')
  t.comment(`creates that lost: ${counted.conflicts()}`)
})

t.test('forced collisions: both agents start every search at one VNI', async (t) => {
  const mem = new MemoryKv()
  const counted = countingConflicts(mem)
  const a = await start(t, counted.kv, 'a', { random: () => 7 })
  const c = await start(t, counted.kv, 'c', { random: () => 7 })
  const ids = [...Array(32).keys()]
  const [fromA, fromC] = await Promise.all([Promise.all(ids.map((i) => a.take(`a-${i}`, 'b'))), Promise.all(ids.map((i) => c.take(`c-${i}`, 'b')))])
  t.equal(new Set([...fromA, ...fromC]).size, 64, 'no VNI twice on b')
  t.ok(counted.conflicts() > 0, `the stores' create refused some (${counted.conflicts()}): the agents did collide`)
  t.equal((await stored(mem)).size, 128, 'no half pair left by a lost claim')
})

t.test('a claim lost on the peer undoes the half made here, and the next pick skips what it learned', async (t) => {
  const mem = new MemoryKv()
  const a = await start(t, mem, 'a', { random: () => 7 })
  t.equal(await a.take('a-1', 'b'), 7)
  // c's agent sees none of that (its watch lags behind): it believes 7 free on b.
  const blind: Kv = Object.create(mem.connect()) as Kv
  blind.list = async (kind) => ({ entries: [], revision: (await mem.list(kind)).revision })
  blind.watch = () => () => undefined
  const created: string[] = []
  const deleted: string[] = []
  blind.create = async (kind, name, value, opts) => (created.push(name), mem.create(kind, name, value, opts))
  blind.delete = async (kind, name, opts) => (deleted.push(name), mem.delete(kind, name, opts))
  const c = await start(t, blind, 'c', { random: () => 7 })
  t.equal(await c.take('c-1', 'b'), 8)
  t.same(created, ['vni-7.c', 'vni-7.b', 'vni-8.c', 'vni-8.b'], 'claimed 7 here, lost it on b')
  t.same(deleted, ['vni-7.c'], 'the half made here undone')
  t.same([...(await stored(mem)).keys()].sort(), ['vni-7.a', 'vni-7.b', 'vni-8.b', 'vni-8.c'])
  t.ok(c.taken('b', 7), 'learned from the lost create')
})

t.test('a VNI taken on either node is skipped; none free on both: POOL_EXHAUSTED', async (t) => {
  const kv = new MemoryKv()
  const a = await start(t, kv, 'a', { min: 1, max: 3, random: () => 1 })
  const c = await start(t, kv, 'c', { min: 1, max: 3, random: () => 1 })
  t.equal(await c.take('c-1', 'b'), 1)
  t.equal(await c.take('c-2', 'a'), 2)
  await settle()
  t.equal(await a.take('a-1', 'b'), 3, '1 is taken on b, 2 on a')
  const err = await a.take('a-2', 'b').catch((e: unknown) => e)
  t.ok(AgentError.is(err, 'POOL_EXHAUSTED'), String(err))
  t.match((err as Error).message, /1\.\.3 free on nodes a and b/)
  t.equal(a.held('a-2'), undefined)
  t.equal((await stored(kv)).size, 6, 'nothing claimed by the failed take')
})

t.test('a connection gets its VNI again, also from concurrent takes; another peer is refused', async (t) => {
  const kv = new MemoryKv()
  const a = await start(t, kv, 'a')
  const [v1, v2] = await Promise.all([a.take('x', 'b'), a.take('x', 'b')])
  t.equal(v1, v2)
  t.equal(await a.take('x', 'b'), v1)
  t.equal(a.held('x'), v1)
  t.equal(a.held('y'), undefined)
  t.equal((await stored(kv)).size, 2)
  const err = await a.take('x', 'c').catch((e: unknown) => e)
  t.ok(AgentError.is(err, 'FAILED_PRECONDITION'), String(err))
  t.match((err as Error).message, /holds VNI \d+ with node b/)
  t.equal(a.held('x'), v1)
})

t.test('a half that went missing is claimed again; its VNI gone to another: a new one', async (t) => {
  const kv = new MemoryKv()
  const a = await start(t, kv, 'a', { random: () => 50 })
  t.equal(await a.take('x', 'b'), 50)
  // An agent that thought a dead collected the claim on b (a came back).
  await kv.delete('claims', vniClaimName('b', 50))
  await settle()
  t.notOk(a.taken('b', 50))
  t.equal(await a.take('x', 'b'), 50, 'claimed again on b')
  t.ok((await stored(kv)).has(vniClaimName('b', 50)))
  await kv.delete('claims', vniClaimName('b', 50))
  await kv.create('claims', vniClaimName('b', 50), { vni: 50, node: 'b', connectionId: 'z', claimer: 'c' })
  await settle()
  t.equal(await a.take('x', 'b'), 51, 'taken meanwhile: another VNI')
  t.same([...(await stored(kv)).keys()].sort(), ['vni-50.b', 'vni-51.a', 'vni-51.b'], 'the old half here released')
})

t.test('release drops both claims; idempotent; the VNI is free again', async (t) => {
  const kv = new MemoryKv()
  const a = await start(t, kv, 'a', { random: () => 9 })
  const b = await start(t, kv.connect(), 'b')
  t.equal(await a.take('x', 'b'), 9)
  await a.release('x')
  t.equal((await stored(kv)).size, 0)
  t.equal(a.held('x'), undefined)
  t.notOk(a.taken('a', 9))
  await a.release('x')
  await a.release('never')
  await settle()
  t.notOk(b.taken('b', 9))
  t.equal(await a.take('y', 'b'), 9, 'free again')
  await b.release('y')
  t.equal((await stored(kv)).size, 2, "another agent's release leaves a's claims")
})

t.test('restart: own claims held again; retain releases those of connections not kept', async (t) => {
  const kv = new MemoryKv()
  const first = await VniClaims.start(kv, 'a', { min: 1, max: 200 })
  const vnis = await Promise.all(['k1', 'k2', 'gone1', 'gone2'].map((id) => first.take(id, 'b')))
  const c = await start(t, kv.connect(), 'c')
  const cv = await c.take('c-1', 'b')
  first.stop()
  const a = await start(t, kv.connect(), 'a')
  t.equal(a.held('k1'), vnis[0])
  t.equal(a.held('gone2'), vnis[3])
  t.equal(await a.retain(new Set(['k1', 'k2', 'c-1'])), 4, 'two claims for each of two connections')
  t.equal(a.held('gone1'), undefined)
  const left = await stored(kv)
  t.same([...left.keys()].sort(), [vnis[0]!, vnis[1]!, cv].flatMap((v, i) => [vniClaimName(i < 2 ? 'a' : 'c', v), vniClaimName('b', v)]).sort())
  const before = await kv.list('claims')
  t.equal(await a.take('k1', 'b'), vnis[0], 'a kept connection, its VNI')
  t.equal((await kv.list('claims')).revision, before.revision, 'without a write')
  t.equal(await a.retain(new Set(['k1', 'k2'])), 0)
})

t.test('collect: claims of agents whose records expired, never this agent\'s own', async (t) => {
  const kv = new MemoryKv()
  const a = await start(t, kv, 'a')
  const b = await start(t, kv.connect(), 'b')
  const c = await start(t, kv.connect(), 'c')
  const av = await a.take('a-1', 'b')
  const bv = await b.take('b-1', 'c')
  const cv = await c.take('c-1', 'b')
  await settle()
  t.equal(await b.collect(new Set(['a', 'b'])), 2, "c's pair")
  t.same([...(await stored(kv)).keys()].sort(), [vniClaimName('a', av), vniClaimName('b', av), vniClaimName('b', bv), vniClaimName('c', bv)].sort())
  t.notOk(b.taken('b', cv))
  t.equal(await b.collect(new Set()), 2, "a's pair; b's own stay")
  t.same([...(await stored(kv)).keys()].sort(), [vniClaimName('b', bv), vniClaimName('c', bv)].sort())
  t.equal(await b.collect(new Set()), 0)
  t.equal(b.held('b-1'), bv)
})

t.test('the store away: STORE_FAILURE naming it, no half claim left', async (t) => {
  const mem = new MemoryKv()
  const a = await start(t, mem, 'a')
  t.teardown(() => mem.up())
  mem.down()
  const err = await a.take('x', 'b').catch((e: unknown) => e)
  t.ok(AgentError.is(err, 'STORE_FAILURE'), String(err))
  t.match((err as Error).message, /VNI claims: the memory store is unreachable/)
  t.equal(a.held('x'), undefined)
  await t.rejects(VniClaims.start(mem, 'c'), { code: 'STORE_FAILURE' })
  mem.up()
  t.equal((await stored(mem)).size, 0)

  // Lost between the two creates: the half made here cannot be undone now, and goes with the next call.
  const flaky: Kv = Object.create(mem) as Kv
  let creates = 0
  flaky.create = async (...args) => {
    const e = await mem.create(...args)
    if (++creates === 1) mem.down()
    return e
  }
  const b = await start(t, flaky, 'b', { random: () => 3 })
  const half = await b.take('y', 'a').catch((e: unknown) => e)
  t.ok(AgentError.is(half, 'STORE_FAILURE'), String(half))
  t.equal(b.held('y'), undefined)
  mem.up()
  t.same([...(await stored(mem)).keys()], ['vni-3.b'], 'the half made before the store went')
  t.ok(b.taken('b', 3), 'still known taken until deleted')
  await b.release('other')
  t.equal((await stored(mem)).size, 0, 'deleted by the next call')

  // A release while the store is away: the connection holds nothing, the claims go once it is back.
  t.equal(await b.take('z', 'a'), 3)
  mem.down()
  await t.rejects(b.release('z'), { code: 'STORE_FAILURE' })
  t.equal(b.held('z'), undefined)
  await t.rejects(b.collect(new Set()), { code: 'STORE_FAILURE' })
  mem.up()
  t.equal((await stored(mem)).size, 2)
  t.equal(await b.take('w', 'a'), 3, 'the next take deletes them first, and 3 is free again')
  t.same([...(await stored(mem)).keys()].sort(), ['vni-3.a', 'vni-3.b'])
  t.equal((await stored(mem)).get('vni-3.a')?.connectionId, 'w')
})

t.test('address claims share the kind: neither decodes, retains nor collects the other', async (t) => {
  const kv = new MemoryKv()
  const addrA = await AddressClaims.start(kv, 'a')
  t.teardown(() => addrA.stop())
  const addrC = await AddressClaims.start(kv.connect(), 'c')
  t.teardown(() => addrC.stop())
  const vniA = await start(t, kv.connect(), 'a')
  const vniC = await start(t, kv.connect(), 'c')
  const pool = '10.60.0.0/24'
  await addrA.claim('a-1', [{ pool, src: '10.60.0.1', dst: '10.60.0.2' }])
  await addrC.claim('c-1', [{ pool, src: '10.60.0.3', dst: '10.60.0.4' }])
  const va = await vniA.take('a-1', 'b')
  const vc = await vniC.take('c-1', 'b')
  await settle()
  const all = async (): Promise<string[]> => (await kv.list('claims')).entries.map((e: KvEntry) => e.name).sort()
  const addressNames = ['10.60.0.1', '10.60.0.2', '10.60.0.3', '10.60.0.4'].map((a) => claimName(pool, a))
  t.same(await all(), [...addressNames, ...[['a', va], ['b', va], ['c', vc], ['b', vc]].map(([n, v]) => vniClaimName(n as string, v as number))].sort())
  t.same(addrA.heldElsewhere([pool])[4].map((x) => x.toString(16)), ['a3c0003', 'a3c0004'], "the address allocator sees only c's addresses")

  // Address claims: a's restart keeps no connection, then collects everyone but a.
  t.equal(await addrA.retain(new Set()), 2)
  t.equal(await addrA.collect(new Set(['a'])), 2)
  await settle()
  t.same(await all(), [['a', va], ['b', va], ['c', vc], ['b', vc]].map(([n, v]) => vniClaimName(n as string, v as number)).sort(), 'every VNI claim left')

  // VNI claims: the same, with address claims present.
  await addrC.claim('c-2', [{ pool, src: '10.60.0.5', dst: '10.60.0.6' }])
  await settle()
  t.equal(await vniA.retain(new Set()), 2)
  t.equal(await vniA.collect(new Set(['a'])), 2)
  t.same(await all(), ['10.60.0.5', '10.60.0.6'].map((a) => claimName(pool, a)).sort(), 'the address claims left')
})

t.test("the claims CRD keeps a VNI claim's fields (spec is not restricted)", async (t) => {
  const crd = parse(readFileSync(join(import.meta.dirname, '../../deploy/crds/nsmaddressclaims.yaml'), 'utf8')) as {
    spec: { versions: Array<{ schema: { openAPIV3Schema: { properties: { spec: Record<string, unknown> } } } }> }
  }
  const spec = crd.spec.versions[0]!.schema.openAPIV3Schema.properties.spec
  t.equal(spec['type'], 'object')
  t.equal(spec['x-kubernetes-preserve-unknown-fields'], true, 'unknown fields are kept, not pruned')
  t.equal(spec['properties'], undefined, 'no field list a VNI claim would have to fit')
  t.equal(spec['required'], undefined)
})
