// The SR-IOV mechanism (ARCHITECTURE §8): a client is given a VF of an SR-IOV NIC, named by its PCI address
// (NSM's `pciAddress` mechanism parameter; the CNI layer fills it from Multus's deviceID or the device
// plugin's PCIDEVICE_* variable). Two forms, told apart by the VF's driver in sysfs (./sysfs.ts):
//
// - KERNEL VF (a KERNEL request carrying `pciAddress`): the VF's netdev is moved into the client's netns,
//   renamed to the requested name, given its MAC (the requested ethernet_context.src_mac, else one derived
//   from the connection id), the MTU, the client's addresses and routes, and set up. The answer is a
//   KERNEL mechanism with `pciAddress` (the CNI result's `pciID`).
// - VFIO (a VFIO request, or a KERNEL one for a VF bound to vfio-pci: it has no netdev): nothing is moved;
//   DPDK in the pod opens /dev/vfio/<group>. The answer is NSM's VFIO mechanism with `pciAddress` and
//   `iommuGroup`. The client's addresses are in the answer's IP context for the pod's application.
//
// The endpoint's side. The pipeline's model is kept whole: the IPAM element allocates a point-to-point
// pair from the endpoint's pool, the client's address goes on the VF and the endpoint's on an interface in
// the endpoint's netns that reaches the VF. A VF's traffic leaves through its PF's embedded switch, which
// also switches between a VF and the PF's own MACs, so that interface is a macvlan on the PF, moved into
// the endpoint's netns (./endpoint.ts): one L2 segment VF <-> PF <-> macvlan, no forwarder in between.
// This needs the PF's netdev in the agent's netns (a PF in switchdev mode, or one given to a pod, is refused
// with a message saying so). In the tests the "VF" is one end of a veth pair and the "PF" its other end,
// both in the host netns: the same wiring, the embedded switch replaced by the veth.
//
// Crash safety. Everything the mechanism changes on a VF is changed after its claim (./intent.ts) is
// durably written with the VF's original name, MAC, MTU and alias; the claim also makes a VF one pod's
// (a second request for it is refused before anything changes). The VF is tagged `nsm-vf:<id>` first
// and found by that tag wherever a crash left it (./vf.ts). Give-back runs on close (CNI DEL, GC, a
// client netns that vanished), on a failed build, and from the orphan sweep for claims whose connection
// is neither journaled nor being built (an agent killed between the move and the journal), which runs at
// every start. The endpoint's macvlan carries the usual `nsm-cni:<id>` tag and is swept like a veth.
//
// Device info: a file per the Network Plumbing WG device-info spec 1.1.0 (./devinfo.ts) for the pod, at
// the `deviceInfoFile` parameter's place in the device-info directory (the CNI layer passes Multus's
// CNIDeviceInfoFile), removed when the VF is given back.
import { KernelError } from '../../../pkg/errors.js'
import { getLink, type NetlinkSessions } from '../../../pkg/netlink/index.js'
import { netnsKey } from '../../../pkg/netns.js'
import { netnsFileUrl } from '../../../pkg/netns-url.js'
import type { ConnectionContext } from '../../../proto/gen/networkservice/connectioncontext.js'
import { AgentError } from '../../errors.js'
import type { Logger } from '../../server/log.js'
import { checkEnd } from '../kernel/check.js'
import { clientMac, endpointIfname, linkTag } from '../kernel/names.js'
import { endpointMac } from '../vxlan/index.js'
import type { CheckProblem, ClientSide, DatapathRecord, Mechanism, PlanInput, RequestedMechanism, Route, SweptLink } from '../types.js'
import { deviceInfo, deviceInfoPath, removeDeviceInfo, writeDeviceInfo } from './devinfo.js'
import { buildEndpointSide, removeEndpointSide } from './endpoint.js'
import { ClaimExistsError, ClaimStore, type VfClaim } from './intent.js'
import type { SriovRecord } from './record.js'
import { canonicalPciAddress, readPciDevice, SysfsError, VFIO_DRIVER, type PciDevice } from './sysfs.js'
import { giveBack, takeVf, vfTag, type TakeStep } from './vf.js'
import { connectionContextOf, ipContextOfRecord } from '../record.js'
import { forwardingSwitch } from '../forwarding.js'

