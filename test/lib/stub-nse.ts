// A stub network service endpoint as NSM's NSEs behave, built from the NSM protos (proto/gen): it serves
// /networkservice.NetworkService/{Request,Close} on a unix socket and does its own IPAM, as NSM's
// point-to-point IPAM does in an NSE. For tests of the agent forwarding Requests to an endpoint registered
// with a `unix:///path` url.
//
// Per Request (a connection id it has not seen): a /32 pair from its pool, the lowest two free addresses not
// in the request's excluded_prefixes — dst = its own address, src = the client's — put into
// connection.context.ip_context with the routes NSM's IPAM adds (src_routes: dst/32 and each --route prefix
// via dst; dst_routes: src/32). A re-Request of the same id keeps the pair; Close frees it (an unknown id
// is fine). The answer's mechanism is the first KERNEL one offered, its `inodeURL` replaced by
// file:///proc/<its pid>/ns/net: its own netns (run it with `ip netns exec <pod netns>`). State UP, and a
// path segment of its own (name --name, an id kept per connection, a fresh token, expires = now + 10 min)
// after the caller's segment at path.index. The connection id is answered as received.
//
// As a script:
//   npx tsx test/lib/stub-nse.ts --socket /path/x.sock --name nse-1 --pool 10.70.0.0/24 [--route 10.71.0.0/16 ...]
// prints one JSON line {"ready":true,"socket":...,"pid":...} on stdout once listening and exits 0 on SIGTERM
// (or SIGINT), removing its socket. Imported: startStubNse(opts) in this process, or runStubNse(t, netns,
// args) to run the script inside a test netns.
import { spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { lstatSync, unlinkSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Server, ServerCredentials, status, type Metadata, type sendUnaryData, type ServerUnaryCall, type ServiceError } from '@grpc/grpc-js'
import { NetworkServiceDefinition, type NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice.js'
import { State, type Connection, type Mechanism, type Path } from '../../proto/gen/networkservice/connection.js'
import type { IPContext, Route } from '../../proto/gen/networkservice/connectioncontext.js'
import type { Empty } from '../../proto/gen/google/protobuf/empty.js'
import { toGrpcService } from '../../agent/server/grpc-adapter.js'

export interface StubNseOptions {
  socket: string
  name: string
  /** IPv4 CIDR the pairs come from, e.g. 10.70.0.0/24. */
  pool: string
  /** Prefixes offered to clients (src_routes via the endpoint's address). */
  routes?: readonly string[]
  /** The netns path answered in inodeURL (default /proc/<this pid>/ns/net). */
  netnsPath?: string
  /** Lifetime of its path segment (default 10 min). */
  segmentLifetimeMs?: number
}

export interface StubNse {
  readonly socket: string
  /** Every Request received, in order (as decoded). */
  readonly requests: NetworkServiceRequest[]
  /** Every Close received, in order. */
  readonly closes: Connection[]
  /** The gRPC metadata of every Request and Close received, in order (text entries; `traceparent` when traced). */
  readonly metadata: Array<{ method: 'request' | 'close'; id: string; entries: Record<string, string> }>
  /** Pairs held now: connection id → { src, dst } (addresses without prefix length). */
  allocations(): Map<string, { src: string; dst: string }>
  close(): Promise<void>
}

// ---- IPv4, as much as a /32 pair allocator needs ----

interface Cidr {
  base: number
  bits: number
}

function parseIpv4(text: string): number | undefined {
  const parts = text.split('.')
  if (parts.length !== 4) return undefined
  let n = 0
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return undefined
    n = n * 256 + Number(p)
  }
  return n
}

const formatIpv4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')

function parseCidr(text: string, field: string): Cidr {
  const [addr = '', len = '', ...rest] = text.split('/')
  const base = parseIpv4(addr)
  const bits = /^[0-9]{1,2}$/.test(len) ? Number(len) : NaN
  if (rest.length > 0 || base === undefined || !(bits >= 0 && bits <= 32)) throw new Error(`${field}: ${JSON.stringify(text)} is not an IPv4 CIDR`)
  const size = 2 ** (32 - bits)
  if (base % size !== 0) throw new Error(`${field}: ${JSON.stringify(text)} has host bits set`)
  return { base, bits }
}

const inCidr = (n: number, c: Cidr): boolean => Math.floor(n / 2 ** (32 - c.bits)) === Math.floor(c.base / 2 ** (32 - c.bits))

// ---- the service ----

const SEGMENT_LIFETIME_MS = 10 * 60_000

class StubError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message)
  }
}

