// Issue 10: Request time must not grow with the connection table. The Requests themselves do no
// table-sized work; what grew was work the agent does beside them on the same event loop, and what a write
// costs in snapshot bytes. These tests count that work (never time it) at a small and a large table:
//   - one heal poll: the stat(2) calls it makes and the table reads, at 10 and 10,000 connections;
//   - the connection journal: snapshot bytes written per journaled write (amortized), at 10 and 2,000;
//   - byAttachment (every CNI ADD, DEL, CHECK): reads the attachment's connections, not the table.
// Nothing here touches the kernel: the "namespaces" are plain files (a stat is all a poll does to them).
import t, { type Test } from 'tap'
import fs, { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { syncBuiltinESMExports } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConnectionTable } from '../../agent/connections/table'
import { encodeLine } from '../../agent/connections/journal-lines'
import { createDataplane } from '../../agent/pipeline/index'
import type { DatapathRecord } from '../../agent/pipeline/types'
import { Registry } from '../../agent/registry/registry'
import { MemoryStore } from '../../agent/registry/store'
import { silentLogger } from '../../agent/server/log'
import { Connection, State } from '../../proto/gen/networkservice/connection'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** fs as a writable object (its ESM view is read-only to the type checker; syncBuiltinESMExports applies it). */
const writableFs = fs as { statSync: typeof fs.statSync }

