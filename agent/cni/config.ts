// The nsm plugin's own netconf fields, validated before anything changes: a bad field is CNI error 7
// naming it, and nothing changes anywhere.
//
//   socket | agentSocket   the agent's unix socket (absolute path; default /run/nsm/agent.sock)
//   networkService         one service, plain name or the v1 form `kernel://svc[/ifname][?labels]`
//   networkServices        a list of those (or one comma-separated string)
//   labels                 client labels (string → string) added to every request of this network
//   timeoutMs              how long the shim waits for the agent's answer (default 120000)
//   mechanism              kernel | memif | vfio: the mechanism of entries that name none (`memif://svc` names one)
// Per call: `args.cni.networkServices` (list or comma string) and CNI_ARGS `NSM_NETWORK_SERVICES`, and the
// pod reference from CNI_ARGS `K8S_POD_NAMESPACE` / `K8S_POD_NAME` (args.cni `podNamespace`/`podName` win;
// a name alone, as podman passes it, is in namespace `default`).
// An SR-IOV VF for the interface, by its PCI address, from (first found): Multus's `deviceID`,
// `runtimeConfig.deviceID`, or the SR-IOV device plugin's CNI_ARGS `PCIDEVICE_<RESOURCE>` (one address);
// with it `runtimeConfig.mac` (the VF's MAC) and `runtimeConfig.CNIDeviceInfoFile` (where Multus wants the
// device-info file). ADD asks for a KERNEL VF with NSM's `pciAddress` (add.ts; the agent's SR-IOV mechanism
// serves it). Unknown top-level fields are ignored, as every CNI plugin does with fields it does not own.
import { ConfError } from '../../conf/errors.js'
import { MECHANISMS, parseV1Annotation, type Mechanism, type ServiceRequest } from '../../conf/annotations.js'
import { isValidLabelKey, isValidLabelValue } from '../../conf/names.js'
import { CniCode, CniError, pickArg, type CallContext } from '../../cni/protocol/index.js'
import { agentSocketOf, DEFAULT_TIMEOUT_MS } from '../../cni/nsm/frame.js'
import { isAbsolute } from 'node:path'
import { canonicalMac } from '../mechanisms/sriov/index.js'
import { canonicalPciAddress } from '../mechanisms/sriov/sysfs.js'


/** CNI_ARGS keys the plugin reads (kubelet and Multus send the K8S_* ones, with IgnoreUnknown=true). */
// TRACEPARENT / TRACESTATE: the caller's W3C trace context, the parent of the call's span (agent/tracing/).
// PCIDEVICE_*: the SR-IOV device plugin's variable naming the VFs allocated for a resource.
export const KNOWN_CNI_ARGS = ['K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID', 'NSM_NETWORK_SERVICES', 'TRACEPARENT', 'TRACESTATE', 'PCIDEVICE_*'] as const

export interface PodRef {
  namespace: string
  name: string
}

/** Services named by the configuration or the call, with the field they came from (for messages). */
export interface ExplicitServices {
  field: string
  requests: ServiceRequest[]
}

export interface NsmConfig {
  network: string
  socket: string
  timeoutMs: number
  labels: Record<string, string>
  /** The first non-empty of: netconf networkService(s), args.cni.networkServices, CNI_ARGS NSM_NETWORK_SERVICES. */
  explicit: ExplicitServices | undefined
  pod: PodRef | undefined
  /** An SR-IOV VF's PCI address (canonical), the field it came from, and what goes with it. */
  device: Device | undefined
  /** netconf `mechanism`: for service entries without a scheme. */
  mechanism: Mechanism | undefined
}

export interface Device {
  field: string
  pciAddress: string
  /** `runtimeConfig.mac`, in the kernel's spelling. */
  mac?: string
  /** `runtimeConfig.CNIDeviceInfoFile`. */
  deviceInfoFile?: string
}

const bad = (field: string, msg: string): CniError => new CniError(CniCode.INVALID_CONFIG, `${field}: ${msg}`)

