// The live topology page (`--web-address HOST:PORT`, off unless given): plain HTTP, read-only, served by the
// agent itself. GET / is the page, /app.js its script (agent/topology/page/app.ts, bundled into the agent
// by build.mjs: nothing comes from elsewhere), /app.css, /topology.json the graph (model.ts) now, and
// /events a server-sent event stream: the graph at once, then again after every change of the connection
// table or the registry (coalesced over 100 ms) and whenever the node records change (looked at every 2 s).
//
// Nothing secret is served (model.ts drops path tokens) and nothing can be changed: other methods are 405.
// Requests whose Host is not an IP address, `localhost` or the configured host are refused (421), so a web
// page elsewhere cannot read the topology through DNS rebinding. The address must be loopback unless the
// operator says otherwise (agent/config/load.ts: --web-public).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { isIP, type AddressInfo } from 'node:net'
import type { Logger } from '../server/log.js'
import { buildTopology, type MeshSnapshot } from './model.js'

/** Set by build.mjs to the bundled browser script; undefined when running from source. */
declare const __NSM_TOPOLOGY_PAGE_JS__: string | undefined

export interface TopologySource {
  snapshot(): MeshSnapshot
  /** Calls `onChange` after each change of the connection table or the registry; returns the unsubscribe. */
  subscribe(onChange: () => void): () => void
}

export interface TopologyPage {
  /** HOST:PORT actually bound (port 0 resolved). */
  address: string
  url: string
  close(): Promise<void>
}

