// The connection journal on a full disk, in-process: writes are completed across short writes, a
// failed batch is undone in memory (several mutations of one id unwind to the value before the first)
// and never read back, and the table reopened holds exactly the acknowledged mutations.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConnectionTable, type ConnectionTableEvent } from '../../agent/connections/table'
import { writeFully } from '../../agent/connections/journal-lines'
import { Connection, State } from '../../proto/gen/networkservice/connection'

const conn = (id: string, state = State.UP): Connection => ({ ...Connection.fromJSON({}), id, networkService: 'svc', state })

function smallTmpfs(t: { teardown(fn: () => void): void }, size: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-journal-disk-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  t.teardown(() => {
    execFileSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

function fill(path: string): void {
  const fd = openSync(path, 'w')
  try {
    for (;;) writeSync(fd, Buffer.alloc(4096))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
}

t.test('writeFully completes short writes and fails on no progress', async (t) => {
  const written: Array<[number, number]> = []
  const short = {
    write: async (_b: Uint8Array, off: number, len: number, pos: number) => {
      written.push([off, pos])
      return { bytesWritten: Math.min(len, 3), buffer: _b }
    },
  } as unknown as FileHandle
  await writeFully(short, Buffer.alloc(10), 100)
  t.same(written, [[0, 100], [3, 103], [6, 106], [9, 109]], 'four writes, each where the last one stopped')
  const stuck = { write: async (b: Uint8Array) => ({ bytesWritten: 0, buffer: b }) } as unknown as FileHandle
  await t.rejects(writeFully(stuck, Buffer.alloc(10), 0), { code: 'ENOSPC' })
})

t.test('a batch that cannot be made durable is undone in memory and absent after a reopen', async (t) => {
  const disk = smallTmpfs(t, '256k')
  const path = join(disk, 'connections.json')
  const table = await ConnectionTable.open(path, undefined, { journalBytes: 4096 })
  await table.upsert(conn('keep'))
  fill(join(disk, 'filler'))
  const events: ConnectionTableEvent[] = []
  table.subscribe((e) => events.push(e))
  // Enough lines to overflow the 4 KiB journal: the compaction's snapshot cannot be written.
  const big = (id: string, state: State) => ({ ...conn(id, state), labels: { pad: 'x'.repeat(1500) } })
  const results = await Promise.allSettled([
    table.upsert(big('keep', State.DOWN)),
    table.upsert(big('new', State.UP)),
    table.upsert(big('new', State.DOWN)),
    table.upsert(big('keep', State.UP)),
    table.delete('keep'),
  ])
  const failed = results.filter((r) => r.status === 'rejected')
  t.ok(failed.length > 0, 'writes failed on the full disk')
  for (const r of failed) t.match((r as PromiseRejectedResult).reason, { code: 'STORE_FAILURE', message: /connections\.json.*ENOSPC/ })
  // Memory holds the fulfilled mutations only, applied in order.
  const expected = new Map<string, State>([['keep', State.UP]])
  const ops: Array<[string, State | undefined]> = [['keep', State.DOWN], ['new', State.UP], ['new', State.DOWN], ['keep', State.UP], ['keep', undefined]]
  ops.forEach(([id, state], i) => {
    if (results[i]?.status !== 'fulfilled') return
    if (state === undefined) expected.delete(id)
    else expected.set(id, state)
  })
  t.same(table.list().map((e) => [e.connection.id, e.connection.state]).sort(), [...expected].sort(), 'memory unwound to the acknowledged mutations')
  const last = events.at(-1)
  t.ok(last !== undefined && (last.type === 'delete' ? !expected.has(last.entry.connection.id) : expected.get(last.entry.connection.id) === last.entry.connection.state), 'the undo is published')
  const acknowledged = table.list().map((e) => [e.connection.id, e.connection.state])
  rmSync(join(disk, 'filler'))
  const reopened = await ConnectionTable.open(path, undefined, { journalBytes: 4096 })
  t.same(reopened.list().map((e) => [e.connection.id, e.connection.state]), acknowledged, 'exactly what was acknowledged')
})

t.test('a journal that cannot be preallocated is an error naming the file and size, leaving no file', async (t) => {
  const disk = smallTmpfs(t, '64k')
  const path = join(disk, 'connections.json')
  await t.rejects(ConnectionTable.open(path), { message: `${path}.journal: cannot preallocate the journal (8388608 bytes): ENOSPC` })
  t.throws(() => closeSync(openSync(`${path}.journal`, 'r')), { code: 'ENOENT' }, 'no partial journal left')
})
