// nsmctl's commands: each turns parsed arguments into agent calls (agent/client) and prints a table or
// JSON. Input is checked here first where a flag can be named (CIDRs, routes, labels, durations); the
// agent validates again and its INVALID_ARGUMENT names the message field.
import { parseCidr, parseIp } from '../../ipam/address.js'
import { parseNetworkServiceYaml, type NetworkService as ConfNetworkService } from '../../conf/networkservice.js'
import { ConfError } from '../../conf/errors.js'
import { Connection, ConnectionEventType, MonitorConnectionDefinition, State } from '../../proto/gen/networkservice/connection.js'
import { NetworkService, NetworkServiceEndpoint, NetworkServiceEndpointRegistryDefinition as NSE_REG, NetworkServiceRegistryDefinition as NS_REG } from '../../proto/gen/registry/registry.js'
import { AgentDefinition, EndpointExtension, EndpointRegistration, NodeList, ServiceRegistration, StatusResponse, type ServicePolicy } from '../../proto/gen/nsmcni/nsmcni.js'
import { AgentClient } from '../client/client.js'
import { parseDuration } from '../config/value-checks.js'
import { timestampOf } from '../registry/records.js'
import type { Explanation } from '../select/index.js'
import { all, labelPairs, one, parseArgs, UsageError, type FlagSpec, type Parsed } from './args.js'
import { exportStore, importStore, STORE_FLAGS } from './store.js'
import { connectionsTable, endpointsTable, explanationText, nodesTable, servicesTable, table } from './format.js'
import { topology } from './topology.js'

export interface Io {
  out(s: string): void
  err(s: string): void
  readFile(path: string): string
  env: Readonly<Record<string, string | undefined>>
  now(): number
}

export const USAGE = `usage: nsmctl [--socket PATH] [-o table|json|dot] COMMAND ...

commands:
  register NAME --service SVC[?k=v&k2=v2]... [--labels k=v,...] [--netns PATH | --url URL]
                [--cidr CIDR]... [--route PREFIX[@NEXTHOP]]... [--exclude CIDR]... [--node NODE] [--ttl DURATION]
                    register (or refresh) an endpoint; --labels apply to every --service without its own
  unregister NAME   remove an endpoint
  apply -f FILE     register the NetworkService(s) in a YAML file (- for stdin; v1alpha1 or v1 form)
  delete service NAME
  get services|endpoints|connections|nodes [-w]   (also: list ...; -w/--watch streams changes until interrupted)
  explain SERVICE [--labels k=v,...]   which match applies, which endpoints qualify, which is chosen
  status            the agent's readiness
  topology          the mesh as the agent sees it: nodes, pods, endpoints, services, connections
                    (mechanism, state, addresses) and chains; -o json the graph, -o dot Graphviz
  store export|import --store file --state-dir DIR | --store etcd --etcd-endpoints URL[,...] [--etcd-prefix P]
                [--etcd-ca F --etcd-cert F --etcd-key F] | --store kubernetes [--kubeconfig F] [--store-namespace NS]
                    move services, endpoints and claims between stores as JSON (import: -f FILE); no agent needed

--socket defaults to $NSM_AGENT_SOCKET or /run/nsm/agent.sock.
exit codes: 0 ok, 1 refused by the agent, 2 bad usage or input, 3 agent unreachable`

const SPEC: FlagSpec = {
  '--socket': 'value',
  '--output': 'value',
  '--help': 'bool',
  '--service': 'value',
  '--labels': 'value',
  '--netns': 'value',
  '--url': 'value',
  '--cidr': 'value',
  '--route': 'value',
  '--exclude': 'value',
  '--node': 'value',
  '--ttl': 'value',
  '--filename': 'value',
  '--watch': 'bool',
  ...Object.fromEntries(STORE_FLAGS.map((f) => [f, 'value'])),
}
const GLOBAL = ['--socket', '--output', '--help']
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  register: ['--service', '--labels', '--netns', '--url', '--cidr', '--route', '--exclude', '--node', '--ttl'],
  unregister: [],
  apply: ['--filename'],
  delete: [],
  get: ['--watch'],
  list: ['--watch'],
  explain: ['--labels'],
  status: [],
  topology: [],
  store: [...STORE_FLAGS, '--filename'],
}

