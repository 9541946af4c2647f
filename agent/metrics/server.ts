// GET /metrics on --metrics-address (Prometheus' text format); every other path is 404. Plain HTTP, read
// only: nothing in the metrics is secret (names of services and elements, counts, durations).
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'

export interface MetricsServer {
  /** host:port actually bound (port 0 takes a free one). */
  readonly address: string
  close(): Promise<void>
}

/** `beforeScrape` runs before each read of the registry (the pipeline metrics' queued frames recorded). */
export async function serveMetrics(registry: Registry, listen: string, onError: (err: unknown) => void, beforeScrape: () => void = () => undefined): Promise<MetricsServer> {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(listen)
  const host = m?.[1] ?? '127.0.0.1'
  const port = Number(m?.[2] ?? 0)
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n')
      return
    }
    try {
      beforeScrape()
    } catch (err) {
      onError(err)
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => {
        onError(err)
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n')
      },
    )
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const a = server.address() as AddressInfo
  return {
    address: a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
