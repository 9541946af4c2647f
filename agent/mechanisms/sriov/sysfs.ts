// What sysfs says about a PCI device, as the SR-IOV mechanism needs it: whether it is a VF (its `physfn`
// link names the PF), which driver holds it (`driver` link: vfio-pci means DPDK in the pod, no netdev),
// its network devices in the agent's netns (`net/*`; the directory is per-netns, so a VF moved into a pod
// is not listed here), its PF's network devices (`physfn/net/*`) and its IOMMU group (`iommu_group` link).
//
// The root is configurable (`--sysfs-root`, default /sys) so tests point it at a tree of their own whose
// `net/<name>` entries name real links standing in for VFs. Reads are synchronous: a handful of readdir
// and readlink calls on a pseudo filesystem, done before anything changes.
import { existsSync, readdirSync, readlinkSync } from 'node:fs'
import { basename, join } from 'node:path'

/** `dddd:bb:dd.f`, the form sysfs names devices by. */
const PCI_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/

/**
 * The canonical form of a PCI address (lower case, with the domain: `03:02.1` is `0000:03:02.1`), or
 * undefined when `text` is not one. Nothing else ever reaches a sysfs path.
 */
export function canonicalPciAddress(text: string): string | undefined {
  const t = text.trim().toLowerCase()
  const full = /^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(t) ? `0000:${t}` : t
  return PCI_RE.test(full) ? full : undefined
}

export const VFIO_DRIVER = 'vfio-pci'

export interface PciDevice {
  pciAddress: string
  /** The bound driver's name, undefined when none is bound. */
  driver: string | undefined
  /** Its network devices in the agent's netns (none when bound to vfio-pci, or moved into a pod). */
  netdevs: string[]
  /** The PF when the device is a VF. */
  pf: { pciAddress: string; netdevs: string[] } | undefined
  /** Its IOMMU group, when it has one. */
  iommuGroup: number | undefined
}

export class SysfsError extends Error {
  override readonly name = 'SysfsError'
}

/** The device at `<root>/bus/pci/devices/<pci>`; SysfsError when there is none. `pci` must be canonical. */
export function readPciDevice(root: string, pci: string): PciDevice {
  if (!PCI_RE.test(pci)) throw new SysfsError(`${JSON.stringify(pci)} is not a PCI address (dddd:bb:dd.f)`)
  const dir = join(root, 'bus', 'pci', 'devices', pci)
  if (!existsSync(dir)) throw new SysfsError(`no PCI device ${pci} (${dir} does not exist)`)
  const physfn = linkName(join(dir, 'physfn'))
  const group = linkName(join(dir, 'iommu_group'))
  return {
    pciAddress: pci,
    driver: linkName(join(dir, 'driver')),
    netdevs: entries(join(dir, 'net')),
    pf: physfn === undefined ? undefined : { pciAddress: physfn, netdevs: entries(join(dir, 'physfn', 'net')) },
    iommuGroup: group === undefined || !/^\d+$/.test(group) ? undefined : Number(group),
  }
}

/** The last component of a symlink's target, or undefined when there is no such link. */
function linkName(path: string): string | undefined {
  try {
    return basename(readlinkSync(path))
  } catch {
    return undefined
  }
}

function entries(path: string): string[] {
  try {
    return readdirSync(path).sort()
  } catch {
    return []
  }
}
