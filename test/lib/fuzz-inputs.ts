// The valid CNI calls the fuzz test (test/integration/hardening-fuzz.test.ts) starts from, for dist/nsm
// against the test's agent and for dist/nsm-ipam with the test's dataDir, the shapes of its steps, and the
// spec's rules for an environment that is certainly invalid.
import { WEB, type Mesh } from '../integration/nsm-fixture'
import type { FuzzPaths } from './fuzz-paths'

export type Target = 'nsm' | 'ipam'
export type Env = Record<string, string>

export interface FuzzCase {
  id: string
  target: Target
  label: string
  env: Env
  stdin: Buffer
  /** The input is certainly invalid: exit 0 is a finding. */
  mustFail: boolean
}

export interface ValidSeq {
  id: string
  target: Target
  valid: true
  n: number
}

export type Step = FuzzCase | ValidSeq

/** What the calls are made against: the agent, the pod and endpoint netns, nsm-ipam and the odd files. */
export interface FuzzWorld {
  mesh: Mesh
  podNetns: string
  endpointNetns: string
  ipamBinDir: string
  paths: FuzzPaths
}

export const VARS = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'] as const
export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'] as const
export const SPEC_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/
const ifnameBad = (s: string): boolean => s === '' || s.length > 15 || s === '.' || s === '..' || /[/:\s]/.test(s)
const REQUIRED: Record<string, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  STATUS: [],
  GC: ['CNI_PATH'],
}

export const IPAM_NET = 'fuzz-ipam'
/** The valid sequences' networks (+ their number): a fuzzed GC of the fuzz networks cannot touch them, nor they one another. */
export const VALID_NET = { nsm: 'nsm-valid', ipam: 'fuzz-ipam-valid' } as const
export const IPAM_SUBNET = '10.213.0.0/24'

export interface CniInputs {
  nsmConf(extra?: Record<string, unknown>): Record<string, unknown>
  ipamConf(ipam?: Record<string, unknown>, top?: Record<string, unknown>): Record<string, unknown>
  /** The environment of a valid call; container id and interface name derived from the case id. */
  baseEnv(target: Target, command: string, id: string): Env
  /** The configuration of a valid call. */
  baseStdin(target: Target, command: string): Record<string, unknown>
}

export function cniInputs(w: FuzzWorld): CniInputs {
  const nsmConf = (extra: Record<string, unknown> = {}): Record<string, unknown> => w.mesh.conf({ networkService: WEB, ...extra })
  const ipamConf = (ipam: Record<string, unknown> = {}, top: Record<string, unknown> = {}): Record<string, unknown> => ({
    cniVersion: '1.1.0',
    name: IPAM_NET,
    type: 'ptp',
    ipam: { type: 'nsm-ipam', subnet: IPAM_SUBNET, dataDir: w.paths.dataDir, ...ipam },
    ...top,
  })
  function baseEnv(target: Target, command: string, id: string): Env {
    const cid = `fz${id.replace(/-/g, '')}`
    return {
      CNI_COMMAND: command,
      CNI_CONTAINERID: cid,
      CNI_NETNS: w.podNetns,
      // An interface name of its own per case: accepted ADDs running at the same time never collide.
      CNI_IFNAME: `f${id.replace(/\D/g, '')}`,
      CNI_PATH: target === 'nsm' ? w.mesh.binDir : w.ipamBinDir,
    }
  }
  const baseStdin = (target: Target, command: string): Record<string, unknown> => {
    const conf = target === 'nsm' ? nsmConf() : ipamConf()
    if (command === 'GC') conf['cni.dev/valid-attachments'] = []
    return conf
  }
  return { nsmConf, ipamConf, baseEnv, baseStdin }
}

/** Does this environment certainly fail parseEnv (spec rules only)? */
export function envInvalid(env: Env): boolean {
  const cmd = env.CNI_COMMAND ?? ''
  if (!(cmd in REQUIRED)) return true
  for (const v of REQUIRED[cmd] ?? []) if ((env[v] ?? '') === '') return true
  const cid = env.CNI_CONTAINERID ?? ''
  if (cid !== '' && !SPEC_ID.test(cid)) return true
  const ifn = env.CNI_IFNAME ?? ''
  if (ifn !== '' && ifnameBad(ifn)) return true
  const ns = env.CNI_NETNS ?? ''
  if (ns !== '' && !ns.startsWith('/')) return true
  if ((cmd === 'ADD' || cmd === 'CHECK') && ns !== '' && !ns.startsWith('/var/run/netns/t') && !ns.startsWith('/proc/')) return true
  return false
}
