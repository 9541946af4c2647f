// The messages the plugin sends and reads, encoded by hand over wire.ts with the field numbers of
// proto/*.proto, instead of proto/gen's generated codecs: those are ~145 KiB of the bundle (JSON
// mapping, fromPartial, every message of every file) and compiling them cost ~4 ms of CPU per exec.
// The shapes are proto/gen's TypeScript types (type-only imports: no code). Readers take the fields the
// plugin uses and skip the rest; writers write the fields the plugin sets. test/unit/cni-nsm-wire.test.ts
// checks every message against proto/gen's codecs in both directions.
import type { Connection, Mechanism } from '../../proto/gen/networkservice/connection'
import type { IPContext, Route } from '../../proto/gen/networkservice/connectioncontext'
import type { NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import type { NetworkServiceEndpoint } from '../../proto/gen/registry/registry'
import type {
  Attachment,
  CheckProblem,
  CheckResponse,
  DetachRequest,
  DetachResponse,
  EndpointExtension,
  EndpointRegistration,
  GCRequest,
  GCResponse,
  PodInfo,
  PodInfoRequest,
  StatusResponse,
} from '../../proto/gen/nsmcni/nsmcni'
import { Reader, Writer } from './wire'

/** A unary method: its path and its two codecs. */
export interface Method<Req, Res> {
  readonly path: string
  encode(req: Req): Uint8Array
  decode(data: Uint8Array): Res
}

// --- writers ---------------------------------------------------------------------------------------

const mechanism = (m: Mechanism): Writer => new Writer().string(1, m.cls).string(2, m.type).stringMap(3, m.parameters)

function connection(c: Connection): Writer {
  return new Writer()
    .string(1, c.id)
    .string(2, c.networkService)
    .message(3, c.mechanism === undefined ? undefined : mechanism(c.mechanism))
    .stringMap(5, c.labels)
    .string(7, c.networkServiceEndpointName)
    .string(8, c.payload)
    .uint(9, c.state)
}

const attachment = (a: Attachment): Writer => new Writer().string(1, a.containerId).string(2, a.ifname).string(3, a.network).string(4, a.netns)
const route = (r: Route): Writer => new Writer().string(1, r.prefix).string(2, r.nextHop)

function endpoint(e: NetworkServiceEndpoint): Writer {
  const w = new Writer().string(1, e.name).strings(2, e.networkServiceNames)
  for (const [svc, l] of Object.entries(e.networkServiceLabels)) w.message(3, new Writer().string(1, svc).message(2, new Writer().stringMap(1, l.labels)))
  w.string(4, e.url)
  if (e.expirationTime !== undefined) w.message(5, new Writer().uint(1, e.expirationTime.seconds).uint(2, e.expirationTime.nanos))
  return w.strings(7, e.pathIds)
}

function extension(x: EndpointExtension): Writer {
  const w = new Writer().string(1, x.endpointName).string(2, x.netnsPath).strings(3, x.cidrPools)
  for (const r of x.routes) w.message(4, route(r))
  return w.strings(5, x.excludedPrefixes).string(6, x.nodeName)
}

// --- readers ---------------------------------------------------------------------------------------

function readMechanism(r: Reader): Mechanism {
  const m: Mechanism = { cls: '', type: '', parameters: {} }
  r.message((f, x) => {
    if (f === 1) m.cls = x.string()
    else if (f === 2) m.type = x.string()
    else if (f === 3) x.stringMapEntry(m.parameters)
  })
  return m
}

function readRoute(r: Reader): Route {
  const out: Route = { prefix: '', nextHop: '' }
  r.message((f, x) => {
    if (f === 1) out.prefix = x.string()
    else if (f === 2) out.nextHop = x.string()
  })
  return out
}

function readIpContext(r: Reader): IPContext {
  const ip: IPContext = { srcIpAddrs: [], dstIpAddrs: [], srcIpRequired: false, dstIpRequired: false, srcRoutes: [], dstRoutes: [], excludedPrefixes: [], ipNeighbors: [], extraPrefixRequest: [], extraPrefixes: [], policies: [] }
  r.message((f, x) => {
    if (f === 1) ip.srcIpAddrs.push(x.string())
    else if (f === 2) ip.dstIpAddrs.push(x.string())
    else if (f === 5) ip.srcRoutes.push(readRoute(x))
    else if (f === 6) ip.dstRoutes.push(readRoute(x))
    else if (f === 7) ip.excludedPrefixes.push(x.string())
  })
  return ip
}

const emptyConnection = (): Connection => ({ id: '', networkService: '', mechanism: undefined, context: undefined, labels: {}, path: undefined, networkServiceEndpointName: '', payload: '', state: 0 })

function readConnection(r: Reader): Connection {
  const c = emptyConnection()
  r.message(connectionFields(c))
  return c
}

function connectionFields(c: Connection): (f: number, x: Reader) => void {
  return (f, x) => {
    if (f === 1) c.id = x.string()
    else if (f === 2) c.networkService = x.string()
    else if (f === 3) c.mechanism = readMechanism(x)
    else if (f === 4) {
      const ctx: NonNullable<Connection['context']> = { ipContext: undefined, dnsContext: undefined, ethernetContext: undefined, extraContext: {}, MTU: 0 }
      x.message((g, y) => {
        if (g === 1) ctx.ipContext = readIpContext(y)
        else if (g === 2) {
          const configs: Array<{ dnsServerIps: string[]; searchDomains: string[] }> = []
          y.message((h, z) => {
            if (h !== 1) return
            const cfg = { dnsServerIps: [] as string[], searchDomains: [] as string[] }
            z.message((i, w) => {
              if (i === 1) cfg.dnsServerIps.push(w.string())
              else if (i === 2) cfg.searchDomains.push(w.string())
            })
            configs.push(cfg)
          })
          ctx.dnsContext = { configs }
        } else if (g === 3) {
          const eth = { srcMac: '', dstMac: '', vlanTag: 0 }
          y.message((h, z) => {
            if (h === 1) eth.srcMac = z.string()
            else if (h === 2) eth.dstMac = z.string()
            else if (h === 3) eth.vlanTag = z.int32()
          })
          ctx.ethernetContext = eth
        } else if (g === 4) y.stringMapEntry(ctx.extraContext)
        else if (g === 5) ctx.MTU = y.uint()
      })
      c.context = ctx
    } else if (f === 5) x.stringMapEntry(c.labels)
    else if (f === 7) c.networkServiceEndpointName = x.string()
    else if (f === 8) c.payload = x.string()
    else if (f === 9) c.state = x.int32()
  }
}

const read = <T>(data: Uint8Array, init: T, fn: (out: T, f: number, r: Reader) => void): T => {
  new Reader(data).fields((f, r) => fn(init, f, r))
  return init
}

// --- the methods ------------------------------------------------------------------------------------

const NS = '/networkservice.NetworkService'
const AGENT = '/nsmcni.Agent'
const none = (): Uint8Array => new Uint8Array(0)

export const methods = {
  request: {
    path: `${NS}/Request`,
    encode: (req: NetworkServiceRequest) => {
      const w = new Writer().message(1, req.connection === undefined ? undefined : connection(req.connection))
      for (const m of req.mechanismPreferences) w.message(2, mechanism(m))
      return w.finish()
    },
    decode: (data: Uint8Array) => {
      const c = emptyConnection()
      new Reader(data).fields(connectionFields(c))
      return c
    },
  } satisfies Method<NetworkServiceRequest, Connection>,
  close: {
    path: `${NS}/Close`,
    encode: (c: Connection) => connection(c).finish(),
    decode: () => ({}),
  } satisfies Method<Connection, Record<string, never>>,
  getPodInfo: {
    path: `${AGENT}/GetPodInfo`,
    encode: (q: PodInfoRequest) => new Writer().string(1, q.namespace).string(2, q.name).finish(),
    decode: (data: Uint8Array) =>
      read<PodInfo>(data, { namespace: '', name: '', uid: '', labels: {}, annotations: {}, nodeName: '' }, (p, f, r) => {
        if (f === 1) p.namespace = r.string()
        else if (f === 2) p.name = r.string()
        else if (f === 3) p.uid = r.string()
        else if (f === 4) r.stringMapEntry(p.labels)
        else if (f === 5) r.stringMapEntry(p.annotations)
        else if (f === 6) p.nodeName = r.string()
      }),
  } satisfies Method<PodInfoRequest, PodInfo>,
  check: {
    path: `${AGENT}/Check`,
    encode: (q: { attachment: Attachment }) => new Writer().message(1, attachment(q.attachment)).finish(),
    decode: (data: Uint8Array) =>
      read<CheckResponse>(data, { ok: false, problems: [], connections: [] }, (c, f, r) => {
        if (f === 1) c.ok = r.bool()
        else if (f === 2) {
          const p: CheckProblem = { code: '', message: '', connectionId: '' }
          r.message((g, x) => {
            if (g === 1) p.code = x.string()
            else if (g === 2) p.message = x.string()
            else if (g === 3) p.connectionId = x.string()
          })
          c.problems.push(p)
        } else if (f === 3) c.connections.push(readConnection(r))
      }),
  } satisfies Method<{ attachment: Attachment }, CheckResponse>,
  detach: {
    path: `${AGENT}/Detach`,
    encode: (q: DetachRequest) =>
      new Writer()
        .message(1, q.attachment === undefined ? undefined : attachment(q.attachment))
        .strings(2, q.connectionIds)
        .finish(),
    decode: (data: Uint8Array) =>
      read<DetachResponse>(data, { closedConnectionIds: [], unregisteredEndpoints: [] }, (d, f, r) => {
        if (f === 1) d.closedConnectionIds.push(r.string())
        else if (f === 2) d.unregisteredEndpoints.push(r.string())
      }),
  } satisfies Method<DetachRequest, DetachResponse>,
  gc: {
    path: `${AGENT}/GC`,
    encode: (q: GCRequest) => {
      const w = new Writer().string(1, q.network)
      for (const a of q.validAttachments) w.message(2, attachment(a))
      return w.finish()
    },
    decode: (data: Uint8Array) =>
      read<GCResponse>(data, { closedConnectionIds: [] }, (g, f, r) => {
        if (f === 1) g.closedConnectionIds.push(r.string())
      }),
  } satisfies Method<GCRequest, GCResponse>,
  status: {
    path: `${AGENT}/Status`,
    encode: none,
    decode: (data: Uint8Array) =>
      read<Pick<StatusResponse, 'ready' | 'reason'>>(data, { ready: false, reason: '' }, (s, f, r) => {
        if (f === 1) s.ready = r.bool()
        else if (f === 2) s.reason = r.string()
      }),
  } satisfies Method<Record<string, never>, Pick<StatusResponse, 'ready' | 'reason'>>,
  registerEndpoint: {
    path: `${AGENT}/RegisterEndpoint`,
    encode: (q: EndpointRegistration) =>
      new Writer()
        .message(1, q.endpoint === undefined ? undefined : endpoint(q.endpoint))
        .message(2, q.extension === undefined ? undefined : extension(q.extension))
        .finish(),
    decode: () => ({}),
  } satisfies Method<EndpointRegistration, Record<string, never>>,
  unregisterEndpoint: {
    path: `${AGENT}/UnregisterEndpoint`,
    encode: (q: { endpointName: string }) => new Writer().string(1, q.endpointName).finish(),
    decode: () => ({}),
  } satisfies Method<{ endpointName: string }, Record<string, never>>,
  /** ListEndpoints, reduced to the endpoint names. */
  listEndpointNames: {
    path: `${AGENT}/ListEndpoints`,
    encode: (q: { endpointName: string }) => new Writer().string(1, q.endpointName).finish(),
    decode: (data: Uint8Array) =>
      read<string[]>(data, [], (names, f, r) => {
        if (f !== 1) return
        r.message((g, x) => {
          if (g !== 1) return
          x.message((h, y) => {
            if (h === 1) names.push(y.string())
          })
        })
      }),
  } satisfies Method<{ endpointName: string }, string[]>,
}
