// The connection table's journal: acknowledged mutations survive a crash (a process that never flushed
// or compacted), a torn last line is dropped, a damaged line is dropped alone (the lines after it are
// kept, the journal is kept aside and reported), replaying the journal over a snapshot that already holds
// its effects changes nothing, and the journal is written with O_DSYNC (a write returns only once its
// data is on stable storage: the acknowledgement's durability).
import t from 'tap'
import { constants, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConnectionTable, type TableDamage } from '../../agent/connections/table'
import { Connection, State } from '../../proto/gen/networkservice/connection'

const conn = (id: string, state = State.UP): Connection => ({ ...Connection.fromJSON({}), id, networkService: 'svc', state })

/** The journal's valid content: up to the first NUL (the file is preallocated with zeros). */
function journalText(path: string): string {
  const raw = readFileSync(`${path}.journal`)
  const nul = raw.indexOf(0)
  return raw.toString('utf8', 0, nul < 0 ? raw.length : nul)
}

/** Replaces the journal's content, keeping its preallocated size (zeros after the text). */
function writeJournal(path: string, text: string): void {
  const raw = Buffer.alloc(readFileSync(`${path}.journal`).length)
  raw.write(text)
  writeFileSync(`${path}.journal`, raw)
}

function dir(t: { teardown(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'nsm-journal-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

t.test('acknowledged mutations survive without a flush; the reopened table compacts', async (t) => {
  const path = join(dir(t), 'connections.json')
  const a = await ConnectionTable.open(path)
  await a.upsert(conn('c1'), undefined, { version: 1, connectionId: 'c1' })
  await a.upsert(conn('c2'))
  await a.setState('c1', State.DOWN)
  await a.delete('c2')
  // no flush: as after SIGKILL
  t.equal(journalText(path).split('\n').filter(Boolean).length, 4, 'four journal lines')
  const b = await ConnectionTable.open(path)
  t.same(b.list().map((e) => [e.connection.id, e.connection.state]), [['c1', State.DOWN]])
  t.same(b.get('c1')?.datapath, { version: 1, connectionId: 'c1' }, 'the datapath record survives setState')
  t.equal(journalText(path), '', 'journal emptied after the snapshot')
  t.equal((JSON.parse(readFileSync(path, 'utf8')) as { connections: unknown[] }).connections.length, 1)
  const c = await ConnectionTable.open(path)
  t.equal(c.size, 1, 'replaying over the snapshot is idempotent')
})

t.test('a torn last line is dropped; a damaged line is dropped alone, reported, and the journal kept aside', async (t) => {
  const d = dir(t)
  const path = join(d, 'connections.json')
  const a = await ConnectionTable.open(path)
  await a.upsert(conn('c1'))
  writeJournal(path, `${journalText(path)}{"op":"put","id":"c9","entr`)
  const damages: TableDamage[] = []
  const b = await ConnectionTable.open(path, undefined, { onDamage: (x) => damages.push(x) })
  t.same(b.list().map((e) => e.connection.id), ['c1'])
  t.same(damages, [], 'a torn last line is not damage')
  await b.upsert(conn('c2'))
  await b.upsert(conn('c3'))
  const lines = journalText(path).split('\n')
  writeJournal(path, `garbage\n${(lines[0] ?? '').replace('"c2"', '"cX"')}\n${lines[1] ?? ''}\n{"op":"del","id":"c1"}\n`)
  const c = await ConnectionTable.open(path, undefined, { onDamage: (x) => damages.push(x) })
  t.same(c.list().map((e) => e.connection.id), ['c3'], 'the damaged lines dropped, the lines after them kept (an unchecked legacy line too)')
  t.equal(damages.length, 1)
  t.match(damages[0], { file: `${path}.journal`, reason: /2 damaged line\(s\) dropped.*line 1: not a journal line; line 2: checksum mismatch/ })
  t.ok(readdirSync(d).some((n) => n.startsWith('connections.json.journal.damaged-')), 'the damaged journal kept aside')
  t.equal(journalText(path), '', 'a fresh journal')
  t.same((await ConnectionTable.open(path)).list().map((e) => e.connection.id), ['c3'], 'what was read is in the fresh snapshot')
})

t.test('the journal file is open with O_DSYNC, so an acknowledged line is on stable storage', async (t) => {
  const path = join(dir(t), 'connections.json')
  const table = await ConnectionTable.open(path)
  await table.upsert(conn('c1'))
  // This process's open file descriptions of the journal, as the kernel reports them (Linux).
  const flags = readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== `${path}.journal`) return []
      const line = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n').find((l) => l.startsWith('flags:'))
      return line === undefined ? [] : [parseInt(line.slice('flags:'.length).trim(), 8)]
    } catch {
      return [] // an fd closed while listing
    }
  })
  t.equal(flags.length, 1, 'one descriptor for the journal')
  t.ok(((flags[0] ?? 0) & constants.O_DSYNC) !== 0, 'O_DSYNC is set')
  await table.flush()
  t.equal(journalText(path), '', 'a flush compacts and empties it (the zeroing goes through the same descriptor)')
  t.equal(new Set((JSON.parse(readFileSync(path, 'utf8')) as { connections: Array<{ connection: { id: string } }> }).connections.map((c) => c.connection.id)).has('c1'), true)
})
