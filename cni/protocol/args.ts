// CNI_ARGS: "K1=V1;K2=V2" (deprecated by the spec's CONVENTIONS.md in favour of `args` in the config, which
// therefore wins when both carry the same key). A key the plugin does not know is an error unless
// IgnoreUnknown is true ("1", "true", any case): that is how kubelet passes K8S_POD_* to every plugin.
// A key given more than once is accepted and the last value wins, as the Go reference plugins do
// (types.LoadArgs): Multus sends each delegate the keys of its runtime conf followed by the ones it got.
import { CniCode, CniError } from './errors'

export type CniArgs = ReadonlyMap<string, string>

const TRUE = new Set(['1', 'true'])
const FALSE = new Set(['0', 'false'])

/** Whether `key` is one of `known`; an entry ending in `*` names a prefix (`PCIDEVICE_*`). */
function isKnown(key: string, known: readonly string[]): boolean {
  return known.some((k) => (k.endsWith('*') ? key.startsWith(k.slice(0, -1)) : k === key))
}

export function parseCniArgs(raw: string, known: readonly string[]): CniArgs {
  const out = new Map<string, string>()
  if (raw === '') return out
  for (const item of raw.split(';')) {
    if (item === '') continue
    const eq = item.indexOf('=')
    if (eq <= 0) throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS: "${item}" is not a KEY=VALUE pair`)
    const key = item.slice(0, eq)
    const value = item.slice(eq + 1)
    out.delete(key) // a repeat: the last value wins
    out.set(key, value)
  }
  const ignore = out.get('IgnoreUnknown')
  if (ignore !== undefined && !TRUE.has(ignore.toLowerCase()) && !FALSE.has(ignore.toLowerCase())) {
    throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS: IgnoreUnknown="${ignore}" is not a boolean (1, 0, true, false)`)
  }
  if (ignore === undefined || !TRUE.has(ignore.toLowerCase())) {
    const unknown = [...out.keys()].filter((k) => k !== 'IgnoreUnknown' && !isKnown(k, known))
    if (unknown.length > 0) {
      throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${known.join(', ') || 'none'}; set IgnoreUnknown=1 to ignore)`)
    }
  } else {
    for (const k of [...out.keys()]) if (k !== 'IgnoreUnknown' && !isKnown(k, known)) out.delete(k)
  }
  out.delete('IgnoreUnknown')
  return out
}

/**
 * One argument from both sources: `args.cni.<configKey>` in the configuration wins over CNI_ARGS
 * `<envKey>`. Returns undefined when neither has it.
 */
export function pickArg(configArgs: Record<string, unknown> | undefined, configKey: string, envArgs: CniArgs, envKey: string): unknown {
  if (configArgs !== undefined && configArgs[configKey] !== undefined) return configArgs[configKey]
  return envArgs.get(envKey)
}
