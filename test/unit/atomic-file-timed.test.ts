// agent/registry/atomic-file.ts timedFileWrite: with no subscriber on `nsm:store:file-write` the write runs
// untimed (its own promise handed back); with one, each write is published once it settled, with its store,
// operation (read once it ended), duration and outcome, and the caller sees the write's result or error as it was.
import t from 'tap'
import { fileWriteChannel, timedFileWrite, type FileWrite } from '../../agent/registry/atomic-file.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

t.test('no subscriber: the write\'s own promise, nothing published', async (t) => {
  t.notOk(fileWriteChannel.hasSubscribers)
  const p = sleep(1)
  t.equal(timedFileWrite('connections', 'append', () => p), p, 'handed back as it is')
  await p
})

t.test('a subscriber: one message per write, after it settled, with its outcome; the caller sees the same result', async (t) => {
  const seen: FileWrite[] = []
  const listen = (m: unknown): void => void seen.push(m as FileWrite)
  fileWriteChannel.subscribe(listen)
  t.teardown(() => fileWriteChannel.unsubscribe(listen))

  let op = 'append'
  const ok = timedFileWrite('connections', () => op, async () => {
    await sleep(20)
    op = 'compact' // decided by the write: read once it ended
  })
  t.same(seen, [], 'nothing before the write settled')
  await ok
  t.equal(seen.length, 1)
  t.match(seen[0], { store: 'connections', operation: 'compact', ok: true })
  t.ok((seen[0]?.seconds ?? 0) >= 0.015, `its duration (${seen[0]?.seconds} s)`)

  await t.rejects(
    timedFileWrite('registry', 'snapshot', async () => {
      await sleep(1)
      throw new Error('disk full')
    }),
    { message: 'disk full' },
    'a rejected write rejects with its error',
  )
  t.match(seen[1], { store: 'registry', operation: 'snapshot', ok: false })

  await t.rejects(
    timedFileWrite('registry', 'snapshot', () => {
      throw new Error('thrown before any promise')
    }),
    { message: 'thrown before any promise' },
    'a write that throws synchronously becomes a rejection',
  )
  t.match(seen[2], { store: 'registry', operation: 'snapshot', ok: false })
  t.equal(seen.length, 3, 'one message per write')
})
