// bench/lib/bootstrap.ts: the interval bench/observe.ts gives a pooled percentile's gap between two settings.
// It must hold the true gap when the pools differ by a known factor, shrink to it when nothing varies, widen
// when agents of one pool differ for the whole run, and refuse pools whose agents ran different rounds.
import t from 'tap'
import { percentileRatioInterval, type AgentRounds } from '../../bench/lib/bootstrap.js'

/** A fixed-seed generator, as the benchmark's. */
function seeded(seed: number): () => number {
  let s = seed >>> 0
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32
}

/** An agent of `rounds` rounds of `n` samples around `center` ms (a spread of ±10 %), scaled by `factor`. */
function agent(rng: () => number, rounds: number, n: number, center: number, factor = 1): AgentRounds {
  return Array.from({ length: rounds }, () => Array.from({ length: n }, () => center * factor * (0.9 + 0.2 * rng())))
}

t.test('pools whose samples are the same times a factor: the interval is that factor', async (t) => {
  const rng = seeded(1)
  const base = Array.from({ length: 4 }, () => agent(rng, 20, 40, 2.5))
  // Every agent of the other pool is one base agent's samples × 1.08: whichever agents and rounds are drawn,
  // the percentile moves by the factor only where the same agents are drawn, so the interval holds +8 %.
  const same = [base[0] as AgentRounds]
  const other = same.map((a) => a.map((r) => r.map((x) => x * 1.08)))
  const i = percentileRatioInterval(same, other, 50, seeded(2), 500)
  t.ok(Math.abs(i.low - 0.08) < 1e-9 && Math.abs(i.high - 0.08) < 1e-9, `one agent each: exactly +8 % (${i.low}, ${i.high})`)
  const wide = percentileRatioInterval(base, base.map((a) => a.map((r) => r.map((x) => x * 1.08))), 50, seeded(3), 500)
  t.ok(wide.low < 0.08 && wide.high > 0.08, `four agents each: the interval holds +8 % (${wide.low.toFixed(4)}, ${wide.high.toFixed(4)})`)
  t.ok(wide.high - wide.low < 0.08, 'and is narrower than the gap itself when agents differ only by their samples')
})

t.test('two pools of the same agents: the interval holds 0', async (t) => {
  const rng = seeded(4)
  const base = Array.from({ length: 4 }, () => agent(rng, 30, 40, 3))
  const other = Array.from({ length: 4 }, () => agent(rng, 30, 40, 3))
  const i = percentileRatioInterval(base, other, 50, seeded(5), 1000)
  t.ok(i.low < 0 && i.high > 0, `(${i.low.toFixed(4)}, ${i.high.toFixed(4)}) holds 0`)
  t.ok(i.low < i.high, 'low below high')
})

t.test('agents that differ for the whole run widen the interval', async (t) => {
  const rng = seeded(6)
  // The same samples per agent, but in the second case each agent of both pools is off by up to ±6 % for the run.
  const plain = Array.from({ length: 8 }, () => agent(rng, 20, 40, 2.5))
  const offsets = [0.94, 1.0, 1.03, 1.06, 0.97, 1.02, 0.95, 1.05]
  const skewed = plain.map((a, k) => a.map((r) => r.map((x) => x * (offsets[k] as number))))
  const narrow = percentileRatioInterval(plain.slice(0, 4), plain.slice(4), 50, seeded(7), 1000)
  const broad = percentileRatioInterval(skewed.slice(0, 4), skewed.slice(4), 50, seeded(7), 1000)
  t.ok(broad.high - broad.low > 1.5 * (narrow.high - narrow.low), `width ${(broad.high - broad.low).toFixed(4)} against ${(narrow.high - narrow.low).toFixed(4)}`)
})

t.test('bad input is refused', async (t) => {
  const rng = seeded(8)
  t.throws(() => percentileRatioInterval([agent(rng, 3, 5, 1)], [agent(rng, 4, 5, 1)], 50, rng), /every agent needs 3 rounds, one has 4/)
  t.throws(() => percentileRatioInterval([], [agent(rng, 3, 5, 1)], 50, rng), /no samples/)
})