interface Ctx {
  p: Parsed
  io: Io
  client: AgentClient
  json: boolean
}

export async function runCommand(argv: readonly string[], io: Io): Promise<number> {
  const p = parseArgs(argv, SPEC)
  if (p.flags.has('--help') || p.positional.length === 0) {
    io.out(`${USAGE}\n`)
    return p.flags.has('--help') ? 0 : 2
  }
  const command = p.positional[0] ?? ''
  const allowed = ALLOWED[command]
  if (allowed === undefined) throw new UsageError(`${command}: unknown command`)
  for (const flag of p.flags.keys()) {
    if (!GLOBAL.includes(flag) && !allowed.includes(flag)) throw new UsageError(`${flag}: not a flag of ${command}`)
  }
  const output = one(p, '--output') ?? 'table'
  if (output === 'dot' && command !== 'topology') throw new UsageError('--output dot: only for topology')
  if (output !== 'table' && output !== 'json' && output !== 'dot') throw new UsageError(`--output: must be table or json (or dot for topology), got "${output}"`)
  const socket = one(p, '--socket') ?? io.env.NSM_AGENT_SOCKET ?? '/run/nsm/agent.sock'
  const client = new AgentClient(socket)
  try {
    const ctx: Ctx = { p, io, client, json: output === 'json' }
    switch (command) {
      case 'register':
        return await register(ctx)
      case 'unregister':
        return await unregister(ctx)
      case 'apply':
        return await apply(ctx)
      case 'delete':
        return await deleteService(ctx)
      case 'get':
      case 'list':
        return await get(ctx)
      case 'explain':
        return await explainCmd(ctx)
      case 'topology':
        args(ctx, 0, 'no arguments')
        ctx.io.out(await topology(client, output === 'dot' ? 'dot' : ctx.json ? 'json' : 'text'))
        return 0
      case 'store': {
        const [, sub = '', ...rest] = p.positional
        if (rest.length > 0 || (sub !== 'export' && sub !== 'import')) throw new UsageError('store: expects export or import')
        return sub === 'export' ? await exportStore(p.flags, io) : await importStore(p.flags, io)
      }
      default:
        return await status(ctx)
    }
  } finally {
    client.close()
  }
}

function args(ctx: Ctx, count: number, what: string): string[] {
  const rest = ctx.p.positional.slice(1)
  if (rest.length !== count) throw new UsageError(`${ctx.p.positional[0]}: expects ${what}`)
  return rest
}

function checkCidr(flag: string, v: string): string {
  if (parseCidr(v) === undefined) throw new UsageError(`${flag} ${v}: not a CIDR (address/prefix-length)`)
  return v
}