function tempDir(t: Teardown, prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

/** Counts every fs.statSync call (pkg/netns netnsKey, the netns policy) while `fn` runs. */
async function countingStats(fn: () => Promise<void>): Promise<number> {
  const original = fs.statSync
  let n = 0
  writableFs.statSync = ((...args: Parameters<typeof fs.statSync>) => {
    n++
    return original(...args)
  }) as typeof fs.statSync
  syncBuiltinESMExports()
  try {
    await fn()
  } finally {
    writableFs.statSync = original
    syncBuiltinESMExports()
  }
  return n
}

const conn = (id: string, state = State.UP): Connection => ({ ...Connection.fromJSON({}), id, networkService: 'svc', state })

/** A KERNEL datapath record between two files standing in for namespaces. */
function record(id: string, clientNetns: string, endpointNetns: string): DatapathRecord {
  return {
    version: 2,
    connectionId: id,
    service: 'svc',
    endpointName: 'fw',
    clientNetns,
    clientIfname: 'nsm0',
    mtu: 1500,
    ipContext: { src: [], dst: [], srcRoutes: [], dstRoutes: [] },
    mechanism: { type: 'KERNEL', endpointNetns, endpointIfname: 'nsm-0' },
    p2p: { connectionId: id, clientId: clientNetns, endpointId: endpointNetns, pairs: [] },
    clientLabels: {},
  }
}

/** Stat calls and table reads of one heal poll with `size` UP connections (5 client "namespaces", 1 endpoint). */
async function pollWork(t: Test, size: number): Promise<{ stats: number; tableReads: number }> {
  const dir = tempDir(t, 'nsm-scaling-')
  const ep = join(dir, 'ep')
  const clients = Array.from({ length: 5 }, (_, i) => join(dir, `c${i}`))
  for (const f of [ep, ...clients]) writeFileSync(f, '')
  const allow = [`${dir}/*`]
  const registry = await Registry.open({ services: new MemoryStore(), endpoints: new MemoryStore(), netnsAllow: allow, defaultTtlMs: 60_000 })
  const table = ConnectionTable.inMemory()
  for (let i = 0; i < size; i++) {
    const id = `c-${i}`
    await table.upsert(conn(id), undefined, record(id, clients[i % clients.length] as string, ep))
  }
  // Polled by hand below (pollMs an hour: the timer never fires during the test).
  const dp = createDataplane({ registry, table, nodeName: 'node-1', netnsAllow: allow, log: silentLogger, healPollMs: 3_600_000 })
  t.teardown(async () => {
    await dp.stop()
    registry.close()
  })
  dp.healer.start()
  const poll = (): Promise<void> => (dp.healer as unknown as { poll(): Promise<void> }).poll()
  await poll() // the first one also runs the rate-limited orphan sweep (a pass over every link: not per poll)
  let tableReads = 0
  for (const name of ['list', 'get', 'byAttachment'] as const) {
    const original = table[name].bind(table) as (...a: unknown[]) => unknown
    ;(table as unknown as Record<string, unknown>)[name] = (...a: unknown[]) => {
      tableReads++
      return original(...a)
    }
  }
  const stats = await countingStats(poll)
  t.equal(table.size, size, 'the poll closed or changed nothing')
  for (const id of [`c-0`, `c-${size - 1}`]) t.equal(table.get(id)?.connection.state, State.UP, `${id} still UP`)
  return { stats, tableReads }
}

t.test('a heal poll does the same work with 10 and with 10,000 connections', async (t) => {
  const small = await pollWork(t, 10)
  const large = await pollWork(t, 10_000)
  t.equal(large.stats, small.stats, `stat calls per poll: ${small.stats} with 10 connections, ${large.stats} with 10,000`)
  t.equal(large.tableReads, small.tableReads, `table reads per poll: ${small.tableReads} with 10, ${large.tableReads} with 10,000`)
  t.ok(small.stats <= 10, `one stat per namespace at most (${small.stats} for 6 namespaces)`)
})

/**
 * Snapshot bytes per journaled write (amortized over growing the table to `size` and then `size` more
 * writes), against the size of a write's own journal line. Growing a table puts every inserted byte into
 * some snapshot at least once, whatever the scheme, so the bound is a constant, not zero: a journal at
 * least twice the last snapshot means each snapshot S follows L >= 2 S' line bytes since the previous
 * one S', and S <= S' + L, so S / L <= 1.5.
 */
async function snapshotBytesPerWrite(t: Teardown, size: number): Promise<{ perWrite: number; line: number }> {
  const path = join(tempDir(t, 'nsm-scaling-journal-'), 'connections.json')
  // A small journal (16 KiB) so that the compactions of a fixed-size journal come within a short test.
  const table = await ConnectionTable.open(path, undefined, { journalBytes: 16 * 1024 })
  let ino = statSync(path).ino
  let snapshotBytes = 0
  let writes = 0
  const c = (i: number): Connection => ({ ...conn(`conn-${i}`), labels: { pad: 'x'.repeat(200) } })
  const write = async (i: number): Promise<void> => {
    await table.upsert(c(i))
    writes++
    const st = statSync(path)
    if (st.ino !== ino) {
      // A compaction: the snapshot was written anew (to a temporary file renamed over it).
      ino = st.ino
      snapshotBytes += st.size
    }
  }
  for (let i = 0; i < size; i++) await write(i)
  for (let i = 0; i < size; i++) await write(i) // refreshes: the table keeps its size
  const line = Buffer.byteLength(encodeLine({ op: 'put', id: 'conn-0', entry: { connection: Connection.toJSON(c(0)) } }))
  return { perWrite: snapshotBytes / writes, line }
}

t.test('a journaled write costs at most 1.5 times its own size in snapshot bytes (amortized), at 10 and at 2,000 connections', async (t) => {
  for (const size of [10, 2000]) {
    const { perWrite, line } = await snapshotBytesPerWrite(t, size)
    t.ok(perWrite <= 1.5 * line, `${size} connections: ${perWrite.toFixed(0)} snapshot bytes per write, the write's line is ${line} bytes`)
  }
})

t.test("byAttachment reads the attachment's connections, not the table, and follows every change", async (t) => {
  const table = ConnectionTable.inMemory()
  const att = (network: string, containerId: string, ifname: string) => ({ network, containerId, ifname, netns: '/var/run/netns/x' })
  for (let i = 0; i < 1000; i++) await table.upsert(conn(`bg-${i}`), att('net', `bg-${i}`, 'eth1'))
  await table.upsert(conn('a-1'), att('net', 'pod-a', 'nsm-1'))
  await table.upsert(conn('a-2'), att('net', 'pod-a', 'nsm-2'))
  await table.upsert(conn('b-1'), att('other', 'pod-a', 'nsm-1'))
  await table.upsert(conn('nsm-api'))
  const scan = (network: string, containerId?: string, ifname?: string): string[] =>
    table
      .list()
      .filter((e) => e.attachment?.network === network && (containerId === undefined || e.attachment.containerId === containerId) && (ifname === undefined || e.attachment.ifname === ifname))
      .map((e) => e.connection.id)
  const ids = (network: string, containerId?: string, ifname?: string): string[] => table.byAttachment(network, containerId, ifname).map((e) => e.connection.id)

  let lists = 0
  const list = table.list.bind(table)
  table.list = () => {
    lists++
    return list()
  }
  t.same(ids('net', 'pod-a'), ['a-1', 'a-2'])
  t.same(ids('net', 'pod-a', 'nsm-2'), ['a-2'])
  t.same(ids('other', 'pod-a', 'nsm-1'), ['b-1'])
  t.same(ids('net', 'pod-z'), [])
  t.equal(lists, 0, 'no copy of the whole table')
  t.equal(ids('net').length, 1002, "a network's connections (GC)")

  // Changes: a refresh keeps the attachment, a delete removes it, a new attachment moves it.
  await table.upsert(conn('a-1', State.DOWN))
  t.same(ids('net', 'pod-a', 'nsm-1'), ['a-1'], 'a state change keeps the attachment')
  await table.delete('a-2')
  t.same(ids('net', 'pod-a'), ['a-1'])
  await table.upsert(conn('a-1'), att('net', 'pod-b', 'nsm-1'))
  t.same(ids('net', 'pod-a'), [])
  t.same(ids('net', 'pod-b'), ['a-1'])
  for (const [n, c, i] of [['net', 'pod-b', undefined], ['net', undefined, undefined], ['other', 'pod-a', 'nsm-1']] as const) {
    t.same(ids(n, c, i), scan(n, c, i), `same as a scan: ${n} ${c ?? '*'} ${i ?? '*'}`)
  }
})

t.test('byAttachment after a reopen (snapshot and journal replayed)', async (t) => {
  const path = join(tempDir(t, 'nsm-scaling-att-'), 'connections.json')
  const table = await ConnectionTable.open(path)
  const att = { network: 'net', containerId: 'pod-a', ifname: 'nsm-1', netns: '/var/run/netns/x' }
  await table.upsert(conn('a-1'), att)
  await table.upsert(conn('a-2'), { ...att, ifname: 'nsm-2' })
  await table.delete('a-2')
  const reopened = await ConnectionTable.open(path)
  t.same(
    reopened.byAttachment('net', 'pod-a').map((e) => e.connection.id),
    ['a-1'],
    'rebuilt from the snapshot and the journal',
  )
})
