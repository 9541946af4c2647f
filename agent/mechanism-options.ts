// The places the MEMIF and SR-IOV mechanisms work in, from the agent's config, for createDataplane
// (agent/pipeline/): the memif forwarder program (found on PATH or at its absolute path, or no MEMIF) and
// its run dir, the SR-IOV sysfs, device-info and claim dirs.
import { accessSync, constants } from 'node:fs'
import { isAbsolute, join } from 'node:path'
import type { AgentConfig } from './config/config.js'
import type { Logger } from './server/log.js'
import type { MemifOptions, SriovOptions } from './pipeline/index.js'
import { MemifForwarders } from './mechanisms/memif/forwarder.js'
import { agentKey } from './mechanisms/memif/endpoint.js'

/**
 * The MEMIF mechanism, when its forwarder program is there (`--memif-forwarder`, found on PATH or at its
 * absolute path); otherwise a request for a memif is refused (104) and the start says why.
 */
export function memifOptions(config: AgentConfig, log: Logger): (MemifOptions & { forwarder: MemifForwarders }) | undefined {
  if (config.memifForwarder === 'none') return undefined
  const program = findProgram(config.memifForwarder)
  if (program === undefined) {
    log.warn('MEMIF is not served: no memif forwarder program (install Debian\'s dpdk-dev for dpdk-testpmd, or set --memif-forwarder)', { memifForwarder: config.memifForwarder })
    return undefined
  }
  const forwarder = new MemifForwarders({ runDir: join(config.stateDir, 'memif-fwd'), testpmd: program, ...(config.memifCpu === undefined ? {} : { cpu: config.memifCpu }), log })
  forwarder.on('restarted', (ids: string[], reason: string) => log.warn('memif forwarder restarted: its pods\' DPDK clients reopen their ports', { connections: ids, reason }))
  return { root: config.memifRoot, agent: agentKey(config.stateDir), forwarder }
}

/** An executable at `name` (absolute) or in a directory of PATH. */
function findProgram(name: string): string | undefined {
  const candidates = isAbsolute(name) ? [name] : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').filter((d) => d !== '').map((d) => join(d, name))
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK)
      return c
    } catch {
      // not here
    }
  }
  return undefined
}

/**
 * The SR-IOV mechanism's places. NSM_AGENT_TEST_SRIOV_HANG (`tagged`, `moved`, `configured`) is a crash
 * test's seam: the build stops for good after that step, so the test can SIGKILL the agent right there.
 */
export function sriovOptions(config: AgentConfig): SriovOptions {
  const hang = process.env.NSM_AGENT_TEST_SRIOV_HANG ?? ''
  return {
    sysfsRoot: config.sysfsRoot,
    devinfoDir: config.devinfoDir,
    claimDir: join(config.stateDir, 'sriov'),
    ...(hang === '' ? {} : { afterStep: (step: string) => (step === hang ? new Promise<void>(() => undefined) : undefined) }),
  }
}
