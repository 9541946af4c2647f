// rtnetlink message bodies, encoded and decoded here. The `netlink` package carries the bytes (socket,
// sequence numbers, multipart grouping); its typed rtnetlink layer leaves nested link info as raw
// buffers (a veth peer, vxlan data), so we build and parse the bodies ourselves: struct headers from
// <linux/rtnetlink.h> and <linux/if_link.h>, attributes as (len u16, type u16, payload, pad to 4).

export const RTM = {
  NEWLINK: 16,
  DELLINK: 17,
  GETLINK: 18,
  SETLINK: 19,
  NEWADDR: 20,
  DELADDR: 21,
  GETADDR: 22,
  NEWROUTE: 24,
  DELROUTE: 25,
  GETROUTE: 26,
} as const

export const NLM_F = {
  REQUEST: 0x1,
  MULTI: 0x2,
  ACK: 0x4,
  ECHO: 0x8,
  DUMP_INTR: 0x10,
  DUMP: 0x300,
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
} as const

export const NLMSG_ERROR = 2
export const NLMSG_DONE = 3

export const IFLA = {
  ADDRESS: 1,
  IFNAME: 3,
  MTU: 4,
  LINK: 5,
  MASTER: 10,
  OPERSTATE: 16,
  LINKINFO: 18,
  NET_NS_PID: 19,
  IFALIAS: 20,
  NET_NS_FD: 28,
  GROUP: 27,
  NUM_TX_QUEUES: 31,
  NUM_RX_QUEUES: 32,
  LINK_NETNSID: 37,
} as const
export const IFLA_INFO = { KIND: 1, DATA: 2 } as const
export const VETH_INFO_PEER = 1
export const IFLA_VXLAN = {
  ID: 1,
  GROUP: 2,
  LINK: 3,
  LOCAL: 4,
  TTL: 5,
  LEARNING: 7,
  PORT: 15,
  GROUP6: 16,
  LOCAL6: 17,
} as const

export const IFA = { ADDRESS: 1, LOCAL: 2, LABEL: 3, FLAGS: 8 } as const
export const IFA_F = { NODAD: 0x02, PERMANENT: 0x80 } as const

export const RTA = { DST: 1, SRC: 2, OIF: 4, GATEWAY: 5, PRIORITY: 6, PREFSRC: 7, TABLE: 15 } as const
export const RTN_UNICAST = 1
export const RTPROT_STATIC = 4
export const RT_TABLE_MAIN = 254
export const SCOPE = { universe: 0, site: 200, link: 253, host: 254 } as const
export type Scope = keyof typeof SCOPE

export const AF_INET = 2
export const AF_INET6 = 10
export const IFF_UP = 0x1

// ---- encoding -------------------------------------------------------------------------------------

const align4 = (n: number): number => (n + 3) & ~3

export function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length
  const out = Buffer.alloc(align4(len))
  out.writeUInt16LE(len, 0)
  out.writeUInt16LE(type, 2)
  payload.copy(out, 4)
  return out
}
export const attrU32 = (type: number, v: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(v >>> 0)
  return attr(type, b)
}
export const attrU8 = (type: number, v: number): Buffer => attr(type, Buffer.from([v]))
export const attrU16be = (type: number, v: number): Buffer => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(v)
  return attr(type, b)
}
export const attrStr = (type: number, s: string): Buffer => attr(type, Buffer.from(`${s}\0`, 'utf8'))
export const nested = (type: number, parts: Buffer[]): Buffer => attr(type, Buffer.concat(parts))

export interface IfInfoMsg {
  family?: number
  type?: number
  index?: number
  flags?: number
  change?: number
}
export function ifinfomsg(m: IfInfoMsg): Buffer {
  const b = Buffer.alloc(16)
  b.writeUInt8(m.family ?? 0, 0)
  b.writeUInt16LE(m.type ?? 0, 2)
  b.writeInt32LE(m.index ?? 0, 4)
  b.writeUInt32LE(m.flags ?? 0, 8)
  b.writeUInt32LE(m.change ?? 0, 12)
  return b
}

export function ifaddrmsg(m: { family: number; prefixlen: number; flags?: number; scope?: number; index: number }): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt8(m.family, 0)
  b.writeUInt8(m.prefixlen, 1)
  b.writeUInt8((m.flags ?? 0) & 0xff, 2)
  b.writeUInt8(m.scope ?? 0, 3)
  b.writeUInt32LE(m.index, 4)
  return b
}

export interface RtMsg {
  family: number
  dstLen: number
  srcLen?: number
  tos?: number
  table: number
  protocol: number
  scope: number
  type: number
  flags?: number
}
export function rtmsg(m: RtMsg): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt8(m.family, 0)
  b.writeUInt8(m.dstLen, 1)
  b.writeUInt8(m.srcLen ?? 0, 2)
  b.writeUInt8(m.tos ?? 0, 3)
  b.writeUInt8(m.table < 256 ? m.table : 252 /* RT_TABLE_COMPAT: the real id goes in RTA_TABLE */, 4)
  b.writeUInt8(m.protocol, 5)
  b.writeUInt8(m.scope, 6)
  b.writeUInt8(m.type, 7)
  b.writeUInt32LE(m.flags ?? 0, 8)
  return b
}

// ---- decoding -------------------------------------------------------------------------------------

/** Attributes of one level, by type (the nested flag bits masked off). Later duplicates win. */
export function parseAttrs(buf: Buffer, offset = 0): Map<number, Buffer> {
  const out = new Map<number, Buffer>()
  let off = offset
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off)
    const type = buf.readUInt16LE(off + 2) & 0x3fff
    if (len < 4 || off + len > buf.length) break
    out.set(type, buf.subarray(off + 4, off + len))
    off += align4(len)
  }
  return out
}

export const cstr = (b: Buffer | undefined): string | undefined => {
  if (b === undefined) return undefined
  const nul = b.indexOf(0)
  return b.toString('utf8', 0, nul < 0 ? b.length : nul)
}
export const u32 = (b: Buffer | undefined): number | undefined => (b !== undefined && b.length >= 4 ? b.readUInt32LE(0) : undefined)
export const s32 = (b: Buffer | undefined): number | undefined => (b !== undefined && b.length >= 4 ? b.readInt32LE(0) : undefined)