export { canonicalPciAddress, readPciDevice, VFIO_DRIVER } from './sysfs.js'
export { DEFAULT_DEVINFO_DIR, DEVICE_INFO_VERSION } from './devinfo.js'
export { isSriovRecord, type SriovRecord } from './record.js'
export { vfTag, VF_TAG_PREFIX, type TakeStep } from './vf.js'

export const SRIOV = 'SRIOV'
/** NSM's parameter keys (api: common.PCIAddressKey, vfio.IommuGroupKey). */
export const PCI_ADDRESS_PARAM = 'pciAddress'
export const IOMMU_GROUP_PARAM = 'iommuGroup'
/** Ours: where the device-info file goes (a name in the device-info directory, or a path in it). */
export const DEVICE_INFO_PARAM = 'deviceInfoFile'

export interface SriovMechanismOptions {
  sessions: NetlinkSessions
  /** `--sysfs-root` (default /sys). */
  sysfsRoot: string
  /** Where device-info files are written (`--devinfo-dir`). */
  devinfoDir: string
  /** Where VF claims are kept (`<state dir>/sriov`). */
  claimDir: string
  /** The client side (`name`, `inodeURL` through the netns policy) as the KERNEL mechanism parses it. */
  clientSide(requested: RequestedMechanism, field: string): ClientSide
  log?: Logger
  /** A test seam: called after each step of taking a VF; a throw there is a failure at that step. */
  afterStep?: (step: TakeStep) => void | Promise<void>
}

interface ParsedRequest {
  pci: string
  device: PciDevice
  kind: 'netdev' | 'vfio'
  deviceInfoFile: string
}