const COALESCE_MS = 100
const POLL_MS = 2000
const HEARTBEAT_MS = 15_000

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nsm-cni topology</title>
<link rel="stylesheet" href="app.css">
</head>
<body>
<header><h1>Network Service Mesh topology</h1><span id="summary"></span><span id="status">connecting…</span></header>
<main>
<section id="graph" aria-label="topology graph"></section>
<aside>
<div id="details"></div>
<h2>chains</h2>
<ul id="chains"></ul>
<p class="legend"><span class="key up">UP</span> <span class="key down">DOWN</span> <span class="key vxlan">VXLAN (dashed)</span></p>
</aside>
</main>
<script src="app.js"></script>
</body>
</html>
`

const CSS = `
body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #1d232b; background: #f6f7f9; }
header { display: flex; gap: 18px; align-items: baseline; padding: 8px 16px; background: #22303f; color: #fff; }
header h1 { font-size: 16px; margin: 0; }
#status.live { color: #8fe3a4; } #status.down { color: #ff9b8f; }
main { display: flex; height: calc(100vh - 40px); }
#graph { flex: 1; overflow: auto; }
aside { width: 380px; overflow: auto; padding: 8px 14px; border-left: 1px solid #d5d9df; background: #fff; }
aside h2 { font-size: 14px; margin: 10px 0 4px; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; vertical-align: top; padding: 2px 4px; border-bottom: 1px solid #eef0f3; word-break: break-all; }
th { width: 120px; color: #56606b; font-weight: 500; word-break: normal; }
.hint, .gone, .empty { color: #56606b; }
.band { fill: #eef1f5; stroke: #d5d9df; } .band.self { fill: #e9f1fb; } .band-label { font-size: 12px; fill: #56606b; font-weight: 600; }
.box rect { fill: #fff; stroke: #8a96a3; } .box.endpoint rect { stroke-dasharray: 4 3; } .box.pod { cursor: pointer; }
.box .title { font-weight: 600; font-size: 12px; } .box .subtitle { font-size: 10px; fill: #56606b; } .box .endpoint { font-size: 11px; fill: #3b5b85; }
.conn { cursor: pointer; } .conn .line { fill: none; stroke: #3c9a5f; stroke-width: 1.6; } .conn .hit { fill: none; stroke: transparent; stroke-width: 10; }
.conn.state-DOWN .line { stroke: #d2493b; } .conn:not(.state-UP):not(.state-DOWN) .line { stroke: #8a96a3; }
.conn.mech-VXLAN .line { stroke-dasharray: 7 4; } .conn.selected .line { stroke-width: 3.5; } .conn:hover .line { stroke-width: 3; }
.conn .ifname { font-size: 10px; fill: #56606b; } .arrowhead { fill: #56606b; }
.legend .key { padding: 0 6px; border-radius: 3px; } .key.up { background: #d8f0df; } .key.down { background: #f7d9d5; } .key.vxlan { background: #eef1f5; }
li.chain { font-family: ui-monospace, monospace; font-size: 12px; }
`

/** The browser script: bundled by build.mjs; from source, bundled now with esbuild (a dev dependency). */
async function pageScript(): Promise<string> {
  if (typeof __NSM_TOPOLOGY_PAGE_JS__ === 'string') return __NSM_TOPOLOGY_PAGE_JS__
  // From source (tsx agent/main.ts): the entry's folder is agent/.
  const entry = `${(process.argv[1] ?? '').replace(/[^/]*$/, '')}topology/page/app.ts`
  const esbuild = 'esbuild'
  const { build } = (await import(esbuild)) as { build(o: object): Promise<{ outputFiles: Array<{ text: string }> }> }
  const out = await build({ entryPoints: [entry], bundle: true, write: false, platform: 'browser', format: 'iife', target: 'es2022', minify: true })
  return out.outputFiles[0]?.text ?? ''
}

/** The host part of a Host header (`[::1]:8080` → `::1`). */
function hostOf(header: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(header)
  if (m?.[1] !== undefined) return m[1]
  return header.replace(/:\d+$/, '')
}

export async function startTopologyPage(opts: { address: string; source: TopologySource; log: Logger }): Promise<TopologyPage> {
  const script = await pageScript()
  const sep = opts.address.lastIndexOf(':')
  const host = opts.address.slice(0, sep).replace(/^\[|\]$/g, '')
  const port = Number(opts.address.slice(sep + 1))

  /** Each event stream, with the graph it was sent last. */
  const streams = new Map<ServerResponse, string>()
  const graph = (): string => JSON.stringify(buildTopology(opts.source.snapshot()))
  const push = (): void => {
    if (streams.size === 0) return
    const json = graph()
    for (const [res, last] of streams) {
      if (last === json) continue
      streams.set(res, json)
      res.write(`event: topology\ndata: ${json}\n\n`)
    }
  }
  let timer: NodeJS.Timeout | undefined
  const changed = (): void => {
    timer ??= setTimeout(() => {
      timer = undefined
      try {
        push()
      } catch (err) {
        opts.log.warn('topology page: building the graph failed', { err })
      }
    }, COALESCE_MS)
  }
  const unsubscribe = opts.source.subscribe(changed)
  const poll = setInterval(changed, POLL_MS)
  poll.unref()
  const heartbeat = setInterval(() => {
    for (const res of streams.keys()) res.write(': keep-alive\n\n')
  }, HEARTBEAT_MS)
  heartbeat.unref()

  const send = (res: ServerResponse, status: number, type: string, body: string): void => {
    res.writeHead(status, {
      'Content-Type': type,
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
      'X-Frame-Options': 'DENY',
      'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'",
    })
    res.end(body)
  }
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const requested = hostOf(req.headers.host ?? '')
    if (requested !== 'localhost' && requested !== host && isIP(requested) === 0) return send(res, 421, 'text/plain', 'misdirected request: unknown Host\n')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD')
      return send(res, 405, 'text/plain', 'read-only\n')
    }
    const path = (req.url ?? '/').split('?')[0]
    switch (path) {
      case '/':
      case '/index.html':
        return send(res, 200, 'text/html; charset=utf-8', HTML)
      case '/app.js':
        return send(res, 200, 'text/javascript; charset=utf-8', script)
      case '/app.css':
        return send(res, 200, 'text/css; charset=utf-8', CSS)
      case '/favicon.ico':
        res.writeHead(204, { 'Cache-Control': 'max-age=86400' })
        res.end()
        return
      case '/topology.json':
        return send(res, 200, 'application/json', `${JSON.stringify(buildTopology(opts.source.snapshot()), null, 2)}\n`)
      case '/events': {
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' })
        const json = graph()
        res.write(`retry: 500\nevent: topology\ndata: ${json}\n\n`)
        streams.set(res, json)
        req.on('close', () => streams.delete(res))
        return
      }
      default:
        return send(res, 404, 'text/plain', 'not found\n')
    }
  }
  const server = createServer((req, res) => {
    try {
      handle(req, res)
    } catch (err) {
      opts.log.warn('topology page: request failed', { err, url: req.url })
      if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n')
      else res.end()
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.removeListener('error', reject)
      resolve()
    })
  })
  const bound = server.address() as AddressInfo
  const address = bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`
  return {
    address,
    url: `http://${address}/`,
    close: async () => {
      unsubscribe()
      clearInterval(poll)
      clearInterval(heartbeat)
      if (timer !== undefined) clearTimeout(timer)
      for (const res of streams.keys()) res.end()
      streams.clear()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
    },
  }
}
