// Reads an agent's /metrics (Prometheus text format) into samples, for the observability tests.
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export async function scrape(address: string): Promise<Sample[]> {
  const res = await fetch(`http://${address}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
  return parseExposition(await res.text())
}

export function parseExposition(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not an exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] ?? ''] = (l[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    out.push({ name: m[1] ?? '', labels, value: Number(m[3]) })
  }
  return out
}

/** The value of the one sample of `name` whose labels include `labels`; 0 when there is none. */
export function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return hits.reduce((sum, s) => sum + s.value, 0)
}
