// Spans that ended, waiting for the agent to be idle before the exporter (./otlp.ts) encodes them
// (ARCHITECTURE §13). Encoded and exported between calls that follow each other, spans are in the next call's
// way: it arrives while they are encoded, or finds the caches full of the encoder's code and data instead of its
// own (BENCHMARKS.md "Observability overhead"). So they wait until no traced call (Request, Close, heal,
// CNI call) runs and none ended in the last `idleMs`; while calls keep coming, until `busyAt` spans wait or
// some have waited `maxWaitMs`, and then all of them go whatever runs. They are handed over `slice` per turn of
// the event loop (~30 µs): a call arriving meanwhile waits for one slice at most, and an idle drain pauses
// while calls run again.
import { performance } from 'node:perf_hooks'


export interface IdleQueueOptions {
  /** Idle: no traced call for this long (ms, default 10). */
  idleMs?: number
  /** Spans waiting that are handed over however busy the agent is (default 1024). */
  busyAt?: number
  /** Spans that waited this long (ms, default 1000) are handed over however busy the agent is. */
  maxWaitMs?: number
  /** Spans handed over per turn of the event loop (default 16). */
  slice?: number
  /** Told when taking an item threw (a bug: the item is dropped, the rest go on); default: ignored. */
  onError?: (err: unknown) => void
}

/** Items (spans, or what spans are made of) handed to `take` once the agent is idle. */
export class IdleSpanQueue<T> {
  private waiting: T[] = []
  private readonly idleMs: number
  private readonly busyAt: number
  private readonly maxWaitMs: number
  private readonly sliceSize: number
  private readonly onError: (err: unknown) => void
  private immediate: NodeJS.Immediate | undefined
  private timer: NodeJS.Timeout | undefined
  /** Traced calls running, and performance.now() when the last one ended. */
  private active = 0
  private lastEndMs = 0
  /** performance.now() when the queue last went from empty to not. */
  private waitingSinceMs = 0
  /** Draining whatever runs (busyAt or maxWaitMs reached), until the queue is empty. */
  private urgent = false

  constructor(
    /** Takes one item: the exporter's add() (encodes a span at once), or makes the span of one and ends it. */
    private readonly take: (item: T) => void,
    o: IdleQueueOptions = {},
  ) {
    this.idleMs = o.idleMs ?? 10
    this.busyAt = o.busyAt ?? 1024
    this.maxWaitMs = o.maxWaitMs ?? 1000
    this.sliceSize = o.slice ?? 16
    this.onError = o.onError ?? (() => undefined)
  }

  /** Spans waiting. */
  get size(): number {
    return this.waiting.length
  }

  callStarted(): void {
    this.active++
  }

  callEnded(): void {
    this.active--
    this.lastEndMs = performance.now()
  }

  add(item: T): void {
    const n = this.waiting.push(item)
    if (n === 1) this.waitingSinceMs = performance.now()
    if (n >= this.busyAt) this.drainSoon(true)
    else if (this.timer === undefined && this.immediate === undefined) this.arm()
  }

  /** Hands everything over now, what taking adds included (shutdown). */
  drain(): void {
    this.stop()
    while (this.waiting.length > 0) {
      const waiting = this.waiting
      this.waiting = []
      for (const item of waiting) this.takeOne(item)
    }
  }

  /** `take`, a throw reported: it runs from timers and immediates, where a throw would end the process. */
  private takeOne(item: T): void {
    try {
      this.take(item)
    } catch (err) {
      this.onError(err)
    }
  }

  /** Stops the timers; what waits stays (drain() hands it over). */
  stop(): void {
    clearImmediate(this.immediate)
    clearTimeout(this.timer)
    this.immediate = undefined
    this.timer = undefined
    this.urgent = false
  }

  private arm(): void {
    this.timer = setTimeout(this.check, this.idleMs)
    this.timer.unref()
  }

  private drainSoon(urgent: boolean): void {
    this.urgent ||= urgent
    clearTimeout(this.timer)
    this.timer = undefined
    this.immediate ??= setImmediate(this.slice)
  }

  /** Drains when idle, or urgently when the spans cannot wait longer; else looks again in idleMs. */
  private readonly check = (): void => {
    this.timer = undefined
    const now = performance.now()
    if (now - this.waitingSinceMs >= this.maxWaitMs) this.drainSoon(true)
    else if (this.active === 0 && now - this.lastEndMs >= this.idleMs) this.drainSoon(false)
    else this.arm()
  }

  /** Hands the oldest `slice` spans over; the rest from the next turn, or (idle drain) once idle again. */
  private readonly slice = (): void => {
    this.immediate = undefined
    const n = Math.min(this.sliceSize, this.waiting.length)
    const items = this.waiting.splice(0, n)
    for (const item of items) this.takeOne(item)
    if (this.waiting.length === 0) {
      this.urgent = false
      return
    }
    // (What taking added may have set a timer or the next slice already.)
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.urgent || this.active === 0) this.immediate ??= setImmediate(this.slice)
    else if (this.immediate === undefined) this.arm()
  }
}
