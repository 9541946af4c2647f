// testpmd's replies read (the text ./testpmd-console.ts returns for a command): the port a `port attach`
// gave, the ports' link states, a port's counters. Pure functions; test/lib/memif-peer.ts reads its
// client's prompt with them too.

/** `port attach` answered "Port N is attached": N, else undefined (testpmd drops a failed vdev and goes on). */
export function parseAttachedPort(reply: string): number | undefined {
  const m = /Port (\d+) is attached/.exec(reply)
  return m === null ? undefined : Number(m[1])
}

export interface PortSummary {
  port: number
  name: string
  driver: string
  up: boolean
}

/** `show port summary all`. */
export function parsePortSummary(reply: string): PortSummary[] {
  const out: PortSummary[] = []
  for (const line of reply.split('\n')) {
    const m = /^(\d+)\s+[0-9A-Fa-f:]{17}\s+(\S+)\s+(\S+)\s+(up|down)\b/.exec(line.trim())
    if (m !== null) out.push({ port: Number(m[1]), name: m[2] as string, driver: m[3] as string, up: m[4] === 'up' })
  }
  return out
}

export interface PortCounters {
  rxPackets: number
  txPackets: number
  rxBytes: number
  txBytes: number
}

/** `show port stats N`; undefined when the reply has no counters (an invalid port). */
export function parsePortStats(reply: string): PortCounters | undefined {
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(reply)
    return m === null ? undefined : Number(m[1])
  }
  const rxPackets = num(/RX-packets:\s*(\d+)/)
  const rxBytes = num(/RX-bytes:\s*(\d+)/)
  const txPackets = num(/TX-packets:\s*(\d+)/)
  const txBytes = num(/TX-bytes:\s*(\d+)/)
  if (rxPackets === undefined || rxBytes === undefined || txPackets === undefined || txBytes === undefined) return undefined
  return { rxPackets, txPackets, rxBytes, txBytes }
}
