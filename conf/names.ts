// conf/names.ts: the name rules every input document shares (service names, label keys and values, Linux
// interface names).
//
// Needs: nothing (dependency-free: bundled into the CNI plugin through conf/annotations.ts).
// Contract: pure predicates, true when the name is acceptable; callers produce the error naming the field.

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/

/** Linux IFNAMSIZ - 1. */
export const MAX_IFNAME_LENGTH = 15

/** A Kubernetes object name (DNS-1123 subdomain, ≤ 253): what a network service may be called. */
export function isValidServiceName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && DNS_SUBDOMAIN.test(name)
}

/** A Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters. */
export function isValidLabelKey(key: string): boolean {
  const slash = key.indexOf('/')
  const name = slash < 0 ? key : key.slice(slash + 1)
  if (slash >= 0 && !isValidServiceName(key.slice(0, slash))) return false
  return name.length > 0 && name.length <= 63 && LABEL_NAME.test(name)
}

/** A Kubernetes label value: empty, or ≤ 63 characters of the label-name alphabet. */
export function isValidLabelValue(value: string): boolean {
  return value === '' || (value.length <= 63 && LABEL_NAME.test(value))
}

/**
 * A name the kernel accepts for a network interface (dev_valid_name): 1–15 bytes, not `.` or `..`, no `/`,
 * `:` or whitespace. We also require printable ASCII, so characters and bytes agree.
 */
export function isValidInterfaceName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_IFNAME_LENGTH && name !== '.' && name !== '..' && /^[!-~]+$/.test(name) && !/[/:]/.test(name)
}
