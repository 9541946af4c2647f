// agent/mechanisms: one module per mechanism, each owning its datapath (./types.ts says what that means),
// and the registry the pipeline, CHECK and healing pick them from.
export { MechanismRegistry } from './registry.js'
export { decodeDatapathRecord, sameDatapath } from './record.js'
export { kernelMechanism, clientMac, endpointIfname, linkTag, LINK_TAG_PREFIX, type KernelMechanismOptions, type KernelRecord } from './kernel/index.js'
export type { AppliedIpContext, CheckProblem, ClientSide, DatapathRecord, Mechanism, MechanismRecord, PlanInput, ReconcileVerdict, RequestedMechanism, Route, SweepInput, SweptLink } from './types.js'
