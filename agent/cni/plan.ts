// What one ADD attaches (ARCHITECTURE §4 steps 2-3, §5, §6): the services in resolution order, the mode, the
// interface name of each connection, the client labels, and the services the pod offers as an endpoint.
//
// Resolution: netconf networkService(s) → args.cni.networkServices → CNI_ARGS NSM_NETWORK_SERVICES → the
// pod's annotations (v1 `networkservicemesh.io`, then legacy `ns.networkservicemesh.io`) via GetPodInfo.
// Modes: *attachment* (no prevResult): one service, interface CNI_IFNAME; *chained* (prevResult): one
// interface per service, named by its entry or nsm-1, nsm-2, ... (names prevResult already uses skipped).
// A chained pod that asks for nothing gets prevResult back unchanged (nsm sits in every pod's conflist).
// Client labels, later wins: netconf `labels`, pod labels, the entry's query labels, then podName,
// namespace, nodeName. Pure: the pod comes in already looked up.
import {
  ANNOTATION_ENDPOINT,
  assignInterfaceNames,
  parseEndpointAnnotation,
  serviceRequestsFromAnnotations,
  type EndpointOffer,
  type ServiceRequest,
} from '../../conf/annotations.js'
import { ConfError } from '../../conf/errors.js'
import type { PodInfo } from '../podinfo/types.js'
import { CniCode, CniError, type CniResult } from '../../cni/protocol/index.js'
import type { NsmConfig } from './config.js'

export interface PlannedInterface {
  /** The connection id: `<CNI_CONTAINERID>-<ifname>` (ARCHITECTURE §3). */
  id: string
  ifname: string
  request: ServiceRequest
  labels: Record<string, string>
}

export interface Plan {
  mode: 'attachment' | 'chained'
  interfaces: PlannedInterface[]
  offers: EndpointOffer[]
  /** Where the services came from, for messages. */
  source: string
}

/** The loopback interface: in every netns already, never one nsm can make. */
const LOOPBACK = 'lo'

export function connectionId(containerId: string, ifname: string): string {
  return `${containerId}-${ifname}`
}

function annotationError(err: unknown): CniError {
  if (err instanceof ConfError) return new CniError(CniCode.ANNOTATION_INVALID, `pod annotation ${err.message}`, { cause: err })
  return CniError.from(err)
}

/** Labels every request of this call carries (before the entry's own). */
export function baseLabels(cfg: NsmConfig, pod: PodInfo | undefined): { before: Record<string, string>; after: Record<string, string> } {
  const after: Record<string, string> = {}
  const name = pod?.name || cfg.pod?.name
  const namespace = pod?.namespace || cfg.pod?.namespace
  if (name) after.podName = name
  if (namespace) after.namespace = namespace
  if (pod?.nodeName) after.nodeName = pod.nodeName
  return { before: { ...cfg.labels, ...(pod?.labels ?? {}) }, after }
}

export interface PlanInput {
  cfg: NsmConfig
  containerId: string
  ifname: string
  prevResult: CniResult | undefined
  pod: PodInfo | undefined
}

