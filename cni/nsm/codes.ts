// Error codes the nsm plugin adds to the shared table (cni/protocol/errors.ts CniCode, DESIGN §11).
// 100-105 are shared with the agent and live in CniCode; these are the plugin's own.
export const NsmCode = {
  /** ADD for an attachment that already has connections (same meaning as nsm-ipam's 106). */
  AttachmentExists: 106,
  /** CHECK: the agent's datapath or prevResult does not match what ADD made. */
  DatapathMismatch: 110,
} as const
