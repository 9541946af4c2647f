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

export type { CniDeps } from './deps.js'

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

  constructor(deps: CniDeps) {
    this.handlers = nsmHandlers(deps, this.locks)
  }

  async run(req: ShimRequest): Promise<ShimAnswer> {
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