async function register(ctx: Ctx): Promise<number> {
  const [name = ''] = args(ctx, 1, 'one endpoint NAME')
  const services = all(ctx.p, '--service')
  if (services.length === 0) throw new UsageError('register: needs at least one --service')
  const common = labelPairs('--labels', all(ctx.p, '--labels'))
  const networkServiceLabels: Record<string, { labels: Record<string, string> }> = {}
  const names: string[] = []
  for (const s of services) {
    const q = s.indexOf('?')
    const svc = q < 0 ? s : s.slice(0, q)
    if (svc === '') throw new UsageError(`--service ${s}: names no service`)
    names.push(svc)
    networkServiceLabels[svc] = { labels: q < 0 ? { ...common } : labelPairs(`--service ${s}`, [s.slice(q + 1).replace(/&/g, ',')]) }
  }
  const netns = one(ctx.p, '--netns')
  const url = one(ctx.p, '--url')
  if (netns !== undefined && url !== undefined) throw new UsageError('register: give --netns or --url, not both')
  if (netns !== undefined && !netns.startsWith('/')) throw new UsageError(`--netns ${netns}: must be an absolute path`)
  const ttl = one(ctx.p, '--ttl')
  let expirationTime
  if (ttl !== undefined) {
    const ms = parseDuration(ttl)
    if (ms === undefined || ms <= 0) throw new UsageError(`--ttl ${ttl}: must be a positive duration like 30s, 5m or 1h`)
    expirationTime = timestampOf(ctx.io.now() + ms)
  }
  const routes = all(ctx.p, '--route').map((r) => {
    const [prefix = '', nextHop = ''] = r.split('@')
    checkCidr('--route', prefix)
    if (nextHop !== '' && parseIp(nextHop) === undefined) throw new UsageError(`--route ${r}: next hop "${nextHop}" is not an IP address`)
    return { prefix, nextHop }
  })
  const endpoint = NetworkServiceEndpoint.fromPartial({
    name,
    networkServiceNames: names,
    networkServiceLabels,
    url: url ?? (netns === undefined ? '' : `file://${netns}`),
    ...(expirationTime === undefined ? {} : { expirationTime }),
  })
  const extension = EndpointExtension.fromPartial({
    endpointName: name,
    netnsPath: netns ?? '',
    cidrPools: all(ctx.p, '--cidr').map((c) => checkCidr('--cidr', c)),
    routes,
    excludedPrefixes: all(ctx.p, '--exclude').map((c) => checkCidr('--exclude', c)),
    nodeName: one(ctx.p, '--node') ?? '',
  })
  const stored = await ctx.client.unary(AgentDefinition, AgentDefinition.methods.registerEndpoint, { endpoint, extension })
  if (ctx.json) ctx.io.out(`${JSON.stringify(EndpointRegistration.toJSON(stored), null, 2)}\n`)
  else ctx.io.out(endpointsTable([stored], ctx.io.now()))
  return 0
}

async function unregister(ctx: Ctx): Promise<number> {
  const [name = ''] = args(ctx, 1, 'one endpoint NAME')
  await ctx.client.unary(AgentDefinition, AgentDefinition.methods.unregisterEndpoint, { endpointName: name })
  if (!ctx.json) ctx.io.out(`endpoint ${name} unregistered\n`)
  else ctx.io.out(`${JSON.stringify({ unregistered: name })}\n`)
  return 0
}

/** Who may offer the service, in one line. */
function policySummary(p: ServicePolicy): string {
  const namespaces = p.endpointNamespaces.length > 0 ? p.endpointNamespaces : p.namespace !== '' ? [p.namespace] : []
  const parts = [namespaces.length === 0 ? 'none' : `namespaces ${namespaces.join(',')}`]
  const selector = Object.entries(p.endpointSelector).map(([k, v]) => `${k}=${v}`)
  if (selector.length > 0) parts.push(`labels ${selector.join(',')}`)
  if (p.endpointRoutes.length > 0) parts.push(`routes within ${p.endpointRoutes.join(',')}`)
  if (p.endpointPools.length > 0) parts.push(`pools within ${p.endpointPools.join(',')}`)
  return parts.join('; ')
}

/** conf's NetworkService → the registry message. */
export function toRegistryService(s: ConfNetworkService): NetworkService {
  return NetworkService.fromPartial({
    name: s.name,
    payload: s.payload,
    matches: s.matches.map((m) => ({
      sourceSelector: m.sourceSelector,
      routes: m.routes.map((r) => ({ destinationSelector: r.destinationSelector, weight: r.weight })),
      fallthrough: m.fallthrough,
      ...(m.metadata === undefined ? {} : { metadata: { labels: m.metadata.labels } }),
    })),
  })
}

