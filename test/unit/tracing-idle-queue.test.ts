// agent/tracing/idle-queue.ts: spans wait while a traced call runs and for idleMs after the last one, then go
// to the exporter in slices; while calls keep coming they go once busyAt wait or maxWaitMs passed, all of them
// then; an idle drain pauses when a call starts; drain() hands everything over at once (shutdown).
import t, { type Test } from 'tap'
import { IdleSpanQueue } from '../../agent/tracing/idle-queue.js'

const span = (name: string): { name: string } => ({ name })
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

/** Collects what it takes; `firstTurn`: what it had taken by the end of the turn of its first span. */
type Taker = { take: (s: { name: string }) => void; got: string[]; firstTurn: string[] | undefined; onFirst?: () => void }
function taker(): Taker {
  const out: Taker = {
    got: [],
    firstTurn: undefined,
    take(s) {
      out.got.push(s.name)
      if (out.got.length === 1) out.onFirst?.()
      // Queued before the queue's next slice is: runs after this turn's slice, before the next one.
      if (out.got.length === 1) setImmediate(() => (out.firstTurn = [...out.got]))
    },
  }
  return out
}

async function until(t: Test, what: string, ok: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) {
      t.fail(`timed out: ${what}`)
      return
    }
    await sleep(2)
  }
}

t.test('no call running: the spans go once idleMs passed, in order, a slice per turn', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 20, slice: 2 })
  t.teardown(() => q.stop())
  for (let i = 0; i < 5; i++) q.add(span(`s${i}`))
  await tick()
  t.same(out.got, [], 'not at once')
  await until(t, 'the first slice', () => out.firstTurn !== undefined)
  t.same(out.firstTurn, ['s0', 's1'], 'one slice of 2 in a turn')
  await until(t, 'all of them', () => out.got.length === 5)
  t.same(out.got, ['s0', 's1', 's2', 's3', 's4'], 'in the order they ended')
  t.equal(q.size, 0)
})

t.test('while a call runs nothing goes; idleMs after it ended everything does', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 20, slice: 100 })
  t.teardown(() => q.stop())
  q.callStarted()
  q.add(span('a'))
  q.add(span('b'))
  await sleep(80)
  t.same(out.got, [], 'held while the call runs')
  q.callEnded()
  const ended = Date.now()
  await until(t, 'handed over after the call', () => out.got.length === 2)
  t.ok(Date.now() - ended >= 15, 'not before idleMs passed (timer granularity aside)')
})

t.test('an idle drain pauses when a call starts, and goes on once idle again', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 20, slice: 1 })
  t.teardown(() => q.stop())
  for (let i = 0; i < 50; i++) q.add(span(`s${i}`))
  // A call starts while the first slice is handed over.
  out.onFirst = () => q.callStarted()
  await until(t, 'the drain started', () => out.got.length > 0)
  await sleep(60)
  t.same(out.got, ['s0'], 'no slice after the first while the call runs')
  t.equal(q.size, 49, 'the rest wait')
  q.callEnded()
  await until(t, 'the rest', () => out.got.length === 50)
})

t.test('busy: busyAt spans waiting go whatever runs, all of them', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 20, busyAt: 10, slice: 3, maxWaitMs: 60_000 })
  t.teardown(() => q.stop())
  q.callStarted()
  for (let i = 0; i < 9; i++) q.add(span(`s${i}`))
  await sleep(50)
  t.same(out.got, [], 'below busyAt: held')
  q.add(span('s9'))
  await until(t, 'all ten while the call runs', () => out.got.length === 10)
  t.equal(q.size, 0)
  q.callEnded()
})

t.test('busy: spans that waited maxWaitMs go whatever runs', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 10, maxWaitMs: 100, slice: 2 })
  t.teardown(() => q.stop())
  q.callStarted()
  const start = Date.now()
  for (let i = 0; i < 5; i++) q.add(span(`s${i}`))
  await until(t, 'all five while the call runs', () => out.got.length === 5, 3000)
  t.ok(Date.now() - start >= 90, 'after maxWaitMs, not before')
  q.callEnded()
})

t.test('what taking adds goes too: in the same drain, and in drain()', async (t) => {
  const got: string[] = []
  const q: IdleSpanQueue<string> = new IdleSpanQueue<string>(
    (item) => {
      got.push(item)
      if (item.startsWith('frame')) q.add(`span of ${item}`)
    },
    { idleMs: 10, slice: 1 },
  )
  t.teardown(() => q.stop())
  q.add('frame a')
  await until(t, 'the frame and the span made of it', () => got.length === 2)
  t.same(got, ['frame a', 'span of frame a'])
  q.callStarted()
  q.add('frame b')
  q.drain()
  t.same(got, ['frame a', 'span of frame a', 'frame b', 'span of frame b'], 'drain() takes until nothing is left')
  t.equal(q.size, 0)
})

t.test('an item whose taking throws is reported and dropped; the others go on', async (t) => {
  const got: string[] = []
  const errors: unknown[] = []
  const q = new IdleSpanQueue<string>(
    (item) => {
      if (item === 'bad') throw new Error('no parent')
      got.push(item)
    },
    { idleMs: 10, onError: (err) => void errors.push(err) },
  )
  t.teardown(() => q.stop())
  q.add('a')
  q.add('bad')
  q.add('b')
  await until(t, 'the good ones', () => got.length === 2)
  t.same(got, ['a', 'b'])
  t.match(errors, [{ message: 'no parent' }], 'the throw reported')
  q.add('bad')
  q.drain()
  t.equal(errors.length, 2, 'drain() reports too')
})

t.test('drain(): everything at once, the timers stopped', async (t) => {
  const out = taker()
  const q = new IdleSpanQueue(out.take, { idleMs: 20 })
  q.callStarted()
  q.add(span('a'))
  q.add(span('b'))
  q.drain()
  t.same(out.got, ['a', 'b'])
  t.equal(q.size, 0)
  await sleep(40)
  t.same(out.got, ['a', 'b'], 'nothing twice')
})
