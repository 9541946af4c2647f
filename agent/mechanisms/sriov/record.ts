// The SR-IOV mechanism's part of a datapath record: which VF, how the pod got it (its netdev moved in, or
// the PCI address and IOMMU group of a VF bound to vfio-pci), the endpoint's side (a macvlan on the PF) and
// the device-info file. The VF's original name, MAC and MTU are not here: they are in its claim
// (./intent.ts), written before the VF is touched, which outlives a crash before this record is journaled.
export interface SriovRecord {
  type: 'SRIOV'
  kind: 'netdev' | 'vfio'
  pciAddress: string
  /** The PF's PCI address and its netdev in the agent's netns (the endpoint side's lower device). */
  pfPciAddress: string
  pf: string
  /** netdev: the MAC set on the VF in the pod (requested, or derived from the connection id). */
  mac: string
  /** vfio: the VF's IOMMU group (/dev/vfio/<group>). */
  iommuGroup?: number
  endpointNetns: string
  endpointIfname: string
  endpointMac: string
  /** The device-info file written for the pod (Network Plumbing WG device-info spec 1.1.0). */
  deviceInfoFile: string
}

export function isSriovRecord(v: unknown): v is SriovRecord {
  if (typeof v !== 'object' || v === null) return false
  const m = v as Record<string, unknown>
  const str = (x: unknown): boolean => typeof x === 'string' && x !== ''
  return (
    m.type === 'SRIOV' &&
    (m.kind === 'netdev' || m.kind === 'vfio') &&
    str(m.pciAddress) &&
    str(m.pfPciAddress) &&
    str(m.pf) &&
    typeof m.mac === 'string' &&
    (m.iommuGroup === undefined || Number.isInteger(m.iommuGroup)) &&
    str(m.endpointNetns) &&
    str(m.endpointIfname) &&
    str(m.endpointMac) &&
    str(m.deviceInfoFile)
  )
}
