// The file store's crash and race rules, made deterministic in-process: what a process killed at each
// step leaves behind, and that a release never removes a claim made after it read the reservation.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { allocate, release } from '../../ipam/range/allocator'
import { canonicalizeRangeSets } from '../../ipam/range/range'
import { FileStore } from '../../ipam/store/file'

function open(t: { teardown(fn: () => void): void }) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-filestore-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const store = FileStore.open(dataDir, 'net')
  return { store, dir: join(dataDir, 'net') }
}
const owner = (containerID: string) => ({ containerID, ifname: 'eth0' })

t.test('reserve is exclusive; release is by owner and idempotent', async (t) => {
  const { store, dir } = open(t)
  t.equal(await store.reserve({ ip: '10.0.0.2', rangeSet: 0, ...owner('a') }), true)
  t.equal(await store.reserve({ ip: '10.0.0.2', rangeSet: 0, ...owner('b') }), false, 'taken')
  await store.close()
  t.same(readdirSync(join(dir, 'tmp')), [], 'the losing claim was dropped at close')
  t.same(await store.release(owner('b'), ['10.0.0.2']), [], 'not b\'s to release')
  t.same(await store.release(owner('a'), ['10.0.0.2']), ['10.0.0.2'])
  t.same(await store.release(owner('a'), ['10.0.0.2']), [])
  t.same(readdirSync(join(dir, 'reservations')), [])
})

t.test('crash leftovers: a prepared claim in tmp/ and an emptied reservation are both free', async (t) => {
  const { store, dir } = open(t)
  // Killed after preparing a claim, before the rename: only tmp/ holds it (pid 999999 does not exist).
  mkdirSync(join(dir, 'tmp', '999999.1.deadbeef00'))
  writeFileSync(join(dir, 'tmp', '999999.1.deadbeef00', 'o.deadbeef00'), '{"v":1,"containerID":"ghost","ifname":"eth0","rangeSet":0}\n')
  // Killed between the two steps of a release: an empty reservation directory.
  mkdirSync(join(dir, 'reservations', '10.0.0.3'))
  t.same(await store.list(), [], 'neither counts as a reservation')
  t.equal(await store.reserve({ ip: '10.0.0.3', rangeSet: 0, ...owner('c') }), true, 'a claim renames over the empty directory')
  t.same((await store.list()).map((r) => r.containerID), ['c'])
  t.equal(store.sweep(), 1, 'sweep removes the dead process\'s claim (the live reservation stays)')
  t.same(readdirSync(join(dir, 'tmp')), [])
  t.same((await store.list()).map((r) => r.ip), ['10.0.0.3'])
})

t.test('a stale release cannot remove a fresh claim of the same address', async (t) => {
  const { store, dir } = open(t)
  const sets = canonicalizeRangeSets([{ field: 'ipam', ranges: [{ subnet: '10.0.0.0/29' }], single: true }])
  const [a] = await allocate(store, sets, owner('a'))
  const ip = `10.0.0.${Number((a?.ip.value ?? 0n) & 255n)}`
  const before = readdirSync(join(dir, 'reservations', ip))
  // Another releaser removes a's claim, then b claims the address again.
  t.same(await release(store, owner('a')), [ip])
  t.equal(await store.reserve({ ip, rangeSet: 0, ...owner('b') }), true)
  // A releaser that read a's record earlier now acts on it: its record name is gone, b's claim survives.
  t.notSame(readdirSync(join(dir, 'reservations', ip)), before, 'the new claim has a record of its own')
  t.same(await store.release(owner('a'), [ip]), [], 'a holds nothing')
  t.same((await store.list()).map((r) => r.containerID), ['b'])
})

t.test('a store of another format version is refused', async (t) => {
  const { dir } = open(t)
  writeFileSync(join(dir, 'FORMAT'), '{"format":"nsm-ipam-file-store","version":2}\n')
  t.throws(() => FileStore.open(join(dir, '..'), 'net'), /format version 2 is not supported/)
  writeFileSync(join(dir, 'FORMAT'), '{"format":"host-local","version":1}\n')
  t.throws(() => FileStore.open(join(dir, '..'), 'net'), /is not nsm-ipam-file-store/)
})
