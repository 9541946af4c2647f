// Link deletions go out on a namespace's second socket, sent from a pool thread (pkg/netlink/aside.ts), so
// the kernel's ~15–20 ms of work inside the sendmsg does not hold the event loop. Against the real kernel:
// other requests, in the same namespace and in another, are answered while a deletion runs; a dump asked
// for after a deletion does not list its link; the kernel's errors come back as before; a namespace's
// sockets closed mid-deletion reject it and leave no fd behind. The kernel is read back through `ip -j`.
import t from 'tap'
import { readdirSync, readlinkSync } from 'node:fs'
import { NetlinkSessions, addAddressMessage, createVeth, deleteLink, getLink, listLinks, setLinkMessage } from '../../pkg/netlink'
import { ifinfomsg, RTM } from '../../pkg/netlink/codec'
import { linkAddresses, linkNames, makeNetns } from '../lib/netns'

const sessions = new NetlinkSessions()
t.teardown(() => sessions.closeAll())
t.afterEach(() => {
  sessions.sweep()
})

/** The process's open sockets. */
const sockets = (): number =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')
    } catch {
      return false
    }
  }).length

t.test('while links are deleted, requests in their namespace and in another are answered', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const h = sessions.forNetns(a.path)
  const other = sessions.forNetns(b.path)
  // A link that stays in a (many connections share an endpoint's namespace), flipped up and down meanwhile.
  const { index } = await createVeth(sessions, { name: 'st0', peer: { name: 'st1', netns: b.path } }, a.path)
  for (let round = 0; round < 2; round++) {
    const names = Array.from({ length: 10 }, (_, k) => `ev${round}${k}`)
    const links: Array<{ index: number; name: string }> = []
    for (const [k, name] of names.entries()) links.push({ name, index: (await createVeth(sessions, { name, peer: { name: `ew${round}${k}`, netns: b.path } }, a.path)).index })
    // Ten deletions in one batch, one sendmsg: the kernel runs them one after the other inside it (~15 ms
    // each here), a window wide enough to see the event loop run even when the machine is loaded.
    let pending = true
    const deleted = h.batch(links.map((l) => ({ type: RTM.DELLINK, body: [ifinfomsg({ index: l.index })], flags: 0, what: `delete link ${l.name}` }))).finally(() => (pending = false))
    // For as long as they run: turns of the event loop, and round trips to the kernel one after the other.
    // Sent from the main thread, the batch held the event loop for all of its sendmsg: 0 or 1 turn, no round
    // trip (measured with the second socket off).
    let turns = 0
    const spin = (): void => {
      if (!pending) return
      turns++
      setImmediate(spin)
    }
    setImmediate(spin)
    let same = 0
    let elsewhere = 0
    for (let up = true; pending; up = !up) {
      await h.batch([setLinkMessage({ index, name: 'st0' }, { up })])
      if (pending) same++
      await getLink(other, 'lo')
      if (pending) elsewhere++
    }
    await deleted
    t.ok(turns >= 20, `round ${round}: the event loop turned ${turns} times while the deletions ran`)
    t.ok(same >= 3, `round ${round}: ${same} batches in their namespace answered meanwhile`)
    t.ok(elsewhere >= 3, `round ${round}: ${elsewhere} requests to another namespace answered meanwhile`)
    t.same(linkNames(a.name).filter((n) => n.startsWith('ev')), [], 'the links are gone')
    t.same(linkNames(b.name).filter((n) => n.startsWith('ew')), [], 'and their peers')
  }
  t.ok(linkNames(a.name).includes('st0'), 'the other link stays')
})

