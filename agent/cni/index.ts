// agent/cni: the nsm CNI plugin's logic, run inside the agent. The shim (cni/nsm/shim.ts) forwards each CNI
// call whole; `runCniCall` runs it through the CNI protocol layer (cni/protocol: environment, stdin,
// versions, result encoding, error JSON) exactly as a plugin process would, with the call's environment
// and stdin, and answers with what the plugin would print and its exit code.
//
// ADD, DEL and CHECK of one attachment (container id + CNI_IFNAME) run under its lock (lock.ts), one after
// another; GC takes each collected attachment's lock; STATUS takes none.
import { assertNetnsExists, pluginMain, type PluginHandlers, type PluginIo } from '../../cni/protocol/index.js'
import type { ShimAnswer, ShimRequest } from '../../cni/nsm/frame.js'
import { add } from './add.js'
import { check } from './check.js'
import { KNOWN_CNI_ARGS } from './config.js'
import { del } from './del.js'
import type { CniDeps } from './deps.js'
import { gc, status } from './gc.js'
import { attachmentKey, AttachmentLocks } from './lock.js'
import type { CniCall, CniObserver } from './deps.js'
import { withLogFields } from '../server/log.js'

export type { CniDeps, CniCall, CniObserver } from './deps.js'

/**
 * What a call is, read leniently from its variables before the protocol layer judges them: CNI_ARGS
 * `K8S_POD_NAMESPACE`/`K8S_POD_NAME` name the pod, `TRACEPARENT`/`TRACESTATE` (or the same variables in the
 * plugin's environment, which the shim forwards) carry the caller's W3C trace context.
 */
/** Several observers as one: the first one listed is the outermost. */
export function combineCniObservers(list: ReadonlyArray<CniObserver | undefined>): CniObserver | undefined {
  const os = list.filter((o): o is CniObserver => o !== undefined)
  if (os.length <= 1) return os[0]
  return (call, run) => os.reduceRight<() => Promise<ShimAnswer>>((inner, o) => () => o(call, inner), run)()
}

export function cniCallOf(env: Readonly<Record<string, string>>): CniCall {
  const args = new Map<string, string>()
  for (const kv of (env.CNI_ARGS ?? '').split(';')) {
    const eq = kv.indexOf('=')
    if (eq > 0) args.set(kv.slice(0, eq), kv.slice(eq + 1))
  }
  const name = args.get('K8S_POD_NAME') ?? ''
  const ns = args.get('K8S_POD_NAMESPACE') ?? ''
  const traceparent = args.get('TRACEPARENT') ?? env.TRACEPARENT
  const tracestate = args.get('TRACESTATE') ?? env.TRACESTATE
  return {
    command: env.CNI_COMMAND ?? '',
    containerId: env.CNI_CONTAINERID ?? '',
    ifname: env.CNI_IFNAME ?? '',
    ...(name === '' ? {} : { pod: `${ns === '' ? 'default' : ns}/${name}` }),
    ...(traceparent === undefined ? {} : { traceparent }),
    ...(tracestate === undefined ? {} : { tracestate }),
  }
}

export function nsmHandlers(deps: CniDeps, locks: AttachmentLocks): PluginHandlers {
  const locked = <T>(ctx: { env: { containerId: string; ifname: string } }, fn: () => Promise<T>): Promise<T> => locks.run(attachmentKey(ctx.env.containerId, ctx.env.ifname), fn)
  return {
    add: (ctx) => locked(ctx, () => add(deps, ctx)),
    del: (ctx) => locked(ctx, () => del(deps, ctx)),
    check: (ctx) => locked(ctx, () => check(deps, ctx)),
    gc: (ctx) => gc(deps, locks, ctx),
    status: async (ctx) => status(deps, ctx),
    knownArgs: KNOWN_CNI_ARGS,
    about: 'CNI nsm plugin (nsm-cni): network service attachments through the node agent',
  }
}

/** Runs CNI calls the shim forwards: one `run` per call. */
export class CniService {
  readonly locks = new AttachmentLocks()
  private readonly handlers: PluginHandlers

  constructor(private readonly deps: CniDeps) {
    this.handlers = nsmHandlers(deps, this.locks)
  }

  /**
   * One call: its lines carry the command, container and pod (agent/server/log.ts); metrics and traces see it
   * through `deps.observe`.
   */
  run(req: ShimRequest): Promise<ShimAnswer> {
    const call = cniCallOf(req.env)
    const fields = { cni: call.command, containerId: call.containerId, ...(call.pod === undefined ? {} : { pod: call.pod }) }
    const observe = this.deps.observe
    return withLogFields(fields, () => (observe === undefined ? this.runCall(req) : observe(call, () => this.runCall(req))))
  }

  private async runCall(req: ShimRequest): Promise<ShimAnswer> {
    let stdout = ''
    let stderr = ''
    const io: PluginIo = {
      env: req.env,
      readStdin: () => req.stdin,
      stdinIsTerminal: () => false,
      stdout: (t) => {
        stdout += t
      },
      stderr: (t) => {
        stderr += t
      },
      assertNetns: assertNetnsExists,
    }
    const exitCode = await pluginMain(this.handlers, io)
    return { exitCode, stdout, stderr }
  }
}
