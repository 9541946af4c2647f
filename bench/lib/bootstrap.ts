// How sure a benchmark can be of a percentile's difference between two settings measured side by side
// (bench/observe.ts): a bootstrap over what varies in such a run. Two agents doing the same work differ by a few
// per cent for the whole run (their memory layout, the kernel work each is charged), and the host's speed drifts
// from round to round; both move a pooled percentile more than the samples inside one agent's round do. So each
// resample draws the agents of each pool with replacement and, shared by both pools (their rounds ran at the same
// times, in turns), the rounds with replacement, and takes the percentile of what it drew. The spread of the
// ratio over the resamples is the interval; with four agents a pool it is wide, and says so.
import { percentile } from './report'

/** One agent's samples, round by round: `rounds[r]` holds the samples of its round r. */
export type AgentRounds = ReadonlyArray<readonly number[]>

export interface Interval {
  /** `p` of the interval's low and high ends, as a fraction: (other − base) / base. */
  low: number
  high: number
}

/**
 * The central `level` interval (default 0.95) of (P(other) − P(base)) / P(base), P the `p`th percentile of the
 * pooled samples, over `resamples` bootstrap resamples. Every agent of both pools must have the same number of
 * rounds. `random` in [0, 1): seeded by the caller so that a run can be repeated.
 */
export function percentileRatioInterval(base: readonly AgentRounds[], other: readonly AgentRounds[], p: number, random: () => number, resamples = 2000, level = 0.95): Interval {
  const rounds = base[0]?.length ?? 0
  if (rounds === 0 || other.length === 0) throw new Error('bootstrap: no samples (a pool without agents, or agents without rounds)')
  for (const a of [...base, ...other]) if (a.length !== rounds) throw new Error(`bootstrap: every agent needs ${rounds} rounds, one has ${a.length}`)
  const pick = (n: number): number => Math.floor(random() * n)
  const drawn = (pool: readonly AgentRounds[], roundIdx: readonly number[]): number => {
    const xs: number[] = []
    for (let i = 0; i < pool.length; i++) {
      const agent = pool[pick(pool.length)] as AgentRounds
      for (const r of roundIdx) for (const x of agent[r] as readonly number[]) xs.push(x)
    }
    return percentile(xs.sort((a, b) => a - b), p)
  }
  const ratios: number[] = []
  for (let k = 0; k < resamples; k++) {
    const roundIdx = Array.from({ length: rounds }, () => pick(rounds))
    const b = drawn(base, roundIdx)
    ratios.push((drawn(other, roundIdx) - b) / b)
  }
  ratios.sort((a, b) => a - b)
  const tail = ((1 - level) / 2) * 100
  return { low: percentile(ratios, tail), high: percentile(ratios, 100 - tail) }
}