export async function startStubNse(opts: StubNseOptions): Promise<StubNse> {
  const pool = parseCidr(opts.pool, '--pool')
  const routes = (opts.routes ?? []).map((r, i) => {
    parseCidr(r, `--route[${i}]`)
    return r
  })
  if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(opts.name)) throw new Error(`--name: ${JSON.stringify(opts.name)} is not an endpoint name (lower-case letters, digits, . and -)`)
  const netnsPath = opts.netnsPath ?? `/proc/${process.pid}/ns/net`
  const lifetimeMs = opts.segmentLifetimeMs ?? SEGMENT_LIFETIME_MS
  const size = 2 ** (32 - pool.bits)

  const held = new Map<string, { src: number; dst: number; segmentId: string }>()
  const requests: NetworkServiceRequest[] = []
  const closes: Connection[] = []
  const metadata: StubNse['metadata'] = []
  const record = (method: 'request' | 'close', id: string, md: Metadata): void => {
    const entries: Record<string, string> = {}
    for (const [k, v] of Object.entries(md.getMap())) if (typeof v === 'string') entries[k] = v
    metadata.push({ method, id, entries })
  }

  const allocate = (excluded: readonly string[]): { src: number; dst: number } => {
    const excl = excluded.flatMap((e) => {
      try {
        return [parseCidr(e, 'excluded_prefixes')]
      } catch {
        return [] // not IPv4 (or not a prefix): excludes nothing from an IPv4 pool
      }
    })
    const used = new Set<number>()
    for (const p of held.values()) used.add(p.src).add(p.dst)
    const free: number[] = []
    for (let i = 0; i < size && free.length < 2; i++) {
      const n = pool.base + i
      if (!used.has(n) && !excl.some((c) => inCidr(n, c))) free.push(n)
    }
    const [dst, src] = free
    if (dst === undefined || src === undefined) throw new StubError(status.RESOURCE_EXHAUSTED, `pool ${opts.pool} of endpoint ${opts.name} has no free pair of addresses`)
    return { src, dst }
  }

  const kernelOf = (req: NetworkServiceRequest): Mechanism => {
    const offered = req.mechanismPreferences.find((m) => m.type === 'KERNEL')
    if (offered !== undefined) return offered
    if (req.connection?.mechanism?.type === 'KERNEL') return req.connection.mechanism
    throw new StubError(status.INVALID_ARGUMENT, `mechanism_preferences: endpoint ${opts.name} serves KERNEL only; offered ${req.mechanismPreferences.map((m) => m.type).join(', ') || 'none'}`)
  }

  /** The caller's path with our segment after the caller's (or in place, on a refresh). */
  const withSegment = (path: Path | undefined, segmentId: string): Path => {
    const segs = path?.pathSegments ?? []
    let index = 0
    if (path !== undefined && segs.length > 0) {
      const at = Math.min(Math.max(path.index, 0), segs.length - 1)
      index = segs[at]?.name === opts.name ? at : at + 1
    }
    const now = Date.now() + lifetimeMs
    const own = { name: opts.name, id: segmentId, token: randomBytes(16).toString('hex'), expires: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 }, metrics: {} }
    return { index, pathSegments: [...segs.slice(0, index), own] }
  }

  const request = (req: NetworkServiceRequest): Connection => {
    const c = req.connection
    if (c === undefined) throw new StubError(status.INVALID_ARGUMENT, 'connection: is required')
    if (c.id === '') throw new StubError(status.INVALID_ARGUMENT, 'connection.id: is required')
    const mechanism = kernelOf(req)
    let pair = held.get(c.id)
    if (pair === undefined) {
      const segmentId = c.path?.pathSegments.find((s) => s.name === opts.name)?.id || randomUUID()
      pair = { ...allocate(c.context?.ipContext?.excludedPrefixes ?? []), segmentId }
      held.set(c.id, pair)
    }
    const src = formatIpv4(pair.src)
    const dst = formatIpv4(pair.dst)
    const requested = c.context?.ipContext
    const ipContext: IPContext = {
      srcIpRequired: false,
      dstIpRequired: false,
      excludedPrefixes: [],
      ipNeighbors: [],
      extraPrefixRequest: [],
      extraPrefixes: [],
      policies: [],
      ...requested,
      srcIpAddrs: [`${src}/32`],
      dstIpAddrs: [`${dst}/32`],
      srcRoutes: [{ prefix: `${dst}/32`, nextHop: '' }, ...routes.map((prefix): Route => ({ prefix, nextHop: dst }))],
      dstRoutes: [{ prefix: `${src}/32`, nextHop: '' }],
    }
    return {
      ...c,
      mechanism: { cls: mechanism.cls, type: 'KERNEL', parameters: { ...mechanism.parameters, inodeURL: `file://${netnsPath}` } },
      context: { dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: 0, ...c.context, ipContext },
      path: withSegment(c.path, pair.segmentId),
      networkServiceEndpointName: opts.name,
      state: State.UP,
    }
  }

  const fail = (err: unknown): Partial<ServiceError> =>
    err instanceof StubError ? { code: err.code, details: err.message } : { code: status.INTERNAL, details: err instanceof Error ? err.message : String(err) }

  const server = new Server()
  server.addService(toGrpcService(NetworkServiceDefinition), {
    request(call: ServerUnaryCall<NetworkServiceRequest, Connection>, cb: sendUnaryData<Connection>) {
      requests.push(call.request)
      record('request', call.request.connection?.id ?? '', call.metadata)
      try {
        cb(null, request(call.request))
      } catch (err) {
        cb(fail(err))
      }
    },
    close(call: ServerUnaryCall<Connection, Empty>, cb: sendUnaryData<Empty>) {
      closes.push(call.request)
      record('close', call.request.id, call.metadata)
      held.delete(call.request.id)
      cb(null, {})
    },
  })
  removeStaleSocket(opts.socket)
  await new Promise<void>((res, rej) => server.bindAsync(`unix:${opts.socket}`, ServerCredentials.createInsecure(), (err) => (err === null ? res() : rej(err))))
  let closed: Promise<void> | undefined
  return {
    socket: opts.socket,
    requests,
    closes,
    metadata,
    allocations: () => new Map([...held].map(([id, p]) => [id, { src: formatIpv4(p.src), dst: formatIpv4(p.dst) }])),
    close: () =>
      (closed ??= new Promise<void>((res) => {
        server.tryShutdown(() => {
          removeStaleSocket(opts.socket)
          res()
        })
      })),
  }
}

