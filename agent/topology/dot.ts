// The topology as a Graphviz digraph (`nsmctl topology -o dot | dot -Tsvg`): a cluster per node, a box per
// pod listing its endpoints, an ellipse per endpoint, and an edge per connection from its client pod to its
// endpoint, labelled with the interface, mechanism, state and addresses (dashed across nodes, red when not UP).
import type { Topology } from './model.js'

/** A DOT double-quoted string. */
export function dotString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`
}

export function topologyDot(t: Topology): string {
  const out: string[] = []
  out.push('digraph nsm {')
  out.push('  rankdir=LR;')
  out.push('  node [fontname="Helvetica", fontsize=10];')
  out.push('  edge [fontname="Helvetica", fontsize=9];')
  t.nodes.forEach((n, i) => {
    out.push(`  subgraph ${dotString(`cluster_${i}`)} {`)
    out.push(`    label=${dotString(`node ${n.name}${n.self ? ' (this agent)' : ''}`)};`)
    for (const p of t.pods.filter((x) => x.node === n.name)) {
      out.push(`    ${dotString(`pod:${p.id}`)} [shape=box, label=${dotString(`${p.name}${p.netns === '' ? '' : `\n${p.netns}`}`)}];`)
    }
    for (const e of t.endpoints.filter((x) => x.node === n.name)) {
      out.push(`    ${dotString(`ep:${e.name}`)} [shape=ellipse, label=${dotString(`${e.name}\n${e.services.join(', ')}${e.pools.length === 0 ? '' : `\n${e.pools.join(', ')}`}`)}];`)
    }
    out.push('  }')
  })
  for (const e of t.endpoints) {
    if (e.pod !== '') out.push(`  ${dotString(`pod:${e.pod}`)} -> ${dotString(`ep:${e.name}`)} [style=dotted, arrowhead=none, label="hosts"];`)
  }
  for (const c of t.connections) {
    const to = c.endpoint !== '' && t.endpoints.some((e) => e.name === c.endpoint) ? `ep:${c.endpoint}` : `missing:${c.endpoint}`
    if (to.startsWith('missing:')) out.push(`  ${dotString(to)} [shape=ellipse, style=dashed, label=${dotString(`${c.endpoint || '?'}\n(not registered here)`)}];`)
    const label = `${c.ifname} ${c.mechanism.summary}\n${c.state} ${c.srcAddresses.join(',')} -> ${c.dstAddresses.join(',')}`
    const style = [c.clientNode !== c.endpointNode ? 'style=dashed' : '', c.state === 'UP' ? '' : 'color=red']
      .filter((s) => s !== '')
      .join(', ')
    out.push(`  ${dotString(`pod:${c.clientPod}`)} -> ${dotString(to)} [label=${dotString(label)}, tooltip=${dotString(c.id)}${style === '' ? '' : `, ${style}`}];`)
  }
  out.push('}')
  return `${out.join('\n')}\n`
}
