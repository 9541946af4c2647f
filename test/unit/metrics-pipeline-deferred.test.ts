// agent/metrics/pipeline.ts: the pipeline hook as metrics observes no duration in the call's path. What a frame
// that ended records (its series and seconds, nothing of the frame) waits until the metrics are read (flush,
// which the metrics server runs before each scrape), or until 1,024 wait; then each element's own share and each
// Request's and Close's duration are observed as before. A failure's CNI code is counted at once.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { createMetrics } from '../../agent/metrics/metrics.js'
import { CallFrame, watchCall, type PipelineCall } from '../../agent/pipeline/observe.js'
import { AgentError } from '../../agent/errors.js'
import type { CallContext } from '../../agent/server/handler.js'

const ctx = { metadata: new Map() } as unknown as CallContext

function ended(f: CallFrame, ms: number, failed = false, error?: unknown): CallFrame {
  f.endMs = f.startMs + ms
  f.failed = failed
  f.error = error
  return f
}
const request = (service: string): PipelineCall => ({ op: 'request', subject: { connection: 'c1', service }, ctx })

/** The value of one sample line of the registry's text, or undefined when the series is not there. */
async function sample(m: ReturnType<typeof createMetrics>, line: RegExp): Promise<number | undefined> {
  const text = await m.registry.metrics()
  const found = text.split('\n').find((l) => line.test(l))
  return found === undefined ? undefined : Number(found.slice(found.lastIndexOf(' ') + 1))
}

t.test('nothing is observed until flush; then every frame that ended, once', async (t) => {
  const m = createMetrics()
  const call = new CallFrame(undefined, undefined, undefined, 100, request('web'))
  const el = new CallFrame('ipam', 'request', call, 101)
  el.innerMs = 1
  t.equal(m.pipeline.elementStart?.(el), true)
  m.pipeline.elementEnd?.(ended(el, 4))
  m.pipeline.callEnd?.(ended(call, 6))
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), undefined, 'not yet observed')
  m.flush()
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), 1)
  t.equal(await sample(m, /^nsm_request_duration_seconds_sum\{service="web",outcome="ok"\}/), 0.006)
  t.equal(await sample(m, /^nsm_pipeline_element_duration_seconds_sum\{element="ipam",op="request",outcome="ok"\}/), 0.003, "the element's own share: 4 ms less the 1 ms inside it")
  m.flush()
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), 1, 'a second flush observes nothing twice')
})

t.test('a failed Request is counted by its CNI code at once, its duration at flush', async (t) => {
  const m = createMetrics()
  const call = new CallFrame(undefined, undefined, undefined, 0, request('db'))
  m.pipeline.callEnd?.(ended(call, 2, true, AgentError.invalid('connection', 'is required')))
  t.ok((await sample(m, /^nsm_errors_total\{operation="request",code="\d+",name="[^"]+"\}/)) === 1, 'the error counted with its code and name')
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="db",outcome="error"\}/), undefined)
  m.flush()
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="db",outcome="error"\}/), 1)
})

t.test("what waits for a scrape holds nothing of the call: its result is collectable before flush", async (t) => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const m = createMetrics()
  let result: WeakRef<object> | undefined
  await watchCall(m.pipeline, request('web'), async () => {
    const connection = { id: 'c1', big: new Array(1000).fill('x') }
    result = new WeakRef(connection)
    return connection
  })
  await new Promise((r) => setImmediate(r))
  gc()
  t.equal(result?.deref(), undefined, "the Request's result was collected while its duration waits")
  m.flush()
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), 1, 'and its duration is observed at flush')
})

t.test('1,024 waiting frames are observed without a scrape', async (t) => {
  const m = createMetrics()
  for (let i = 0; i < 1023; i++) m.pipeline.callEnd?.(ended(new CallFrame(undefined, undefined, undefined, 0, request('web')), 1))
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), undefined, '1,023 still wait')
  m.pipeline.callEnd?.(ended(new CallFrame(undefined, undefined, undefined, 0, request('web')), 1))
  t.equal(await sample(m, /^nsm_request_duration_seconds_count\{service="web",outcome="ok"\}/), 1024, 'the 1,024th records them all')
})
