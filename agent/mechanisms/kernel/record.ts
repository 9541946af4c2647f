// The KERNEL mechanism's part of a datapath record: where the endpoint's end of the veth lives.
export interface KernelRecord {
  type: 'KERNEL'
  endpointNetns: string
  /** `nsm-<10 hex of the connection id's hash>` (./names.ts). */
  endpointIfname: string
}
