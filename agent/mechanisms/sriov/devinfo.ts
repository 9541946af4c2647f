// The device-info file of a VF for its pod, as the Kubernetes Network Plumbing WG Device Information
// Specification 1.1.0 defines it: `{"type": "pci", "version": "1.1.0", "pci": {"pci-address", "pf-pci-address"}}`.
// Multus reads the CNI variant (`/var/run/k8s.cni.cncf.io/devinfo/cni/<name>`, the path it passes as
// runtimeConfig.CNIDeviceInfoFile) after the plugin chain and puts it into the pod's network-status
// annotation. Written atomically (temp file + rename); removed when the VF is given back.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, dirname, isAbsolute, join, normalize } from 'node:path'

export const DEVICE_INFO_VERSION = '1.1.0'
/** The spec's directory for CNI Plugin Device Information Files. */
export const DEFAULT_DEVINFO_DIR = '/var/run/k8s.cni.cncf.io/devinfo/cni'

export interface DeviceInfo {
  type: 'pci'
  version: string
  pci: { 'pci-address': string; 'pf-pci-address'?: string }
}

export function deviceInfo(pciAddress: string, pfPciAddress: string | undefined): DeviceInfo {
  return { type: 'pci', version: DEVICE_INFO_VERSION, pci: { 'pci-address': pciAddress, ...(pfPciAddress === undefined ? {} : { 'pf-pci-address': pfPciAddress }) } }
}

/**
 * Where the file goes: `requested` is a file name (put in `dir`) or an absolute path that must lie in
 * `dir` (the agent writes nowhere else); empty: `nsm-<connection id>-device.json` in `dir`. Returns the
 * path, or a problem for the error message.
 */
export function deviceInfoPath(dir: string, requested: string, connectionId: string): { path: string } | { problem: string } {
  const name = requested === '' ? `nsm-${connectionId}-device.json` : requested
  if (isAbsolute(name)) {
    const p = normalize(name)
    if (dirname(p) !== normalize(dir)) return { problem: `${JSON.stringify(name)} is not in the agent's device-info directory ${dir} (--devinfo-dir)` }
    return { path: p }
  }
  if (name !== basename(name) || name === '.' || name === '..' || Buffer.byteLength(name) > 255) return { problem: `${JSON.stringify(name)} is not a file name` }
  return { path: join(dir, name) }
}

export function writeDeviceInfo(path: string, info: DeviceInfo): void {
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.nsm-tmp`
  writeFileSync(tmp, JSON.stringify(info))
  renameSync(tmp, path)
}

export function removeDeviceInfo(path: string): void {
  rmSync(path, { force: true })
  rmSync(`${path}.nsm-tmp`, { force: true })
}