export function sriovMechanism(opts: SriovMechanismOptions): Mechanism {
  const { sessions } = opts
  const claims = new ClaimStore(opts.claimDir)
  const enableForwarding = forwardingSwitch(sessions)
  const sriov = (rec: DatapathRecord): SriovRecord => {
    if (rec.mechanism.type !== SRIOV) throw new AgentError('INTERNAL', `connection ${rec.connectionId}: a ${rec.mechanism.type} record reached the SR-IOV mechanism`)
    return rec.mechanism
  }

  /** The VF a request names, judged against sysfs; INVALID_ARGUMENT naming the parameter. */
  const parse = (requested: RequestedMechanism, field: string, connectionId: string, client: ClientSide): ParsedRequest => {
    const pField = `${field}.parameters.${PCI_ADDRESS_PARAM}`
    const text = requested.parameters[PCI_ADDRESS_PARAM] ?? ''
    if (text === '') throw AgentError.invalid(pField, `is required for ${requested.type === 'VFIO' ? 'a VFIO mechanism' : 'an SR-IOV VF'} (the VF's PCI address)`)
    const pci = canonicalPciAddress(text)
    if (pci === undefined) throw AgentError.invalid(pField, `${JSON.stringify(text)} is not a PCI address (dddd:bb:dd.f)`)
    let device: PciDevice
    try {
      device = readPciDevice(opts.sysfsRoot, pci)
    } catch (err) {
      if (err instanceof SysfsError) throw AgentError.invalid(pField, err.message)
      throw err
    }
    if (device.pf === undefined) throw AgentError.invalid(pField, `PCI device ${pci} is not an SR-IOV VF (it has no physfn)`)
    const kind = device.driver === VFIO_DRIVER ? 'vfio' : 'netdev'
    if (requested.type === 'VFIO' && kind !== 'vfio') throw AgentError.invalid(pField, `VF ${pci} is bound to ${device.driver ?? 'no driver'}, not ${VFIO_DRIVER}: a VFIO mechanism needs it bound to ${VFIO_DRIVER}`)
    if (kind === 'vfio' && device.iommuGroup === undefined) throw AgentError.invalid(pField, `VF ${pci} is bound to ${VFIO_DRIVER} but has no IOMMU group`)
    const holder = claims.get(pci)
    const ours = holder !== undefined && ((connectionId !== '' && holder.connectionId === connectionId) || (holder.netns === client.netns && holder.ifname === client.ifname))
    if (holder !== undefined && !ours) throw AgentError.invalid(pField, `VF ${pci} is in use by connection ${holder.connectionId} (${holder.ifname} in ${holder.netns})`)
    // A VF in its pod already (this attachment asking again: a refresh, a heal) is not in our netns.
    if (kind === 'netdev' && device.netdevs.length === 0 && !ours) {
      throw AgentError.invalid(pField, `VF ${pci} has no network device in the agent's netns (in a pod's already, or its driver ${device.driver ?? '(none)'} made none)`)
    }
    const dField = `${field}.parameters.${DEVICE_INFO_PARAM}`
    const where = deviceInfoPath(opts.devinfoDir, requested.parameters[DEVICE_INFO_PARAM] ?? '', connectionId)
    if ('problem' in where) throw AgentError.invalid(dField, where.problem)
    return { pci, device, kind, deviceInfoFile: where.path }
  }

  const ipContext = ipContextOfRecord

  /** Gives back a claimed VF and removes what was made for it (its device-info file); then the claim. */
  const release = async (claim: VfClaim): Promise<void> => {
    if (claim.kind === 'netdev') {
      const r = await giveBack(sessions, claim, (msg, fields) => opts.log?.warn(msg, { connection: claim.connectionId, ...fields }))
      if (r === 'missing') opts.log?.warn('the VF is nowhere to be found (gone with its pod netns?): its claim is dropped', { connection: claim.connectionId, pciAddress: claim.pciAddress, original: claim.original?.name ?? null })
    }
    removeDeviceInfo(claim.deviceInfoFile)
    claims.remove(claim.pciAddress)
  }

  const remove = async (rec: DatapathRecord): Promise<void> => {
    const m = sriov(rec)
    await removeEndpointSide(sessions, { connectionId: rec.connectionId, netns: m.endpointNetns, ifname: m.endpointIfname }, (alias) =>
      opts.log?.warn("link is not ours (not this connection's tag): left alone", { connection: rec.connectionId, netns: m.endpointNetns, ifname: m.endpointIfname, alias: alias ?? null }),
    )
    const claim = claims.get(m.pciAddress)
    if (claim !== undefined && claim.connectionId === rec.connectionId) await release(claim)
    else removeDeviceInfo(m.deviceInfoFile)
  }

  const check = async (rec: DatapathRecord): Promise<CheckProblem[]> => {
    const m = sriov(rec)
    const problems: CheckProblem[] = []
    const add = (code: string, message: string): void => {
      problems.push({ code, message, connectionId: rec.connectionId })
    }
    const claim = claims.get(m.pciAddress)
    if (claim?.connectionId !== rec.connectionId) add('link-missing', `VF ${m.pciAddress} is not claimed for this connection${claim === undefined ? '' : ` (connection ${claim.connectionId} holds it)`}`)
    if (m.kind === 'netdev') {
      const client = await checkEnd(sessions, rec.connectionId, { side: 'client', netns: rec.clientNetns, ifname: rec.clientIfname, tag: vfTag(rec.connectionId), addresses: rec.ipContext.src, routes: rec.ipContext.srcRoutes })
      // kernel/check.ts judges the kind against a veth: a VF is whatever its driver makes it.
      problems.push(...client.filter((p) => p.code !== 'link-mismatch'))
      if (!client.some((p) => ['netns-missing', 'link-missing', 'link-foreign', 'check-failed'].includes(p.code))) {
        const link = await getLink(sessions.forNetns(rec.clientNetns), rec.clientIfname).catch(() => undefined)
        if (link !== undefined && link.mac !== m.mac) add('link-mismatch', `client interface ${rec.clientIfname} in ${rec.clientNetns} has MAC ${link.mac ?? 'none'}, not ${m.mac}`)
        if (link !== undefined && link.mtu !== rec.mtu) add('link-mismatch', `client interface ${rec.clientIfname} in ${rec.clientNetns} has MTU ${String(link.mtu)}, not ${rec.mtu}`)
      }
    } else {
      let device: PciDevice | undefined
      try {
        device = readPciDevice(opts.sysfsRoot, m.pciAddress)
      } catch (err) {
        add('link-missing', `VF ${m.pciAddress}: ${err instanceof Error ? err.message : String(err)}`)
      }
      if (device !== undefined && device.driver !== VFIO_DRIVER) add('link-mismatch', `VF ${m.pciAddress} is bound to ${device.driver ?? 'no driver'}, not ${VFIO_DRIVER}`)
      if (device !== undefined && device.iommuGroup !== m.iommuGroup) add('link-mismatch', `VF ${m.pciAddress} is in IOMMU group ${String(device.iommuGroup)}, not ${String(m.iommuGroup)}`)
    }
    const ep = await checkEnd(sessions, rec.connectionId, { side: 'endpoint', netns: m.endpointNetns, ifname: m.endpointIfname, tag: linkTag(rec.connectionId), addresses: rec.ipContext.dst, routes: rec.ipContext.dstRoutes })
    problems.push(...ep.filter((p) => p.code !== 'link-mismatch'))
    return problems
  }

  return {
    type: SRIOV,
    serves: ['KERNEL', 'VFIO'],
    accepts: (r) => r.type === 'VFIO' || (r.parameters[PCI_ADDRESS_PARAM] ?? '') !== '',

    parseRequest(requested, field) {
      const { [PCI_ADDRESS_PARAM]: _pci, [DEVICE_INFO_PARAM]: _file, [IOMMU_GROUP_PARAM]: _group, ...rest } = requested.parameters
      const client = opts.clientSide({ ...requested, parameters: rest }, field)
      parse(requested, field, '', client)
      return client
    },

    plan(input: PlanInput): SriovRecord {
      const field = 'mechanism_preferences'
      const requested = input.requested
      if (requested === undefined) throw new AgentError('INTERNAL', 'SR-IOV plan: no requested mechanism')
      if (!input.endpoint.local || input.endpoint.netns === '') throw AgentError.invalid(field, `endpoint ${input.endpoint.name} is not on this node: an SR-IOV VF reaches endpoints on its own node only`)
      const p = parse(requested, field, input.connection.id, input.client)
      const pf = p.device.pf
      if (pf === undefined || pf.netdevs[0] === undefined) throw new AgentError('FAILED_PRECONDITION', `VF ${p.pci}: its PF ${pf?.pciAddress ?? '?'} has no network device in the agent's netns, so the endpoint side (a macvlan on the PF) cannot be made`)
      const srcMac = input.connection.context?.ethernetContext?.srcMac ?? ''
      return {
        type: SRIOV,
        kind: p.kind,
        pciAddress: p.pci,
        pfPciAddress: pf.pciAddress,
        pf: pf.netdevs[0],
        mac: p.kind === 'vfio' ? '' : srcMac !== '' ? srcMac.toLowerCase() : clientMac(input.connection.id),
        ...(p.kind === 'vfio' && p.device.iommuGroup !== undefined ? { iommuGroup: p.device.iommuGroup } : {}),
        endpointNetns: input.endpoint.netns,
        endpointIfname: endpointIfname(input.connection.id),
        endpointMac: endpointMac(input.connection.id),
        deviceInfoFile: p.deviceInfoFile,
      }
    },

    async build(rec) {
      const m = sriov(rec)
      const pField = `mechanism_preferences.parameters.${PCI_ADDRESS_PARAM}`
      let device: PciDevice
      try {
        device = readPciDevice(opts.sysfsRoot, m.pciAddress)
      } catch (err) {
        throw AgentError.invalid(pField, err instanceof Error ? err.message : String(err))
      }
      let claim: VfClaim = { version: 1, pciAddress: m.pciAddress, connectionId: rec.connectionId, kind: m.kind, netns: rec.clientNetns, ifname: rec.clientIfname, deviceInfoFile: m.deviceInfoFile }
      let vf: Awaited<ReturnType<typeof getLink>>
      if (m.kind === 'netdev') {
        const name = device.netdevs[0]
        vf = name === undefined ? undefined : await getLink(sessions.host(), name)
        if (vf === undefined) throw AgentError.invalid(pField, `VF ${m.pciAddress} has no network device in the agent's netns${name === undefined ? '' : ` (sysfs names ${name}, which is not there)`}: in use by a pod?`)
        if (vf.alias?.startsWith('nsm-') === true) throw AgentError.invalid(pField, `VF ${m.pciAddress} (${vf.name}) carries another connection's tag ${vf.alias}`)
        claim = { ...claim, original: { name: vf.name, mac: vf.mac, mtu: vf.mtu, alias: vf.alias }, tag: vfTag(rec.connectionId) }
      }
      try {
        claims.create(claim)
      } catch (err) {
        if (err instanceof ClaimExistsError) throw AgentError.invalid(pField, `VF ${m.pciAddress} is in use by ${err.holder === undefined ? 'another connection' : `connection ${err.holder.connectionId} (${err.holder.ifname} in ${err.holder.netns})`}`)
        throw err
      }
      try {
        if (m.kind === 'netdev' && vf !== undefined) {
          try {
            await takeVf(sessions, claim, vf, { mac: m.mac, mtu: rec.mtu, addresses: rec.ipContext.src, routes: rec.ipContext.srcRoutes }, opts.afterStep)
          } catch (err) {
            throw translate(err, rec)
          }
        }
        await buildEndpointSide(sessions, { connectionId: rec.connectionId, pf: m.pf, netns: m.endpointNetns, ifname: m.endpointIfname, mtu: rec.mtu, mac: m.endpointMac, addresses: rec.ipContext.dst, routes: rec.ipContext.dstRoutes })
        const forwards = (routes: readonly Route[]): boolean => routes.some((r) => r.nextHop !== '')
        if (forwards(rec.ipContext.srcRoutes)) enableForwarding(m.endpointNetns)
        if (m.kind === 'netdev' && forwards(rec.ipContext.dstRoutes)) enableForwarding(rec.clientNetns)
        writeDeviceInfo(m.deviceInfoFile, deviceInfo(m.pciAddress, m.pfPciAddress))
      } catch (err) {
        await removeEndpointSide(sessions, { connectionId: rec.connectionId, netns: m.endpointNetns, ifname: m.endpointIfname }).catch(() => undefined)
        await release(claim).catch((undo: unknown) => opts.log?.error('giving the VF back after a failed build failed: the sweep retries', { connection: rec.connectionId, pciAddress: m.pciAddress, err: undo }))
        throw err
      }
    },

    remove,
    close: remove,
    check,

    async reconcile(rec) {
      if (netnsKey(rec.clientNetns) === undefined) return { state: 'client-gone' }
      const problems = await check(rec)
      return problems.length === 0 ? { state: 'intact' } : { state: 'broken', problems }
    },

    namespaces(rec) {
      return [rec.clientNetns, sriov(rec).endpointNetns]
    },

    /**
     * Claims whose connection is neither journaled nor being built (an agent killed between taking a VF
     * and journaling it, or a failed give-back): the VF is given back. Endpoint sides are `nsm-cni:`-tagged
     * links the KERNEL sweep deletes.
     */
    async sweep(input) {
      const found = claims.all()
      if (found.length === 0) return []
      const live = input.live()
      const swept: SweptLink[] = []
      for (const claim of found) {
        if (live.has(claim.connectionId)) continue
        try {
          await release(claim)
          opts.log?.warn('gave back a VF no connection owns (left by a crash)', { connection: claim.connectionId, pciAddress: claim.pciAddress, name: claim.original?.name ?? null })
          swept.push({ netns: claim.netns, ifname: claim.ifname, tag: claim.tag ?? claim.pciAddress })
        } catch (err) {
          opts.log?.error('cannot give back a VF left by a crash: retried on the next sweep', { connection: claim.connectionId, pciAddress: claim.pciAddress, err })
        }
      }
      return swept
    },

    ipContext,

    connectionMechanism(rec) {
      const m = sriov(rec)
      const common = { name: rec.clientIfname, inodeURL: netnsFileUrl(rec.clientNetns), [PCI_ADDRESS_PARAM]: m.pciAddress, [DEVICE_INFO_PARAM]: m.deviceInfoFile }
      if (m.kind === 'vfio') return { cls: 'LOCAL', type: 'VFIO', parameters: { ...common, [IOMMU_GROUP_PARAM]: String(m.iommuGroup ?? '') } }
      return { cls: 'LOCAL', type: 'KERNEL', parameters: common }
    },

    context(rec, requested): ConnectionContext {
      const m = sriov(rec)
      return connectionContextOf(rec, requested, { srcMac: m.mac, dstMac: m.endpointMac })
    },
  }
}

function translate(err: unknown, rec: DatapathRecord): unknown {
  if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) return new AgentError('BAD_NETNS', err.message, { cause: err })
  if (KernelError.is(err, 'EXISTS')) {
    if (err.message.startsWith('move link')) return new AgentError('ALREADY_EXISTS', `interface ${rec.clientIfname} already exists in ${rec.clientNetns}`, { cause: err })
    return new AgentError('ADDRESS_UNAVAILABLE', `addresses ${rec.ipContext.src.join(', ')}: an address or route of them is already in use in ${rec.clientNetns} (client side)`, { cause: err })
  }
  return err
}

/** A MAC in the kernel's spelling (lower case, colons), or undefined when `text` is none. */
export function canonicalMac(text: string): string | undefined {
  const t = text.trim().toLowerCase().replace(/-/g, ':')
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(t) ? t : undefined
}
