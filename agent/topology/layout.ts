// Where the topology page draws things (pure, no DOM: the browser script calls it, tests call it too).
//
// A horizontal band per node; in it, columns by how far along a chain a pod sits (plain clients left, the
// pods they reach to the right: client │ firewall │ vpn-gateway). Pods in a column are ordered by where
// their clients are (the mean height of the pods connecting to them), so edges run mostly straight and a
// hundred clients fanning into one endpoint stay readable. A pod is a box with a row per endpoint it hosts;
// a connection is an edge from its client pod's right side to its endpoint's row. Endpoints without a pod
// here (serving the NSM API at a URL, on another node, or no longer registered) get a box of their own.
import type { Topology } from './model.js'

export const POD_WIDTH = 230
const HEADER = 34
const ROW = 18
const COLUMN_GAP = 190
const POD_GAP = 14
const BAND_PAD = 30
const MARGIN = 20

export interface LaidOutBox {
  /** A pod id, or `endpoint:<name>` for an endpoint drawn on its own. */
  id: string
  kind: 'pod' | 'endpoint'
  title: string
  subtitle: string
  node: string
  x: number
  y: number
  width: number
  height: number
  rows: Array<{ endpoint: string; y: number }>
}

export interface LaidOutEdge {
  id: string
  from: string
  to: string
  x1: number
  y1: number
  x2: number
  y2: number
}

export interface Layout {
  width: number
  height: number
  bands: Array<{ node: string; self: boolean; y: number; height: number }>
  boxes: LaidOutBox[]
  edges: LaidOutEdge[]
}

interface Box {
  id: string
  kind: 'pod' | 'endpoint'
  title: string
  subtitle: string
  node: string
  endpoints: string[]
}

export function layoutTopology(t: Topology): Layout {
  const boxes = new Map<string, Box>()
  for (const p of t.pods) {
    boxes.set(p.id, { id: p.id, kind: 'pod', title: p.name, subtitle: p.netns === '' ? p.node : `${p.node} · ${p.netns}`, node: p.node, endpoints: [...p.endpoints] })
  }
  const endpointBox = new Map<string, string>()
  for (const e of t.endpoints) {
    if (e.pod !== '' && boxes.has(e.pod)) endpointBox.set(e.name, e.pod)
    else {
      const id = `endpoint:${e.name}`
      boxes.set(id, { id, kind: 'endpoint', title: e.name, subtitle: e.url, node: e.node, endpoints: [e.name] })
      endpointBox.set(e.name, id)
    }
  }
  for (const c of t.connections) {
    if (endpointBox.has(c.endpoint)) continue
    const id = `endpoint:${c.endpoint}`
    boxes.set(id, { id, kind: 'endpoint', title: c.endpoint || '(no endpoint)', subtitle: `not registered here · ${c.endpointNode}`, node: c.endpointNode, endpoints: [c.endpoint] })
    endpointBox.set(c.endpoint, id)
  }
  const target = (endpoint: string): string => endpointBox.get(endpoint) ?? ''

  // Columns: the longest chain of connections leading to a box (cycles bounded by the box count).
  const depth = new Map<string, number>([...boxes.keys()].map((id) => [id, 0]))
  for (let round = 0; round < boxes.size; round++) {
    let changed = false
    for (const c of t.connections) {
      const from = depth.get(c.clientPod) ?? 0
      const to = target(c.endpoint)
      if (to === c.clientPod || (depth.get(to) ?? 0) >= from + 1) continue
      depth.set(to, from + 1)
      changed = true
    }
    if (!changed) break
  }
  const clientsOf = new Map<string, string[]>()
  for (const c of t.connections) {
    const to = target(c.endpoint)
    const list = clientsOf.get(to) ?? []
    list.push(c.clientPod)
    clientsOf.set(to, list)
  }

  const heightOf = (b: Box): number => HEADER + ROW * b.endpoints.length + 6
  const placed = new Map<string, LaidOutBox>()
  const bands: Layout['bands'] = []
  const nodes = [...new Set([...t.nodes.map((n) => n.name), ...[...boxes.values()].map((b) => b.node)])]
  let y = MARGIN
  let maxColumn = 0
  for (const node of nodes) {
    const mine = [...boxes.values()].filter((b) => b.node === node)
    const columns = new Map<number, Box[]>()
    for (const b of mine) {
      const d = depth.get(b.id) ?? 0
      maxColumn = Math.max(maxColumn, d)
      columns.set(d, [...(columns.get(d) ?? []), b])
    }
    const top = y + BAND_PAD
    let bottom = top
    for (const d of [...columns.keys()].sort((a, b) => a - b)) {
      const column = columns.get(d) ?? []
      // Mean height of the clients already placed; boxes nobody connects to keep their name order after them.
      const rank = (b: Box): number => {
        const ys = (clientsOf.get(b.id) ?? []).map((id) => placed.get(id)).filter((p) => p !== undefined).map((p) => p.y)
        return ys.length === 0 ? Number.POSITIVE_INFINITY : ys.reduce((a, v) => a + v, 0) / ys.length
      }
      column.sort((a, b) => rank(a) - rank(b) || (a.title < b.title ? -1 : a.title > b.title ? 1 : 0))
      let cy = top
      for (const b of column) {
        const h = heightOf(b)
        placed.set(b.id, {
          id: b.id,
          kind: b.kind,
          title: b.title,
          subtitle: b.subtitle,
          node: b.node,
          x: MARGIN + d * (POD_WIDTH + COLUMN_GAP),
          y: cy,
          width: POD_WIDTH,
          height: h,
          rows: b.endpoints.map((endpoint, i) => ({ endpoint, y: cy + HEADER + ROW * i + ROW / 2 })),
        })
        cy += h + POD_GAP
      }
      bottom = Math.max(bottom, cy)
    }
    const height = Math.max(bottom - y, BAND_PAD * 2) + BAND_PAD / 2
    bands.push({ node, self: t.nodes.some((n) => n.name === node && n.self), y, height })
    y += height + POD_GAP
  }

  // Edges leave a box's right side spread over its height, in connection order.
  const outgoing = new Map<string, number>()
  const count = new Map<string, number>()
  for (const c of t.connections) count.set(c.clientPod, (count.get(c.clientPod) ?? 0) + 1)
  const edges: LaidOutEdge[] = []
  for (const c of t.connections) {
    const from = placed.get(c.clientPod)
    const toBox = placed.get(target(c.endpoint))
    if (from === undefined || toBox === undefined) continue
    const i = outgoing.get(c.clientPod) ?? 0
    outgoing.set(c.clientPod, i + 1)
    const n = count.get(c.clientPod) ?? 1
    const row = toBox.rows.find((r) => r.endpoint === c.endpoint)
    edges.push({
      id: c.id,
      from: from.id,
      to: toBox.id,
      x1: from.x + from.width,
      y1: from.y + (from.height * (i + 1)) / (n + 1),
      x2: toBox.x,
      y2: row?.y ?? toBox.y + toBox.height / 2,
    })
  }
  return { width: MARGIN * 2 + (maxColumn + 1) * POD_WIDTH + maxColumn * COLUMN_GAP, height: y + MARGIN, bands, boxes: [...placed.values()], edges }
}
