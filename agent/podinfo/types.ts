// The pod-info contract: how the agent learns a pod's labels and annotations from K8S_POD_NAMESPACE /
// K8S_POD_NAME (ARCHITECTURE §4 step 2, §5, §6 client labels). Two sources implement it: the Kubernetes API
// (kubernetes.ts) and a pod-info directory for runs without Kubernetes (directory.ts).
//
// Contract of `get`: resolves the pod, or undefined when the source knows the pod does not exist; rejects
// with PodInfoError: INVALID_NAME (namespace/name not a Kubernetes name: also keeps `../` out of paths),
// INVALID_FILE (a pod-info file that does not validate, naming the file and field), UNAVAILABLE (the
// source cannot answer yet, e.g. the API server was never reached). `close` stops background work and
// settles pending `get`s with undefined; it is idempotent.

export interface PodInfo {
  namespace: string
  name: string
  uid: string
  nodeName: string
  labels: Record<string, string>
  annotations: Record<string, string>
}

export interface PodInfoSource {
  get(namespace: string, name: string): Promise<PodInfo | undefined>
  close(): void
}

export type PodInfoErrorCode =
  | 'INVALID_NAME' // namespace or pod name is not a valid Kubernetes name
  | 'INVALID_FILE' // a pod-info file is not JSON or a field has the wrong shape
  | 'UNAVAILABLE' // the source could not answer (API server not reached, directory unreadable)
  | 'CONFIG' // no usable Kubernetes client configuration

export class PodInfoError extends Error {
  override readonly name = 'PodInfoError'
  readonly code: PodInfoErrorCode

  constructor(code: PodInfoErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.code = code
  }

  static is(err: unknown, code?: PodInfoErrorCode): err is PodInfoError {
    return err instanceof PodInfoError && (code === undefined || err.code === code)
  }
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/

/** Throws INVALID_NAME unless namespace is a DNS-1123 label and name a DNS-1123 subdomain (Kubernetes' rules). */
export function checkPodRef(namespace: string, name: string): void {
  if (namespace.length > 63 || !DNS1123_LABEL.test(namespace)) {
    throw new PodInfoError('INVALID_NAME', `pod namespace ${JSON.stringify(namespace)} is not a valid Kubernetes namespace (lower-case alphanumerics and '-', at most 63)`)
  }
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    throw new PodInfoError('INVALID_NAME', `pod name ${JSON.stringify(name)} is not a valid Kubernetes pod name (lower-case alphanumerics, '-' and '.', at most 253)`)
  }
}

/** Why a label or annotation key is invalid (Kubernetes qualified name: [prefix/]name), or undefined. */
export function badQualifiedName(key: string): string | undefined {
  const slash = key.lastIndexOf('/')
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined
  const name = slash >= 0 ? key.slice(slash + 1) : key
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    return 'its prefix must be a DNS subdomain (lower-case, at most 253 characters)'
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    return "its name part must be 1-63 characters of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
  }
  return undefined
}

/** Why a label value is invalid, or undefined. */
export function badLabelValue(value: string): string | undefined {
  if (value.length > 63 || !LABEL_VALUE.test(value)) {
    return "a label value must be at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
  }
  return undefined
}

/** The cache/lookup key of a pod. Underscore cannot occur in Kubernetes names, so it is unambiguous. */
export function podKey(namespace: string, name: string): string {
  return `${namespace}_${name}`
}