function optionalString(raw: Record<string, unknown>, key: string): string | undefined {
  const v = raw[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') throw bad(key, `expected a string, got ${JSON.stringify(v)}`)
  return v
}

function parseSocket(raw: Record<string, unknown>): string {
  const where = agentSocketOf(raw)
  if (!('socket' in where)) throw bad(where.field, where.problem)
  return where.socket
}

function parseTimeout(raw: Record<string, unknown>): number {
  const v = raw.timeoutMs
  if (v === undefined || v === null) return DEFAULT_TIMEOUT_MS
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 600_000) throw bad('timeoutMs', `expected an integer number of milliseconds in 1..600000, got ${JSON.stringify(v)}`)
  return v
}

/** A label map: keys are Kubernetes label keys, values label values. */
export function parseLabels(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {}
  if (typeof v !== 'object' || Array.isArray(v)) throw bad(field, `expected an object of label key → value, got ${JSON.stringify(v)}`)
  const out: Record<string, string> = {}
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (!isValidLabelKey(k)) throw bad(`${field}.${k}`, `${JSON.stringify(k)} is not a valid label key`)
    if (typeof val !== 'string' || !isValidLabelValue(val)) throw bad(`${field}.${k}`, `${JSON.stringify(val)} is not a valid label value`)
    out[k] = val
  }
  return out
}

/** A service list in the v1 annotation syntax: a string (comma list) or a list of strings. */
function parseServiceList(v: unknown, field: string): ServiceRequest[] {
  let text: string
  if (typeof v === 'string') text = v
  else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) {
    const blank = (v as string[]).findIndex((x) => x.trim() === '' || x.includes(','))
    if (blank >= 0) throw bad(`${field}[${blank}]`, `${JSON.stringify(v[blank])} is not one service entry`)
    text = (v as string[]).join(',')
  } else throw bad(field, `expected a service name, a list of them or a comma-separated string, got ${JSON.stringify(v)}`)
  try {
    return parseV1Annotation(text, field)
  } catch (err) {
    // Configuration, not an annotation: code 7, the message names the entry (`field[i]: "entry": why`).
    if (err instanceof ConfError) throw new CniError(CniCode.INVALID_CONFIG, err.message, { cause: err })
    throw err
  }
}

function parseExplicit(ctx: CallContext): ExplicitServices | undefined {
  const raw = ctx.conf.raw
  const one = raw.networkService
  const many = raw.networkServices
  if (one !== undefined && one !== null && many !== undefined && many !== null) throw bad('networkServices', 'conflicts with networkService: give one of them')
  if (one !== undefined && one !== null) {
    if (typeof one !== 'string') throw bad('networkService', `expected a string, got ${JSON.stringify(one)}`)
    const requests = parseServiceList(one, 'networkService')
    if (requests.length !== 1) throw bad('networkService', `names ${requests.length} services: use networkServices for a list`)
    return { field: 'networkService', requests }
  }
  if (many !== undefined && many !== null) {
    const requests = parseServiceList(many, 'networkServices')
    if (requests.length > 0) return { field: 'networkServices', requests }
  }
  const fromArgs = ctx.conf.cniArgs?.networkServices
  if (fromArgs !== undefined && fromArgs !== null) {
    const requests = parseServiceList(fromArgs, 'args.cni.networkServices')
    if (requests.length > 0) return { field: 'args.cni.networkServices', requests }
  }
  const fromEnv = ctx.envArgs.get('NSM_NETWORK_SERVICES')
  if (fromEnv !== undefined && fromEnv !== '') {
    const requests = parseServiceList(fromEnv, 'CNI_ARGS NSM_NETWORK_SERVICES')
    if (requests.length > 0) return { field: 'CNI_ARGS NSM_NETWORK_SERVICES', requests }
  }
  return undefined
}

function parsePod(ctx: CallContext): PodRef | undefined {
  const ns = pickArg(ctx.conf.cniArgs, 'podNamespace', ctx.envArgs, 'K8S_POD_NAMESPACE')
  const name = pickArg(ctx.conf.cniArgs, 'podName', ctx.envArgs, 'K8S_POD_NAME')
  if (ns !== undefined && typeof ns !== 'string') throw bad('args.cni.podNamespace', `expected a string, got ${JSON.stringify(ns)}`)
  if (name !== undefined && typeof name !== 'string') throw bad('args.cni.podName', `expected a string, got ${JSON.stringify(name)}`)
  if ((name ?? '') === '') {
    if ((ns ?? '') !== '') throw new CniError(CniCode.INVALID_ENVIRONMENT, 'CNI_ARGS: K8S_POD_NAMESPACE is given without K8S_POD_NAME')
    return undefined
  }
  // podman passes K8S_POD_NAME (the container name) alone; Kubernetes' own default namespace then.
  return { namespace: (ns ?? '') === '' ? 'default' : (ns as string), name: name as string }
}