/** A socket file left by an earlier run is removed; anything else at that path is left and bind fails. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path)
  } catch {
    // nothing there
  }
}

// ---- the script, run by a test ----

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface StubNseExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface RunningStubNse {
  pid: number
  /** Its ready line. */
  ready: { ready: boolean; socket: string; pid: number }
  /** Sends `signal` (default SIGKILL) unless it has exited; resolves with its exit. Also at teardown. */
  kill(signal?: NodeJS.Signals): Promise<StubNseExit>
  exited: Promise<StubNseExit>
}

const ROOT = resolve(import.meta.dirname, '../..')

/**
 * The stub as a script in the netns named `netns` (one process: node with tsx's loader, exec'd by
 * `ip netns exec`), with the script's arguments; resolves once it has printed its ready line.
 */
export async function runStubNse(t: Teardown, netns: string, args: readonly string[]): Promise<RunningStubNse> {
  const script = join(ROOT, 'test/lib/stub-nse.ts')
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '--import', 'tsx', script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<StubNseExit>((res) => child.once('exit', (code, signal) => res({ code, signal })))
  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<StubNseExit> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  t.teardown(async () => {
    await kill()
  })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const ready = await new Promise<RunningStubNse['ready']>((res, rej) => {
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const nl = out.indexOf('\n')
      if (nl >= 0) res(JSON.parse(out.slice(0, nl)) as RunningStubNse['ready'])
    })
    void exited.then((e) => rej(new Error(`stub-nse exited before ready (${e.code ?? e.signal}): ${stderr}`)))
  })
  return { pid: child.pid ?? -1, ready, kill, exited }
}

// ---- as a script ----

function parseArgs(argv: readonly string[]): StubNseOptions {
  const one: Record<string, string> = {}
  const routes: string[] = []
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i] ?? ''
    const value = argv[i + 1]
    if (!['--socket', '--name', '--pool', '--route'].includes(flag)) throw new Error(`unknown argument ${JSON.stringify(flag)}; usage: --socket PATH --name NAME --pool CIDR [--route CIDR ...]`)
    if (value === undefined) throw new Error(`${flag}: needs a value`)
    if (flag === '--route') routes.push(value)
    else one[flag] = value
  }
  for (const f of ['--socket', '--name', '--pool']) if (one[f] === undefined) throw new Error(`${f}: is required`)
  return { socket: one['--socket'] as string, name: one['--name'] as string, pool: one['--pool'] as string, routes }
}

async function main(): Promise<void> {
  let opts: StubNseOptions
  try {
    opts = parseArgs(process.argv.slice(2))
  } catch (err) {
    process.stderr.write(`stub-nse: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(2)
  }
  const nse = await startStubNse(opts)
  const stop = (): void => {
    void nse.close().then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  process.stdout.write(`${JSON.stringify({ ready: true, socket: nse.socket, pid: process.pid })}\n`)
}

const invoked = process.argv[1]
if (invoked !== undefined && import.meta.url === pathToFileURL(resolve(invoked)).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`stub-nse: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  })
}
