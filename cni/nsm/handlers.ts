// The nsm plugin's CNI commands (VERSION is answered by the protocol layer).
import type { PluginHandlers } from '../protocol/index'
import { add } from './add'
import { check } from './check'
import { KNOWN_CNI_ARGS } from './config'
import { del } from './del'
import { gc } from './gc'
import { status } from './status'

export const nsmHandlers: PluginHandlers = {
  add,
  del: (ctx) => del(ctx),
  check,
  gc,
  status,
  knownArgs: KNOWN_CNI_ARGS,
  about: 'CNI nsm plugin (nsm-cni): network service attachments through the node agent',
}
