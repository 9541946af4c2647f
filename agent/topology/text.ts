// The topology drawn for a terminal (`nsmctl topology`): per node its pods, each pod's endpoints and the
// connections it is the client of (interface, addresses, mechanism, state, where they lead), then the
// services and the chains of pods (client ─▶ firewall ─▶ vpn-gateway).
import type { Topology, TopologyConnection, TopologyPod } from './model.js'

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

function list(xs: readonly string[]): string {
  return xs.length === 0 ? '-' : xs.join(',')
}

function connectionLine(c: TopologyConnection, pods: ReadonlyMap<string, TopologyPod>, self: string): string {
  const to = pods.get(c.endpointPod)
  const where = to === undefined ? (c.endpointNode !== self ? ` on ${c.endpointNode}` : '') : ` in ${to.name}${to.node !== self ? ` on ${to.node}` : ''}`
  const half = c.half === 'far' ? ` (endpoint half for ${c.clientNode})` : c.half === 'client' ? ' (client half)' : ''
  return `${c.ifname || '?'} ${list(c.srcAddresses)} ─[${c.mechanism.summary} · ${c.state}]─▶ ${c.endpoint || '?'}${where} ${list(c.dstAddresses)}${half}  (${c.service}, ${c.id})`
}

export function topologyText(t: Topology): string {
  const out: string[] = []
  const pods = new Map(t.pods.map((p) => [p.id, p]))
  const connections = new Map(t.connections.map((c) => [c.id, c]))
  const endpoints = new Map(t.endpoints.map((e) => [e.name, e]))
  out.push(
    `mesh seen by ${t.self} (store ${t.store}): ${plural(t.nodes.length, 'node')}, ${plural(t.pods.length, 'pod')}, ${plural(t.endpoints.length, 'endpoint')}, ${plural(t.services.length, 'service')}, ${plural(t.connections.length, 'connection')}`,
  )
  for (const n of t.nodes) {
    out.push('')
    const addr = [n.underlayAddress && `underlay ${n.underlayAddress}`, n.peerUrl && `peer ${n.peerUrl}`].filter((s) => s !== '').join(', ')
    out.push(`node ${n.name}${n.self ? ' (this agent)' : ''}${addr === '' ? '' : `  ${addr}`}`)
    const here = t.pods.filter((p) => p.node === n.name)
    if (here.length === 0) out.push('  (no pods seen)')
    for (const p of here) {
      out.push(`  pod ${p.name}${p.netns === '' || p.netns.endsWith(`/${p.name}`) ? '' : `  netns ${p.netns}`}`)
      for (const name of p.endpoints) {
        const e = endpoints.get(name)
        if (e === undefined) continue
        const labels = Object.entries(e.labels).map(([s, l]) => `${s}:${Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',') || '-'}`)
        out.push(`    ◆ endpoint ${e.name}  ${labels.join(' ') || list(e.services)}  pools ${list(e.pools)}  routes ${list(e.routes)}`)
      }
      for (const id of p.connections) {
        const c = connections.get(id)
        if (c !== undefined) out.push(`    ${connectionLine(c, pods, t.self)}`)
      }
    }
  }
  const homeless = t.endpoints.filter((e) => e.pod === '')
  if (homeless.length > 0) {
    out.push('')
    out.push('endpoints serving the NSM API')
    for (const e of homeless) out.push(`  ◆ ${e.name}  ${e.url}  on ${e.node}  ${list(e.services)}`)
  }
  out.push('')
  out.push('services')
  if (t.services.length === 0) out.push('  (none registered)')
  for (const s of t.services) {
    out.push(`  ${s.name} (${s.payload || '-'}): ${plural(s.endpoints.length, 'endpoint')}, ${plural(s.connections.length, 'connection')}`)
    for (const m of s.matches) out.push(`    match ${m}`)
  }
  if (t.chains.length > 0) {
    out.push('')
    out.push('chains')
    for (const chain of t.chains) out.push(`  ${chain.map((id) => pods.get(id)?.name ?? id).join(' ─▶ ')}`)
  }
  return `${out.join('\n')}\n`
}