t.test('a dump asked for after a deletion does not list the link; one made after it resolved can take its name', async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const h = sessions.forNetns(a.path)
  for (let i = 0; i < 3; i++) {
    await createVeth(sessions, { name: 'or0', peer: { name: `or${i + 1}`, netns: b.path } }, a.path)
    // Not awaited: the deletion, then at once a dump.
    const deleted = deleteLink(h, 'or0')
    const listed = listLinks(h)
    t.equal(await deleted, true)
    t.notOk((await listed).some((l) => l.name === 'or0'), `round ${i}: the dump does not list the link`)
  }
  const { index } = await createVeth(sessions, { name: 'or0', peer: { name: 'or9', netns: b.path } }, a.path)
  t.equal((await getLink(h, 'or0'))?.index, index)
  t.same(linkNames(b.name).filter((n) => n.startsWith('or')), ['or9'], 'the old peers went with their links')
  const missing = deleteLink(h, 'nonesuch', { missingOk: true })
  await h.batch([addAddressMessage({ index, name: 'or0' }, '10.79.0.1/32'), setLinkMessage({ index, name: 'or0' }, { up: true })])
  t.equal(await missing, false)
  t.same(linkAddresses(a.name, 'or0').filter((x) => !x.startsWith('fe80')), ['10.79.0.1/32'])
})

t.test("the kernel's refusal of a deletion comes back as before", async (t) => {
  const a = makeNetns(t)
  const h = sessions.forNetns(a.path)
  await t.rejects(deleteLink(h, 'nothere'), { name: 'KernelError', code: 'NO_SUCH_DEVICE', message: `delete link nothere (netns ${a.path}): ENODEV` })
  t.equal(await deleteLink(h, 'nothere', { missingOk: true }), false, 'missingOk: false, not an error')
  // lo cannot be deleted: EOPNOTSUPP from the kernel, through the second socket.
  await t.rejects(deleteLink(h, 'lo'), { name: 'KernelError', message: /^delete link lo \(netns .*\): EOPNOTSUPP/ })
  t.ok(linkNames(a.name).includes('lo'))
})

t.test('deletions in many namespaces at once all finish (two pool threads at a time)', async (t) => {
  const b = makeNetns(t)
  const spaces = Array.from({ length: 6 }, () => makeNetns(t))
  for (const [i, n] of spaces.entries()) await createVeth(sessions, { name: `mv${i}`, peer: { name: `mw${i}`, netns: b.path } }, n.path)
  const results = await Promise.all(spaces.map((n, i) => deleteLink(sessions.forNetns(n.path), `mv${i}`)))
  t.same(results, [true, true, true, true, true, true])
  t.same(linkNames(b.name).filter((n) => n.startsWith('mw')), [], 'every peer gone')
})

t.test("a namespace's sockets closed while a deletion runs: it is rejected, the link still goes, no fd is left", async (t) => {
  const a = makeNetns(t)
  const b = makeNetns(t)
  const before = sockets()
  await createVeth(sessions, { name: 'cz0', peer: { name: 'cz1', netns: b.path } }, a.path)
  const h = sessions.forNetns(a.path)
  const pending = deleteLink(h, 'cz0')
  // Let the send reach its pool thread, then close the namespace's sockets under it.
  await new Promise((r) => setImmediate(r))
  sessions.drop(a.path)
  sessions.drop(b.path)
  await t.rejects(pending, { code: 'BAD_NETNS' })
  // The kernel finishes the deletion it was given; the second socket is closed once its thread returned.
  for (let i = 0; i < 100 && (sockets() !== before || linkNames(a.name).includes('cz0')); i++) await new Promise((r) => setTimeout(r, 20))
  t.notOk(linkNames(a.name).includes('cz0'), 'the link is gone')
  t.equal(sockets(), before, 'both sockets of each namespace closed')
})

t.test('with the second socket off, deletions go out on the namespace\'s one socket, as before', async (t) => {
  const plain = new NetlinkSessions(undefined, { aside: false })
  t.teardown(() => plain.closeAll())
  const a = makeNetns(t)
  const b = makeNetns(t)
  const before = sockets()
  await createVeth(plain, { name: 'pl0', peer: { name: 'pl1', netns: b.path } }, a.path)
  t.equal(sockets(), before + 1, 'one socket for the namespace')
  t.equal(await deleteLink(plain.forNetns(a.path), 'pl0'), true)
  t.notOk(linkNames(b.name).includes('pl1'), 'the pair is gone')
  await t.rejects(deleteLink(plain.forNetns(a.path), 'pl0'), { code: 'NO_SUCH_DEVICE' })
  plain.drop(a.path)
  t.equal(sockets(), before)
})
