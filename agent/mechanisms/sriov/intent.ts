// The SR-IOV mechanism's claims: one file per VF under `<state dir>/sriov/<pci address>.json`, created
// exclusively (a second claim of the VF fails: two pods never get one VF) and durably BEFORE anything of
// the VF is changed, holding what is needed to give it back: the VF's original name, MAC, MTU and alias,
// the connection it is claimed for, the tag it will carry, where it goes, and the device-info file and
// endpoint-side link made for it. The connection's record is journaled by the pipeline only after the
// build, so this file is what a restart repairs from (./index.ts sweep): an agent killed at any point
// between the claim and the journal leaves a claim whose connection is not live, and the VF is restored.
// Removed only after the VF is back.
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { canonicalPciAddress } from './sysfs.js'

export interface VfOriginal {
  name: string
  mac: string | undefined
  mtu: number | undefined
  alias: string | undefined
}

export interface VfClaim {
  version: 1
  pciAddress: string
  connectionId: string
  /** `netdev`: moved into the pod (original set); `vfio`: nothing of it is changed. */
  kind: 'netdev' | 'vfio'
  /** The VF's netdev as it was in the host netns (netdev only). */
  original?: VfOriginal
  /** The alias it carries from the first change on (netdev only): how it is found wherever it is. */
  tag?: string
  /** Where it is moved, and its name there. */
  netns: string
  ifname: string
  /** The device-info file written for the pod. */
  deviceInfoFile: string
}

export class ClaimExistsError extends Error {
  override readonly name = 'ClaimExistsError'
  constructor(readonly holder: VfClaim | undefined) {
    super(holder === undefined ? 'claimed' : `claimed by connection ${holder.connectionId}`)
  }
}

export class ClaimStore {
  constructor(readonly dir: string) {}

  private path(pci: string): string {
    return join(this.dir, `${pci}.json`)
  }

  /** Creates the claim, durably; ClaimExistsError when the VF is claimed already. */
  create(claim: VfClaim): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    let fd: number
    try {
      fd = openSync(this.path(claim.pciAddress), 'wx', 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ClaimExistsError(this.get(claim.pciAddress))
      throw err
    }
    try {
      writeSync(fd, JSON.stringify(claim))
      fsyncSync(fd)
    } catch (err) {
      closeSync(fd)
      rmSync(this.path(claim.pciAddress), { force: true })
      throw err
    }
    closeSync(fd)
    this.syncDir()
  }

  /** The claim of a VF, or undefined (none, or unreadable: a torn write never got past its create). */
  get(pci: string): VfClaim | undefined {
    try {
      return decodeClaim(JSON.parse(readFileSync(this.path(pci), 'utf8')))
    } catch {
      return undefined
    }
  }

  /** Every readable claim. */
  all(): VfClaim[] {
    let names: string[]
    try {
      names = readdirSync(this.dir)
    } catch {
      return []
    }
    return names.flatMap((n) => {
      const pci = n.endsWith('.json') ? canonicalPciAddress(n.slice(0, -5)) : undefined
      const c = pci === undefined ? undefined : this.get(pci)
      return c === undefined ? [] : [c]
    })
  }

  /** Rewrites a claim (temp file + rename, durable). */
  update(claim: VfClaim): void {
    const tmp = `${this.path(claim.pciAddress)}.tmp`
    const fd = openSync(tmp, 'w', 0o600)
    try {
      writeSync(fd, JSON.stringify(claim))
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(tmp, this.path(claim.pciAddress))
    this.syncDir()
  }

  remove(pci: string): void {
    rmSync(this.path(pci), { force: true })
    this.syncDir()
  }

  private syncDir(): void {
    try {
      const fd = openSync(this.dir, 'r')
      try {
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
    } catch {
      // The directory's own fsync is best effort (the file's content is durable already).
    }
  }
}

function decodeClaim(v: unknown): VfClaim | undefined {
  if (typeof v !== 'object' || v === null) return undefined
  const c = v as Record<string, unknown>
  if (c.version !== 1 || typeof c.pciAddress !== 'string' || typeof c.connectionId !== 'string') return undefined
  if (c.kind !== 'netdev' && c.kind !== 'vfio') return undefined
  if (typeof c.netns !== 'string' || typeof c.ifname !== 'string' || typeof c.deviceInfoFile !== 'string') return undefined
  if (c.kind === 'netdev') {
    const o = c.original as Record<string, unknown> | undefined
    if (typeof o !== 'object' || o === null || typeof o.name !== 'string' || typeof c.tag !== 'string') return undefined
  }
  return v as VfClaim
}