/** The VF's PCI address: netconf `deviceID`, else `runtimeConfig.deviceID` (Multus), else CNI_ARGS PCIDEVICE_*. */
function parseDeviceId(ctx: CallContext): { field: string; id: string } | undefined {
  const top = optionalString(ctx.conf.raw, 'deviceID')
  if (top !== undefined && top !== '') return { field: 'deviceID', id: top }
  const rc = ctx.conf.runtimeConfig?.deviceID
  if (rc !== undefined && rc !== null && rc !== '') {
    if (typeof rc !== 'string') throw bad('runtimeConfig.deviceID', `expected a string, got ${JSON.stringify(rc)}`)
    return { field: 'runtimeConfig.deviceID', id: rc }
  }
  const vars = [...ctx.envArgs].filter(([k, v]) => k.startsWith('PCIDEVICE_') && v !== '')
  if (vars.length === 0) return undefined
  const [key, value] = vars[0] as [string, string]
  const field = `CNI_ARGS ${key}`
  if (vars.length > 1) throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_ARGS: ${vars.map(([k]) => k).join(', ')} name VFs of ${vars.length} resources: give deviceID`)
  const ids = value.split(',').filter((x) => x !== '')
  if (ids.length !== 1) throw new CniError(CniCode.INVALID_ENVIRONMENT, `${field}: names ${ids.length} VFs (${value}): give deviceID`)
  return { field, id: ids[0] as string }
}

function parseDevice(ctx: CallContext): Device | undefined {
  const named = parseDeviceId(ctx)
  if (named === undefined) return undefined
  const pciAddress = canonicalPciAddress(named.id)
  if (pciAddress === undefined) {
    const msg = `${JSON.stringify(named.id)} is not a PCI address (dddd:bb:dd.f)`
    throw named.field.startsWith('CNI_ARGS') ? new CniError(CniCode.INVALID_ENVIRONMENT, `${named.field}: ${msg}`) : bad(named.field, msg)
  }
  const out: Device = { field: named.field, pciAddress }
  const mac = ctx.conf.runtimeConfig?.mac
  if (mac !== undefined && mac !== null && mac !== '') {
    const m = typeof mac === 'string' ? canonicalMac(mac) : undefined
    if (m === undefined) throw bad('runtimeConfig.mac', `expected a MAC address (aa:bb:cc:dd:ee:ff), got ${JSON.stringify(mac)}`)
    out.mac = m
  }
  const file = ctx.conf.runtimeConfig?.CNIDeviceInfoFile
  if (file !== undefined && file !== null && file !== '') {
    if (typeof file !== 'string' || !isAbsolute(file)) throw bad('runtimeConfig.CNIDeviceInfoFile', `expected an absolute path, got ${JSON.stringify(file)}`)
    out.deviceInfoFile = file
  }
  return out
}

/** netconf `mechanism`; an explicit entry naming another scheme conflicts with it. */
function parseMechanism(raw: Record<string, unknown>, explicit: ExplicitServices | undefined): Mechanism | undefined {
  const v = optionalString(raw, 'mechanism')
  if (v === undefined) return undefined
  const m = MECHANISMS.find((x) => x === v.toLowerCase())
  if (m === undefined) throw bad('mechanism', `${JSON.stringify(v)} is not one of ${MECHANISMS.join(', ')}`)
  const clash = explicit?.requests.find((r) => r.entry.includes('://') && r.mechanism !== m)
  if (clash !== undefined && explicit !== undefined) throw bad(explicit.field, `${JSON.stringify(clash.entry)} asks for ${clash.mechanism}, while mechanism is ${m}`)
  return m
}

export function parseNsmConfig(ctx: CallContext): NsmConfig {
  const raw = ctx.conf.raw
  const explicit = parseExplicit(ctx)
  return {
    network: ctx.conf.name,
    socket: parseSocket(raw),
    timeoutMs: parseTimeout(raw),
    labels: parseLabels(raw.labels, 'labels'),
    explicit,
    pod: parsePod(ctx),
    device: parseDevice(ctx),
    mechanism: parseMechanism(raw, explicit),
  }
}
