// agent/pipeline/chain.ts and observe.ts: the instrumentation hook's frames. Each watched element call is one
// CallFrame, started and ended once for every observer, nested on its call scope's stack (`outer`), its time
// added to the frame that called it (`innerMs`); a frame no observer records is not stacked and not ended; a
// failure, thrown or rejected, ends the frame failed with its error; several observers see every start and
// are told the ends in reverse order. A Request, Close or heal (`watchCall`) is a frame too, told to callStart
// before it runs (not yet on the stack) and to callEnd once it settled, with its result or error.
import t from 'tap'
import { buildChain, type Element, type Handler, type PipelineClose, type PipelineRequest } from '../../agent/pipeline/chain.js'
import { CallFrame, combineObservers, frameStack, runningFrame, watchCall, watchesCalls, type PipelineCall, type PipelineObserver } from '../../agent/pipeline/observe.js'
import { inCallScope } from '../../agent/server/call-scope.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { Span } from '@opentelemetry/api'

interface Seen {
  starts: CallFrame[]
  ends: Array<{ frame: CallFrame; failed: boolean; error: unknown }>
}

/** An observer that records what it is told; `records` decides elementStart's answer. */
function recorder(records: (f: CallFrame) => boolean = () => true): PipelineObserver & Seen {
  const seen: Seen = { starts: [], ends: [] }
  return {
    ...seen,
    elementStart(frame) {
      seen.starts.push(frame)
      return records(frame)
    },
    elementEnd(frame) {
      seen.ends.push({ frame, failed: frame.failed, error: frame.error })
    },
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

/** An element that waits a turn, calls the next one, and waits again; `fail` makes it throw or reject. */
function el(name: string, fail?: 'throw' | 'reject', observed?: Element['observed']): Element {
  return {
    name,
    needs: [],
    provides: [],
    ...(observed === undefined ? {} : { observed }),
    wrap: (next: Handler): Handler => ({
      request(r) {
        if (fail === 'throw') throw new Error(`${name} threw`)
        return (async () => {
          await tick()
          if (fail === 'reject') throw new Error(`${name} rejected`)
          const out = await next.request(r)
          await tick()
          return out
        })()
      },
      async close(c) {
        await tick()
        await next.close(c)
      },
    }),
  }
}

const request = { connection: { id: 'c1' } as Connection, mechanismPreferences: [], ctx: {} as PipelineRequest['ctx'], state: {} } as PipelineRequest
const close = { connection: { id: 'c1' } as Connection, ctx: {} as PipelineClose['ctx'], record: undefined } as PipelineClose

t.test('nested elements: one frame each, outer links, inner time added to the caller, stack empty after', async (t) => {
  const o = recorder()
  const chain = buildChain([el('a'), el('b'), el('c')], { observe: o })
  let stackAfter: CallFrame[] | undefined
  await inCallScope({}, async () => {
    await chain.request(request)
    stackAfter = frameStack()
  })
  t.same(
    o.starts.map((f) => [f.element, f.op, f.outer?.element]),
    [
      ['a', 'request', undefined],
      ['b', 'request', 'a'],
      ['c', 'request', 'b'],
    ],
    'each element started once, inside the one that called it',
  )
  t.same(
    o.ends.map((e) => [e.frame.element, e.failed]),
    [
      ['c', false],
      ['b', false],
      ['a', false],
    ],
    'ended innermost first, none failed',
  )
  const [a, b, c] = o.starts as [CallFrame, CallFrame, CallFrame]
  for (const f of [a, b, c]) t.ok(f.endMs >= f.startMs, `${f.element}: end set, not before start`)
  t.equal(c.innerMs, 0, 'the innermost called nothing watched')
  t.equal(b.innerMs, c.endMs - c.startMs, "b's inner time is c's whole time")
  t.equal(a.innerMs, b.endMs - b.startMs, "a's inner time is b's whole time (c's counted once, inside b)")
  t.same(stackAfter, [], 'nothing left on the scope')
})

t.test('close runs the same frames with op close; an element whose close is not observed has none', async (t) => {
  const o = recorder()
  const chain = buildChain([el('a'), el('b', undefined, { close: false }), el('c')], { observe: o })
  await inCallScope({}, () => chain.close(close))
  t.same(
    o.starts.map((f) => [f.element, f.op, f.outer?.element]),
    [
      ['a', 'close', undefined],
      ['c', 'close', 'a'],
    ],
    'b hands the close on unwatched: c runs inside a',
  )
})

t.test('a frame no observer records: neither stacked nor ended', async (t) => {
  const o = recorder((f) => f.element !== 'b')
  const chain = buildChain([el('a'), el('b'), el('c')], { observe: o })
  await inCallScope({}, () => chain.request(request))
  t.same(
    o.starts.map((f) => [f.element, f.outer?.element]),
    [
      ['a', undefined],
      ['b', 'a'],
      ['c', 'a'],
    ],
    "b was declined: c's outer is a",
  )
  t.same(
    o.ends.map((e) => e.frame.element),
    ['c', 'a'],
    'b not ended',
  )
})

t.test('a thrown and a rejected failure end their frames and the callers\' failed, with the error', async (t) => {
  for (const how of ['throw', 'reject'] as const) {
    const o = recorder()
    const chain = buildChain([el('a'), el('b'), el('c', how)], { observe: o })
    let stackAfter: CallFrame[] | undefined
    await inCallScope({}, async () => {
      await t.rejects(chain.request(request), { message: `c ${how === 'throw' ? 'threw' : 'rejected'}` }, `${how}: the caller sees the error`)
      stackAfter = frameStack()
    })
    t.same(
      o.ends.map((e) => [e.frame.element, e.failed, (e.error as Error).message]),
      ['c', 'b', 'a'].map((n) => [n, true, `c ${how === 'throw' ? 'threw' : 'rejected'}`]),
      `${how}: every frame ended failed with c's error`,
    )
    t.same(stackAfter, [], `${how}: nothing left on the scope`)
  }
})

/** An element that does its work synchronously and hands on the next one's promise as it is (validate, path). */
function handOn(name: string, work: () => void = () => undefined): Element {
  return {
    name,
    needs: [],
    provides: [],
    wrap: (next: Handler): Handler => ({
      request(r) {
        work()
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
}

t.test('elements that hand on the next one\'s promise unchanged end with it: no reaction of their own, own time before the hand-on', async (t) => {
  const o = recorder()
  const busy = (ms: number) => (): void => {
    const until = performance.now() + ms
    while (performance.now() < until);
  }
  const chain = buildChain([handOn('v', busy(3)), handOn('p', busy(2)), el('s'), el('m')], { observe: o })
  let stackAfter: CallFrame[] | undefined
  await inCallScope({}, async () => {
    await chain.request(request)
    stackAfter = frameStack()
  })
  t.same(
    o.ends.map((e) => [e.frame.element, e.failed]),
    [
      ['m', false],
      ['s', false],
      ['p', false],
      ['v', false],
    ],
    'ended innermost first, each once',
  )
  const [v, p, s, m] = o.starts as [CallFrame, CallFrame, CallFrame, CallFrame]
  t.equal(s.endsWith, p, 'p ends with s, whose promise it handed on')
  t.equal(p.endsWith, v, 'v ends with p (the same promise, handed on twice)')
  t.equal(m.endsWith, undefined, 'm awaited nothing it handed on: its own reaction')
  t.equal(p.endMs, s.endMs, 'p ends when s does')
  t.equal(v.endMs, s.endMs, 'v ends when s does')
  t.equal(p.innerMs, s.endMs - s.startMs, "p's inner time is s's whole time")
  t.equal(v.innerMs, p.endMs - p.startMs, "v's inner time is p's whole time")
  const own = (f: CallFrame): number => f.endMs - f.startMs - f.innerMs
  t.ok(own(v) >= 3 && own(v) < s.endMs - v.startMs, `v's own time is its work before the hand-on (${own(v).toFixed(2)} ms)`)
  t.ok(own(p) >= 2 && Math.abs(own(p) - (s.startMs - p.startMs)) < 1e-6, `p's own time is the time until s started (${own(p).toFixed(2)} ms)`)
  t.same(stackAfter, [], 'nothing left on the scope')

  // A rejection ends them all failed, with its error.
  const f = recorder()
  const failing = buildChain([handOn('v'), handOn('p'), el('s', 'reject')], { observe: f })
  await inCallScope({}, async () => {
    await t.rejects(failing.request(request), { message: 's rejected' })
  })
  t.same(
    f.ends.map((e) => [e.frame.element, e.failed, (e.error as Error).message]),
    ['s', 'p', 'v'].map((n) => [n, true, 's rejected']),
    'a rejection ends the hand-on frames failed with the same error',
  )

  // A check that throws in the hand-on element itself: its own frame fails, synchronously.
  const g = recorder()
  const throwing = buildChain([handOn('v', () => {
    throw new Error('v refused')
  }), el('s')], { observe: g })
  await inCallScope({}, async () => {
    t.throws(() => throwing.request(request), { message: 'v refused' })
  })
  t.same(
    g.ends.map((e) => [e.frame.element, e.failed]),
    [['v', true]],
    'only v started and ended, failed',
  )
})

t.test('a promise handed on after its frame ended (a cached one) is not a hand-on: the element gets its own reaction', async (t) => {
  const o = recorder()
  let cached: Promise<Connection> | undefined
  const cache: Element = {
    name: 'cache',
    needs: [],
    provides: [],
    wrap: (next: Handler): Handler => ({
      request(r) {
        cached ??= next.request(r)
        return cached
      },
      close: (c) => next.close(c),
    }),
  }
  const chain = buildChain([cache, el('s')], { observe: o })
  await inCallScope({}, async () => {
    await chain.request(request)
    await chain.request(request)
  })
  t.same(
    o.ends.map((e) => e.frame.element),
    ['s', 'cache', 'cache'],
    'both calls of cache ended, the second on its own (s ran once)',
  )
  const second = o.starts[2] as CallFrame
  t.equal(second.element, 'cache')
  t.ok(second.endMs >= second.startMs, 'the second call has an end of its own')
})

t.test('outside any call scope frames do not nest', async (t) => {
  const o = recorder()
  const chain = buildChain([el('a'), el('b')], { observe: o })
  await chain.request(request)
  t.same(
    o.starts.map((f) => f.outer),
    [undefined, undefined],
    'no outer frames',
  )
  t.equal(o.starts[0]?.innerMs, 0, 'no inner time added: an element\'s time is its own and the rest of the chain\'s')
  t.equal(o.ends.length, 2)
})

t.test('two observers: each sees every start; a frame either records is ended for both, innermost observer first', async (t) => {
  const order: string[] = []
  const mk = (name: string, records: (f: CallFrame) => boolean): PipelineObserver => ({
    elementStart(f) {
      order.push(`${name} start ${f.element}`)
      return records(f)
    },
    elementEnd(f) {
      order.push(`${name} end ${f.element}`)
    },
  })
  const outer = mk('outer', (f) => f.element === 'a')
  const inner = mk('inner', () => false)
  const both = combineObservers([outer, inner])
  t.ok(both !== undefined)
  const chain = buildChain([el('a'), el('b')], { observe: both as PipelineObserver })
  await inCallScope({}, () => chain.request(request))
  t.same(order, ['outer start a', 'inner start a', 'outer start b', 'inner start b', 'inner end a', 'outer end a'], 'b recorded by neither: not ended; a ended for both')
  t.equal(combineObservers([undefined, inner]), inner, 'one observer: itself')
  t.equal(combineObservers([undefined]), undefined, 'none: undefined')
})

t.test('runningFrame: the innermost frame with a span or traced, in this scope or an outer one', async (t) => {
  t.equal(runningFrame(), undefined, 'outside any scope: none')
  await inCallScope({}, async () => {
    const stack = frameStack() as CallFrame[]
    const f1 = new CallFrame(undefined, undefined, undefined, 0)
    f1.span = { name: 'request' } as unknown as Span
    stack.push(f1)
    t.equal(runningFrame(), f1)
    stack.push(new CallFrame('a', 'request', f1, 0))
    t.equal(runningFrame(), f1, 'a frame neither with a span nor traced is skipped')
    await inCallScope({}, async () => {
      t.equal(runningFrame(), f1, "an inner scope without frames: the outer scope's")
      const f3 = new CallFrame('b', 'request', undefined, 0)
      f3.traced = true
      frameStack()?.push(f3)
      t.equal(runningFrame(), f3, "the inner scope's own traced frame first, its span not made yet")
    })
  })
})

t.test('without element hooks the chain is linked directly: no frame while an element runs', async (t) => {
  const depths: Array<number | undefined> = []
  const probe: Element = {
    name: 'probe',
    needs: [],
    provides: [],
    wrap: (next) => ({
      request: (r) => {
        depths.push(frameStack()?.length)
        return next.request(r)
      },
      close: (c) => next.close(c),
    }),
  }
  const watchedToo = recorder()
  for (const observe of [undefined, { outgoing: () => ({}) }, watchedToo]) {
    const chain = buildChain([el('a'), probe], observe === undefined ? {} : { observe })
    await inCallScope({}, () => chain.request(request))
  }
  t.same(depths, [0, 0, 2], 'none without an observer or without element hooks; a and probe with one')
})

t.test('watchCall: one frame, told as it starts (not yet stacked) and once it settled, with the result or the error', async (t) => {
  const seen: string[] = []
  const frames: CallFrame[] = []
  const calls: unknown[] = []
  const o: PipelineObserver = {
    callStart(f) {
      frames.push(f)
      calls.push(f.call)
      seen.push(`start ${f.call?.op} stacked=${frameStack()?.includes(f) === true}`)
    },
    callEnd(f) {
      seen.push(`end ${f.call?.op} failed=${f.failed} result=${String(f.result)} error=${(f.error as Error | undefined)?.message} stacked=${frameStack()?.includes(f) === true}`)
    },
  }
  const call: PipelineCall = { op: 'heal', subject: { connection: 'c1', service: 's' }, reason: 'endpoint-gone' }
  await inCallScope({}, async () => {
    const out = await watchCall(o, call, async () => {
      seen.push(`run stacked=${frameStack()?.includes(frames[0] as CallFrame) === true}`)
      await tick()
      return true
    })
    t.equal(out, true, 'resolves with what run did')
    await t.rejects(
      watchCall(o, { op: 'request', subject: { connection: 'c2', service: 's' }, ctx: {} as PipelineRequest['ctx'] }, async () => {
        throw new Error('no endpoint')
      }),
      { message: 'no endpoint' },
      'rejects as run did',
    )
    await t.rejects(
      watchCall(o, { op: 'close', subject: { connection: 'c3', service: 's' }, ctx: {} as PipelineClose['ctx'], record: undefined }, () => {
        throw new Error('thrown before a promise')
      }),
      { message: 'thrown before a promise' },
      'a run that throws: a rejection too',
    )
    t.same(frameStack(), [], 'nothing left on the scope')
  })
  t.same(seen, [
    'start heal stacked=false',
    'run stacked=true',
    'end heal failed=false result=true error=undefined stacked=false',
    'start request stacked=false',
    'end request failed=true result=undefined error=no endpoint stacked=false',
    'start close stacked=false',
    'end close failed=true result=undefined error=thrown before a promise stacked=false',
  ])
  const [heal] = frames as [CallFrame]
  t.equal(calls[0], call, 'the frame carries the call while it runs')
  t.equal(heal.call, undefined, 'and drops it once callEnd was told (an element span may keep the frame until the agent is idle)')
  t.equal(heal.result, undefined, 'the result too')
  t.equal(heal.element, undefined, 'not an element')
  t.ok(heal.endMs >= heal.startMs, 'timed')
})

t.test('call hooks of several observers: started outermost first, ended innermost first; watchesCalls', async (t) => {
  const order: string[] = []
  const mk = (name: string): PipelineObserver => ({ callStart: () => void order.push(`${name} start`), callEnd: () => void order.push(`${name} end`) })
  const both = combineObservers([mk('outer'), { elementStart: () => false }, mk('inner')]) as PipelineObserver
  await watchCall(both, { op: 'close', subject: { connection: 'c1', service: 's' }, ctx: {} as PipelineClose['ctx'], record: undefined }, async () => undefined)
  t.same(order, ['outer start', 'inner start', 'inner end', 'outer end'])
  t.ok(watchesCalls(both), 'a combination with call hooks watches calls')
  t.notOk(watchesCalls(combineObservers([{ elementStart: () => true }, { outgoing: () => ({}) }])), 'none of them has call hooks: calls are not wrapped')
  t.notOk(watchesCalls(undefined), 'no observer')
})