export function makePlan(input: PlanInput): Plan {
  const { cfg, containerId, prevResult, pod } = input
  let requests: ServiceRequest[]
  let source: string
  if (cfg.explicit !== undefined) {
    requests = cfg.explicit.requests
    source = cfg.explicit.field
  } else {
    source = pod === undefined ? 'none' : `pod ${pod.namespace}/${pod.name} annotations`
    try {
      requests = pod === undefined ? [] : serviceRequestsFromAnnotations(pod.annotations)
    } catch (err) {
      throw annotationError(err)
    }
  }
  // The network's mechanism (netconf `mechanism`) for entries that name none.
  const netMechanism = cfg.mechanism
  if (netMechanism !== undefined) requests = requests.map((r) => (r.entry.includes('://') ? r : { ...r, mechanism: netMechanism }))
  let offers: EndpointOffer[] = []
  const offerText = pod?.annotations[ANNOTATION_ENDPOINT]
  if (offerText !== undefined) {
    try {
      offers = parseEndpointAnnotation(offerText)
    } catch (err) {
      throw annotationError(err)
    }
  }
  const { before, after } = baseLabels(cfg, pod)
  const labelsOf = (r: ServiceRequest): Record<string, string> => ({ ...before, ...r.labels, ...after })

  if (prevResult === undefined) {
    // Attachment mode: one service on CNI_IFNAME. Every netns has `lo`: asking for it can never succeed,
    // so it is the runtime's bad input (4), not "try again".
    if (input.ifname === LOOPBACK) throw new CniError(CniCode.INVALID_ENVIRONMENT, `CNI_IFNAME "${LOOPBACK}" is the loopback interface every network namespace has: nsm cannot create it`)
    if (requests.length === 0) {
      if (offers.length > 0) return { mode: 'attachment', interfaces: [], offers, source }
      throw new CniError(
        CniCode.INVALID_CONFIG,
        `networkService: no network service to attach: set networkService or networkServices in the network configuration, args.cni.networkServices, CNI_ARGS NSM_NETWORK_SERVICES, or annotate the pod (networkservicemesh.io)${cfg.pod === undefined ? ' and pass K8S_POD_NAMESPACE/K8S_POD_NAME' : ''}`,
      )
    }
    let chosen = requests[0] as ServiceRequest
    if (requests.length > 1) {
      const named = requests.filter((r) => r.ifname === input.ifname)
      if (named.length !== 1) {
        const code = cfg.explicit === undefined ? CniCode.ANNOTATION_INVALID : CniCode.INVALID_CONFIG
        throw new CniError(code, `${source}: ${requests.length} services for one attachment (${requests.map((r) => r.entry).join(', ')}): attachment mode attaches one service on ${input.ifname}; name it (service/${input.ifname}) or chain nsm after the cluster network`)
      }
      chosen = named[0] as ServiceRequest
    }
    return { mode: 'attachment', interfaces: [{ id: connectionId(containerId, input.ifname), ifname: input.ifname, request: chosen, labels: labelsOf(chosen) }], offers, source }
  }

  // Chained mode: one interface per service, beside what the previous plugins made.
  const taken = new Set((prevResult.interfaces ?? []).filter((i) => i.sandbox !== undefined && i.sandbox !== '').map((i) => i.name))
  taken.add(input.ifname)
  const loop = requests.find((r) => r.ifname === LOOPBACK)
  if (loop !== undefined) {
    const code = cfg.explicit === undefined ? CniCode.ANNOTATION_INVALID : CniCode.INVALID_CONFIG
    throw new CniError(code, `${source}: ${JSON.stringify(loop.entry)}: interface ${LOOPBACK} is the loopback interface every network namespace has: name another`)
  }
  const clash = requests.find((r) => r.ifname !== undefined && taken.has(r.ifname))
  if (clash !== undefined) {
    const code = cfg.explicit === undefined ? CniCode.ANNOTATION_INVALID : CniCode.INVALID_CONFIG
    throw new CniError(code, `${source}: ${JSON.stringify(clash.entry)}: interface ${clash.ifname ?? ''} is already made by an earlier plugin of the chain`)
  }
  // Generated names skip those the earlier plugins took: reserve them as placeholder requests.
  const placeholders: ServiceRequest[] = [...taken].map((name) => ({ service: 'x', ifname: name, mechanism: 'kernel', labels: {}, entry: '' }))
  let named: Array<ServiceRequest & { ifname: string }>
  try {
    named = assignInterfaceNames([...placeholders, ...requests]).slice(placeholders.length)
  } catch (err) {
    throw annotationError(err)
  }
  return {
    mode: 'chained',
    interfaces: named.map((r) => ({ id: connectionId(containerId, r.ifname), ifname: r.ifname, request: r, labels: labelsOf(r) })),
    offers,
    source,
  }
}
