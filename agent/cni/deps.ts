// What the CNI handlers use of the agent, in-process: the request pipeline (the same handler the NSM API's
// Request/Close go through), the connection table, the registry, the pod-info source, the datapath
// check, readiness. agent/main.ts supplies them; tests build them around a real dataplane.
import type { ConnectionEntry, ConnectionTable } from '../connections/table.js'
import type { Registry } from '../registry/registry.js'
import type { PodInfoSource } from '../podinfo/types.js'
import type { CheckProblem } from '../../proto/gen/nsmcni/nsmcni.js'
import type { NetworkServiceHandler } from '../server/handler.js'
import type { Logger } from '../server/log.js'
import { CniError } from '../../cni/protocol/index.js'
import type { ShimAnswer } from '../../cni/nsm/frame.js'
import { AgentError } from '../errors.js'
import type { NetnsPolicy } from '../../pkg/netns-policy.js'
import type { OfferRule } from '../../conf/endpoint-policy.js'

export interface Readiness {
  ready: boolean
  reason: string
}

export interface CniDeps {
  handler(): NetworkServiceHandler
  table: ConnectionTable
  registry: Registry
  podInfo(): PodInfoSource | undefined
  /** The kernel half of CHECK: problems found for one connection's datapath (none = intact). */
  check(entry: ConnectionEntry): Promise<CheckProblem[]>
  /** The agent's one netns policy: CNI_NETNS is judged by it before anything is made. */
  netns: NetnsPolicy
  /** The agent config's registration policy rules (conf/endpoint-policy.ts), besides each service's own. */
  endpointPolicy: readonly OfferRule[]
  /** Lifetime of endpoint pods' registrations; undefined: ten years (the file store: no refresh needed). */
  endpointLifetimeMs?: number
  readiness(): Readiness
  /** Aborted when the agent shuts down: work in flight is cancelled. */
  shutdown: AbortSignal
  log: Logger
  /** Metrics and traces of each call (agent/metrics, agent/tracing); none: the call runs as it is. */
  observe?: CniObserver
}

/** One CNI call as the agent receives it from the shim, before the protocol layer judges it. */
export interface CniCall {
  command: string
  containerId: string
  ifname: string
  /** `namespace/name` from CNI_ARGS K8S_POD_NAMESPACE / K8S_POD_NAME. */
  pod?: string
  /** W3C trace context the runtime passed (CNI_ARGS TRACEPARENT, or the plugin's TRACEPARENT variable). */
  traceparent?: string
  tracestate?: string
}

/** Around one CNI call: runs `run` once and answers what it answered. */
export type CniObserver = (call: CniCall, run: () => Promise<ShimAnswer>) => Promise<ShimAnswer>

/**
 * The one mapping of an agent failure to the CNI error the runtime sees: the code from the error model
 * (pkg/codes.ts), the agent's message prefixed with the step that failed. A CniError passes as it is.
 */
export function toCniError(err: unknown, step?: string): CniError {
  if (err instanceof CniError) return err
  const e = AgentError.from(err)
  return new CniError(e.cniCode, step === undefined ? e.message : `${step}: ${e.message}`, { cause: err })
}