async function apply(ctx: Ctx): Promise<number> {
  args(ctx, 0, 'no arguments besides -f FILE')
  const file = one(ctx.p, '--filename')
  if (file === undefined) throw new UsageError('apply: needs -f FILE (or -f - for stdin)')
  let text: string
  try {
    text = ctx.io.readFile(file)
  } catch (err) {
    throw new UsageError(`-f ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  let services: ConfNetworkService[]
  try {
    services = parseNetworkServiceYaml(text)
  } catch (err) {
    if (err instanceof ConfError) throw new UsageError(`${file}: ${err.message}`)
    throw err
  }
  if (services.length === 0) throw new UsageError(`${file}: no NetworkService document`)
  // Through the agent's RegisterService: a manifest is declarative, so its registration policy (or its
  // absence) replaces the stored one.
  const stored: ServiceRegistration[] = []
  for (const s of services) {
    stored.push(await ctx.client.unary(AgentDefinition, AgentDefinition.methods.registerService, { service: toRegistryService(s), policy: s.policy }))
  }
  if (ctx.json) ctx.io.out(`${JSON.stringify(stored.map((s) => ServiceRegistration.toJSON(s)), null, 2)}\n`)
  else for (const s of stored) ctx.io.out(`networkservice/${s.service?.name ?? ''} applied${s.policy === undefined ? '' : ` (endpoint pods: ${policySummary(s.policy)})`}\n`)
  return 0
}

async function deleteService(ctx: Ctx): Promise<number> {
  const [kind = '', name = ''] = args(ctx, 2, '"service NAME"')
  if (kind !== 'service') throw new UsageError(`delete: unknown kind "${kind}" (only: service)`)
  const exists = (await findServices(ctx)).some((s) => s.name === name)
  if (!exists) {
    ctx.io.err(`nsmctl: service ${name} is not registered\n`)
    return 1
  }
  await ctx.client.unary(NS_REG, NS_REG.methods.unregister, NetworkService.fromPartial({ name }))
  ctx.io.out(ctx.json ? `${JSON.stringify({ deleted: name })}\n` : `networkservice/${name} deleted\n`)
  return 0
}

async function findServices(ctx: Ctx): Promise<NetworkService[]> {
  const out: NetworkService[] = []
  await ctx.client.stream(NS_REG, NS_REG.methods.find, { networkService: undefined, watch: false }, (r) => {
    if (r.networkService !== undefined) out.push(r.networkService)
  })
  return out
}

async function listConnections(ctx: Ctx): Promise<Connection[]> {
  const controller = new AbortController()
  let conns: Connection[] = []
  await ctx.client
    .stream(
      MonitorConnectionDefinition,
      MonitorConnectionDefinition.methods.monitorConnections,
      { pathSegments: [], networkServices: [] },
      (ev) => {
        if (ev.type === ConnectionEventType.INITIAL_STATE_TRANSFER) {
          conns = Object.values(ev.connections).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
          controller.abort()
        }
      },
      { signal: controller.signal },
    )
    .catch((err: unknown) => {
      // Our own abort after the initial state is how a one-shot read of a monitor stream ends.
      if (!controller.signal.aborted) throw err
    })
  return conns
}

/** `get connections|endpoints -w`: the current state, then one line per change until interrupted. */
async function watch(ctx: Ctx, kind: 'connections' | 'endpoints'): Promise<number> {
  const controller = new AbortController()
  process.once('SIGINT', () => controller.abort())
  process.once('SIGTERM', () => controller.abort())
  const line = (event: string, id: string, detail: string, json: unknown): void =>
    ctx.io.out(ctx.json ? `${JSON.stringify({ event, ...(json as object) })}\n` : `${event.padEnd(7)} ${id} ${detail}\n`)
  const run =
    kind === 'connections'
      ? ctx.client.stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, (ev) => {
          const event = ConnectionEventType[ev.type] ?? String(ev.type)
          for (const c of Object.values(ev.connections)) {
            line(event === 'INITIAL_STATE_TRANSFER' ? 'INITIAL' : event, c.id, `${State[c.state] ?? c.state} ${c.networkService} ${c.networkServiceEndpointName || '-'}`, { connection: Connection.toJSON(c) })
          }
        }, { signal: controller.signal })
      : ctx.client.stream(NSE_REG, NSE_REG.methods.find, { networkServiceEndpoint: NetworkServiceEndpoint.fromPartial({}), watch: true }, (r) => {
          const e = r.networkServiceEndpoint
          if (e !== undefined) line(r.deleted ? 'DELETE' : 'UPDATE', e.name, e.networkServiceNames.join(','), { endpoint: NetworkServiceEndpoint.toJSON(e) })
        }, { signal: controller.signal })
  await run.catch((err: unknown) => {
    // Interrupting is how a watch ends.
    if (!controller.signal.aborted) throw err
  })
  return 0
}

async function get(ctx: Ctx): Promise<number> {
  const [kind = ''] = args(ctx, 1, 'one of services, endpoints, connections, nodes')
  if (ctx.p.flags.has('--watch')) {
    if (['connections', 'connection', 'conn'].includes(kind)) return watch(ctx, 'connections')
    if (['endpoints', 'endpoint', 'nse'].includes(kind)) return watch(ctx, 'endpoints')
    throw new UsageError(`get ${kind}: --watch works for connections and endpoints`)
  }
  const out = (json: unknown, text: string): number => {
    ctx.io.out(ctx.json ? `${JSON.stringify(json, null, 2)}\n` : text)
    return 0
  }
  switch (kind) {
    case 'services':
    case 'service':
    case 'ns': {
      const services = await findServices(ctx)
      return out(services.map((s) => NetworkService.toJSON(s)), servicesTable(services))
    }
    case 'endpoints':
    case 'endpoint':
    case 'nse': {
      const { endpoints } = await ctx.client.unary(AgentDefinition, AgentDefinition.methods.listEndpoints, { endpointName: '' })
      return out(endpoints.map((e) => EndpointRegistration.toJSON(e)), endpointsTable(endpoints, ctx.io.now()))
    }
    case 'connections':
    case 'connection':
    case 'conn': {
      const conns = await listConnections(ctx)
      return out(conns.map((c) => Connection.toJSON(c)), connectionsTable(conns))
    }
    case 'nodes':
    case 'node': {
      const list = await ctx.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})
      return out(NodeList.toJSON(list), nodesTable(list.nodes, ctx.io.now()))
    }
    default:
      throw new UsageError(`get: unknown kind "${kind}" (services, endpoints, connections, nodes)`)
  }
}

async function explainCmd(ctx: Ctx): Promise<number> {
  const [service = ''] = args(ctx, 1, 'one SERVICE')
  const labels = labelPairs('--labels', all(ctx.p, '--labels'))
  const res = await ctx.client.unary(AgentDefinition, AgentDefinition.methods.explain, { networkService: service, labels })
  const explanation = JSON.parse(res.explanationJson) as Explanation
  ctx.io.out(ctx.json ? `${JSON.stringify(explanation, null, 2)}\n` : explanationText(explanation))
  return explanation.chosen === null ? 1 : 0
}

async function status(ctx: Ctx): Promise<number> {
  args(ctx, 0, 'no arguments')
  const s = await ctx.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  if (ctx.json) ctx.io.out(`${JSON.stringify(StatusResponse.toJSON(s), null, 2)}\n`)
  else {
    ctx.io.out(
      table(
        ['READY', 'REASON', 'NODE', 'VERSION', 'CONNECTIONS', 'ENDPOINTS'],
        [[String(s.ready), s.reason || '-', s.nodeName, s.version, String(s.connections), String(s.endpoints)]],
      ),
    )
  }
  return s.ready ? 0 : 1
}
