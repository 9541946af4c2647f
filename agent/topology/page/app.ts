/// <reference lib="dom" />
// The topology page's script (bundled for the browser by build.mjs, served by the agent as /app.js): listens
// to /events (server-sent events, one `topology` message with the whole graph per change), lays the graph
// out (../layout.ts) and draws it as SVG; a click on a connection or a pod shows its details. Plain DOM, no
// framework, nothing loaded from elsewhere.
import type { Topology, TopologyConnection, TopologyPod } from '../model.js'
import { layoutTopology, type LaidOutBox } from '../layout.js'

const SVG = 'http://www.w3.org/2000/svg'

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  if (text !== undefined) e.textContent = text
  return e
}

function svg(tag: string, attrs: Record<string, string | number> = {}, text?: string): SVGElement {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  if (text !== undefined) e.textContent = text
  return e
}

function byId(id: string): HTMLElement {
  const e = document.getElementById(id)
  if (e === null) throw new Error(`#${id} is missing`)
  return e
}

let current: Topology | undefined
let selected: { kind: 'connection' | 'pod'; id: string } | undefined

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`
}

function drawBox(b: LaidOutBox, g: SVGElement): void {
  const box = svg('g', { class: `box ${b.kind}`, 'data-id': b.id, 'data-name': b.title, 'data-node': b.node })
  box.appendChild(svg('rect', { x: b.x, y: b.y, width: b.width, height: b.height, rx: 6 }))
  box.appendChild(svg('text', { x: b.x + 8, y: b.y + 15, class: 'title' }, clip(b.title, 34)))
  box.appendChild(svg('text', { x: b.x + 8, y: b.y + 28, class: 'subtitle' }, clip(b.subtitle, 40)))
  for (const r of b.rows) {
    const row = svg('text', { x: b.x + 14, y: r.y + 4, class: 'endpoint', 'data-endpoint': r.endpoint }, `◆ ${clip(r.endpoint, 32)}`)
    row.appendChild(svg('title', {}, r.endpoint))
    box.appendChild(row)
  }
  box.appendChild(svg('title', {}, `${b.title}\n${b.subtitle}`))
  if (b.kind === 'pod') box.addEventListener('click', () => select({ kind: 'pod', id: b.id }))
  g.appendChild(box)
}

function render(t: Topology): void {
  const layout = layoutTopology(t)
  const root = byId('graph')
  const canvas = svg('svg', { width: layout.width, height: layout.height, viewBox: `0 0 ${layout.width} ${layout.height}`, role: 'img' })
  const defs = svg('defs')
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' })
  marker.appendChild(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))
  defs.appendChild(marker)
  canvas.appendChild(defs)
  for (const band of layout.bands) {
    canvas.appendChild(svg('rect', { x: 4, y: band.y, width: layout.width - 8, height: band.height, rx: 10, class: `band${band.self ? ' self' : ''}` }))
    canvas.appendChild(svg('text', { x: 14, y: band.y + 18, class: 'band-label' }, `node ${band.node}${band.self ? ' (this agent)' : ''}`))
  }
  const boxes = svg('g', { class: 'boxes' })
  for (const b of layout.boxes) drawBox(b, boxes)
  const edges = svg('g', { class: 'edges' })
  const connections = new Map(t.connections.map((c) => [c.id, c]))
  for (const e of layout.edges) {
    const c = connections.get(e.id)
    if (c === undefined) continue
    const dx = Math.max(40, Math.abs(e.x2 - e.x1) / 2)
    const d = `M ${e.x1} ${e.y1} C ${e.x1 + dx} ${e.y1}, ${e.x2 - dx} ${e.y2}, ${e.x2} ${e.y2}`
    const g = svg('g', {
      class: `conn state-${c.state} mech-${c.mechanism.type || 'none'}${selected?.kind === 'connection' && selected.id === c.id ? ' selected' : ''}`,
      'data-id': c.id,
      'data-from': e.from,
      'data-to': e.to,
      'data-endpoint': c.endpoint,
      'data-state': c.state,
    })
    g.appendChild(svg('path', { d, class: 'line', 'marker-end': 'url(#arrow)' }))
    g.appendChild(svg('path', { d, class: 'hit' }))
    g.appendChild(svg('text', { x: e.x1 + 6, y: e.y1 - 3, class: 'ifname' }, c.ifname))
    g.appendChild(svg('title', {}, `${c.id}\n${c.mechanism.summary} · ${c.state}\n${c.srcAddresses.join(', ')} → ${c.dstAddresses.join(', ')}`))
    g.addEventListener('click', () => select({ kind: 'connection', id: c.id }))
    edges.appendChild(g)
  }
  canvas.appendChild(edges)
  canvas.appendChild(boxes)
  root.replaceChildren(canvas)

  const pods = new Map(t.pods.map((p) => [p.id, p]))
  byId('summary').textContent = `node ${t.self} · store ${t.store} · ${t.nodes.length} node(s), ${t.pods.length} pod(s), ${t.endpoints.length} endpoint(s), ${t.services.length} service(s), ${t.connections.length} connection(s)`
  const chains = byId('chains')
  chains.replaceChildren(...t.chains.map((chain) => el('li', { class: 'chain' }, chain.map((id) => pods.get(id)?.name ?? id).join(' → '))))
  if (t.chains.length === 0) chains.replaceChildren(el('li', { class: 'empty' }, 'no chains'))
  showDetails()
}

function table(rows: Array<[string, string]>): HTMLTableElement {
  const tbl = el('table')
  for (const [k, v] of rows) {
    const tr = el('tr')
    tr.append(el('th', {}, k), el('td', {}, v === '' ? '-' : v))
    tbl.appendChild(tr)
  }
  return tbl
}

function connectionRows(c: TopologyConnection, pods: ReadonlyMap<string, TopologyPod>): Array<[string, string]> {
  const routes = (rs: TopologyConnection['srcRoutes']): string => rs.map((r) => (r.nextHop === '' ? r.prefix : `${r.prefix} via ${r.nextHop}`)).join(', ')
  return [
    ['id', c.id],
    ['service', c.service],
    ['state', c.state],
    ['client', `${pods.get(c.clientPod)?.name ?? c.clientPod} on ${c.clientNode}`],
    ['interface', c.ifname],
    ['endpoint', `${c.endpoint}${c.endpointPod === '' ? '' : ` in ${pods.get(c.endpointPod)?.name ?? c.endpointPod}`} on ${c.endpointNode}`],
    ['mechanism', `${c.mechanism.cls} ${c.mechanism.summary}`],
    ['parameters', Object.entries(c.mechanism.parameters).map(([k, v]) => `${k}=${v}`).join(', ')],
    ['client addresses', c.srcAddresses.join(', ')],
    ['endpoint addresses', c.dstAddresses.join(', ')],
    ['client routes', routes(c.srcRoutes)],
    ['endpoint routes', routes(c.dstRoutes)],
    ['MTU', c.mtu === 0 ? '' : String(c.mtu)],
    ['half', c.half],
    ['path', c.path.map((s) => `${s.name} (expires ${s.expires || '-'})`).join(' → ')],
    ['labels', Object.entries(c.labels).map(([k, v]) => `${k}=${v}`).join(', ')],
    ['CNI attachment', c.attachment === null ? '' : `network ${c.attachment.network}, container ${c.attachment.containerId}, ${c.attachment.ifname}, ${c.attachment.netns}`],
  ]
}

function showDetails(): void {
  const panel = byId('details')
  const t = current
  if (selected === undefined || t === undefined) {
    panel.replaceChildren(el('p', { class: 'hint' }, 'Click a connection or a pod for its details.'))
    return
  }
  const pods = new Map(t.pods.map((p) => [p.id, p]))
  if (selected.kind === 'connection') {
    const c = t.connections.find((x) => x.id === selected?.id)
    panel.replaceChildren(el('h2', {}, 'connection'), c === undefined ? el('p', { class: 'gone' }, `connection ${selected.id} is gone`) : table(connectionRows(c, pods)))
    return
  }
  const p = pods.get(selected.id)
  panel.replaceChildren(
    el('h2', {}, 'pod'),
    p === undefined
      ? el('p', { class: 'gone' }, `pod ${selected.id} is gone`)
      : table([
          ['name', p.name],
          ['node', p.node],
          ['netns', p.netns],
          ['endpoints', p.endpoints.join(', ')],
          ['connections', p.connections.join(', ')],
        ]),
  )
}

function select(s: { kind: 'connection' | 'pod'; id: string }): void {
  selected = s
  document.querySelectorAll('.conn.selected').forEach((e) => e.classList.remove('selected'))
  if (s.kind === 'connection') document.querySelector(`.conn[data-id="${CSS.escape(s.id)}"]`)?.classList.add('selected')
  showDetails()
}

function connect(): void {
  const status = byId('status')
  const events = new EventSource('events')
  events.addEventListener('topology', (ev) => {
    current = JSON.parse((ev as MessageEvent<string>).data) as Topology
    render(current)
    status.textContent = `live · updated ${new Date().toLocaleTimeString()}`
    status.className = 'live'
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? '0') + 1)
  })
  events.addEventListener('error', () => {
    status.textContent = 'disconnected from the agent · retrying'
    status.className = 'down'
  })
}

connect()
