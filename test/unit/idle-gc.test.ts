// agent/idle-gc.ts in a node process of its own (test/fixtures/idle-gc-child.ts): once the event loop is idle
// and the heap has grown, it runs full collections that free the garbage and give pages back, once; a busy
// loop gets none; a node without --expose-gc gets none and nothing fails.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')
const CHILD = join(ROOT, 'test/fixtures/idle-gc-child.ts')

interface Ev {
  event: string
  before?: number
  after?: number
  n?: number
  collections?: number
  start?: { used: number; committed: number }
  grown?: { used: number; committed: number }
  end?: { used: number; committed: number }
}

function run(flags: string[], mode: string): Ev[] {
  const out = execFileSync(process.execPath, [...flags, '--import', 'tsx', CHILD], { cwd: ROOT, env: { ...process.env, MODE: mode }, encoding: 'utf8', timeout: 60_000 })
  return out.trim().split('\n').map((l) => JSON.parse(l) as Ev)
}

t.test('idle after garbage: collected once, the garbage freed and pages given back', async (t) => {
  const evs = run(['--expose-gc'], 'idle')
  const collected = evs.filter((e) => e.event === 'collected')
  const end = evs.find((e) => e.event === 'end')
  t.equal(collected.length, 1, 'one collection: the second idle period had no new garbage')
  const c = collected[0] as Ev
  // Against the heap right after the garbage was made: V8 may have run a collection of its own before the idle one.
  t.ok((c.after as number) < (end?.grown?.used as number) / 2, `heap in use ${end?.grown?.used} when made → ${c.after} after`)
  t.ok((end?.end?.committed as number) < (end?.grown?.committed as number) * 0.7, `committed heap ${end?.grown?.committed} → ${end?.end?.committed}`)
})

t.test('a busy event loop is not interrupted by a collection', async (t) => {
  const evs = run(['--expose-gc'], 'busy')
  t.equal(evs.filter((e) => e.event === 'collected').length, 0)
  t.equal(evs.find((e) => e.event === 'end')?.collections, 0)
})

t.test('without --expose-gc there is nothing to call: no collection, no error', async (t) => {
  const evs = run([], 'idle')
  t.equal(evs.filter((e) => e.event === 'collected').length, 0)
  t.ok(evs.some((e) => e.event === 'end'))
})
