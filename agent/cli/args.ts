// nsmctl's argument parsing: positional words plus `--flag value`, `--flag=value`, `-o value` and
// boolean flags, each command declaring which flags it takes. Anything else is a UsageError (exit 2)
// naming the flag.

export class UsageError extends Error {
  override readonly name = 'UsageError'
}

export type FlagSpec = Readonly<Record<string, 'value' | 'bool'>>

export interface Parsed {
  positional: string[]
  flags: Map<string, string[]>
}

const SHORT: Readonly<Record<string, string>> = { '-o': '--output', '-f': '--filename', '-h': '--help', '-l': '--labels', '-w': '--watch' }

export function parseArgs(argv: readonly string[], spec: FlagSpec): Parsed {
  const positional: string[] = []
  const flags = new Map<string, string[]>()
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i] ?? ''
    if (!raw.startsWith('-') || raw === '-') {
      positional.push(raw)
      continue
    }
    const eq = raw.indexOf('=')
    const given = eq > 0 ? raw.slice(0, eq) : raw
    const name = SHORT[given] ?? given
    const kind = spec[name]
    if (kind === undefined) throw new UsageError(`${given}: unknown flag`)
    let value = 'true'
    if (kind === 'value') {
      if (eq > 0) value = raw.slice(eq + 1)
      else {
        const next = argv[i + 1]
        if (next === undefined || (next.startsWith('-') && next !== '-')) throw new UsageError(`${given}: needs a value`)
        value = next
        i += 1
      }
    } else if (eq > 0) throw new UsageError(`${given}: takes no value`)
    const list = flags.get(name) ?? []
    list.push(value)
    flags.set(name, list)
  }
  return { positional, flags }
}

export function one(p: Parsed, flag: string): string | undefined {
  const v = p.flags.get(flag)
  if (v === undefined) return undefined
  if (v.length > 1) throw new UsageError(`${flag}: given more than once`)
  return v[0]
}

export function all(p: Parsed, flag: string): string[] {
  return p.flags.get(flag) ?? []
}

/** `k=v,k2=v2` (repeatable flag values are merged); names the flag on error. */
export function labelPairs(flag: string, values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const v of values) {
    for (const pair of v.split(',')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      if (eq <= 0) throw new UsageError(`${flag} ${v}: "${pair}" is not key=value`)
      out[pair.slice(0, eq)] = pair.slice(eq + 1)
    }
  }
  return out
}
