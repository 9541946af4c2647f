// The project's one error model: every stable error name, the CNI code a runtime sees for it and the
// gRPC status an API client sees. Pure data, no imports: the CNI shim, the agent, nsm-ipam and nsmctl
// all read it from here, and nothing else defines a code.
//
// CNI codes 1-99 are the spec's (CNI 1.1 "Error codes"); a plugin must not give them another meaning.
// Ours start at 100. Several names may share a CNI code where a runtime should treat them alike (an
// agent's INVALID_ARGUMENT is the runtime's 7, "invalid configuration"), but every name and every code
// is written once, below.

/** gRPC status codes, as numbers on the wire. */
export const GrpcStatus = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5,
  ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10,
  OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
} as const
export type GrpcStatusValue = (typeof GrpcStatus)[keyof typeof GrpcStatus]

interface ErrorDef {
  readonly cni: number
  readonly grpc: GrpcStatusValue
  readonly meaning: string
}

const def = (cni: number, grpc: GrpcStatusValue, meaning: string): ErrorDef => ({ cni, grpc, meaning })
const G = GrpcStatus

/** Every error the project reports, by stable name. */
export const ERRORS = {
  // The CNI spec's codes.
  INCOMPATIBLE_VERSION: def(1, G.FAILED_PRECONDITION, 'incompatible CNI version'),
  UNSUPPORTED_FIELD: def(2, G.INVALID_ARGUMENT, 'unsupported field in the network configuration (the message names key and value)'),
  UNKNOWN_CONTAINER: def(3, G.NOT_FOUND, 'container unknown or does not exist'),
  INVALID_ENVIRONMENT: def(4, G.INVALID_ARGUMENT, 'invalid CNI_* environment variables or CNI_ARGS (the message names them)'),
  IO_FAILURE: def(5, G.INTERNAL, 'I/O failure, e.g. reading stdin'),
  DECODING_FAILURE: def(6, G.INVALID_ARGUMENT, 'cannot decode the input (malformed JSON)'),
  INVALID_CONFIG: def(7, G.INVALID_ARGUMENT, 'invalid network configuration (the message names the field)'),
  TRY_AGAIN_LATER: def(11, G.UNAVAILABLE, 'a transient condition: try again later'),
  NOT_AVAILABLE: def(50, G.UNAVAILABLE, 'STATUS: the plugin cannot serve ADD now'),
  LIMITED_CONNECTIVITY: def(51, G.UNAVAILABLE, 'STATUS: not available, and existing pods may have limited connectivity'),
  // Ours, from 100.
  AGENT_UNREACHABLE: def(100, G.UNAVAILABLE, 'the node agent is not reachable on its socket (the message names it)'),
  NO_ENDPOINT: def(101, G.NOT_FOUND, 'no endpoint for the network service'),
  POOL_EXHAUSTED: def(102, G.RESOURCE_EXHAUSTED, 'no free address in the pool'),
  BAD_NETNS: def(103, G.INVALID_ARGUMENT, 'a netns path is missing, not a network namespace, or refused by the netns policy'),
  MECHANISM_NOT_SUPPORTED: def(104, G.UNIMPLEMENTED, 'no requested mechanism can be served'),
  ANNOTATION_INVALID: def(105, G.INVALID_ARGUMENT, 'a pod annotation is invalid (the message names the entry)'),
  ALREADY_ATTACHED: def(106, G.ALREADY_EXISTS, 'ADD of an attachment that exists already: DEL it first'),
  ADDRESS_UNAVAILABLE: def(107, G.ALREADY_EXISTS, 'a requested address is held by another attachment'),
  STORE_FAILURE: def(108, G.UNAVAILABLE, 'the store cannot be read or written'),
  RESERVATION_MISMATCH: def(109, G.FAILED_PRECONDITION, 'CHECK: the reservations do not match the configuration or prevResult'),
  DATAPATH_MISMATCH: def(110, G.FAILED_PRECONDITION, 'CHECK: the datapath or prevResult does not match the attachment'),
  INTERNAL: def(111, G.INTERNAL, 'an internal failure (a bug): the message says where'),
  ENDPOINT_NOT_ALLOWED: def(112, G.PERMISSION_DENIED, 'the registration policy does not let this pod offer the service, or not that route or pool'),
  // Agent API errors without a code of their own: the CNI code a runtime sees for them.
  INVALID_ARGUMENT: def(7, G.INVALID_ARGUMENT, 'a request field is missing or malformed (the message names the field)'),
  NOT_FOUND: def(11, G.NOT_FOUND, 'the connection, endpoint, service or pod does not exist (yet)'),
  ALREADY_EXISTS: def(11, G.ALREADY_EXISTS, 'the object exists already'),
  FAILED_PRECONDITION: def(11, G.FAILED_PRECONDITION, 'the request cannot be served in the current state'),
  UNAVAILABLE: def(11, G.UNAVAILABLE, 'the agent is not ready or is shutting down'),
  CANCELLED: def(11, G.CANCELLED, 'the call was cancelled or its deadline passed'),
  UNIMPLEMENTED: def(111, G.UNIMPLEMENTED, 'the method is not served'),
} as const satisfies Record<string, ErrorDef>

export type ErrorName = keyof typeof ERRORS

/** CNI codes by name: `CniCode.NO_ENDPOINT === 101`. */
export const CniCode = Object.fromEntries(Object.entries(ERRORS).map(([k, v]) => [k, v.cni])) as { readonly [K in ErrorName]: (typeof ERRORS)[K]['cni'] }

export function isErrorName(s: string): s is ErrorName {
  return Object.prototype.hasOwnProperty.call(ERRORS, s)
}
