// The CNI shim's wire protocol: one CNI call per connection to the agent's unix socket, one request, one
// answer. The agent serves its gRPC API on the same socket and tells the two apart by the first bytes
// (a gRPC client starts with the HTTP/2 preface `PRI * HTTP/2.0`, the shim with MAGIC).
//
//   request:  MAGIC (8 bytes) | u32 BE header length | u32 BE stdin length | header | stdin
//             header = JSON { env: { CNI_COMMAND, CNI_CONTAINERID, ... } }: the spec's CNI_* variables (and TRACEPARENT, TRACESTATE) as the
//             runtime set them; stdin = the network configuration bytes, as read (at most
//             MAX_STDIN_BYTES + 1 bytes: code 5 beyond MAX_STDIN_BYTES).
//   answer:   u32 BE length | JSON { exitCode, stdout, stderr }: what the plugin process prints and
//             how it exits, exactly as if the agent had run the plugin itself.
//
// Shared by the shim (cni/nsm/shim.ts) and the agent (agent/server/socket.ts, agent/cni). Buffers only.

import { MAX_STDIN_BYTES } from '../protocol/stdio'

export const MAGIC = Buffer.from('NSMCNI1\n')
/**
 * The header carries the six CNI_* variables (and TRACEPARENT/TRACESTATE when set). Linux caps each at 128 KiB (MAX_ARG_STRLEN), so 1 MiB holds
 * any environment a runtime can pass: a request is never refused for its variables' size by the agent (the
 * shim checks the same limit before sending and answers 4 itself, rather than a reset connection).
 */
export const MAX_HEADER = 1 << 20
export const MAX_ANSWER = 16 << 20

export interface ShimRequest {
  env: Record<string, string>
  stdin: Buffer
}

export interface ShimAnswer {
  exitCode: number
  stdout: string
  stderr: string
}

/** Thrown by encodeRequest when the variables exceed MAX_HEADER; names the largest one. */
export class RequestTooLarge extends Error {
  override readonly name = 'RequestTooLarge'
}

export function encodeRequest(r: ShimRequest): Buffer {
  const header = Buffer.from(JSON.stringify({ env: r.env }))
  if (header.length > MAX_HEADER) {
    const [name, value] = Object.entries(r.env).sort((a, b) => b[1].length - a[1].length)[0] ?? ['?', '']
    throw new RequestTooLarge(`the CNI_* variables are ${header.length} bytes (at most ${MAX_HEADER}); ${name} alone is ${Buffer.byteLength(value)}`)
  }
  const lengths = Buffer.allocUnsafe(8)
  lengths.writeUInt32BE(header.length, 0)
  lengths.writeUInt32BE(r.stdin.length, 4)
  return Buffer.concat([MAGIC, lengths, header, r.stdin])
}

/**
 * Decodes a request from the bytes received so far: undefined while incomplete; throws on a frame that
 * is not ours or is too large (the caller answers and closes).
 */
export function decodeRequest(buf: Buffer): ShimRequest | undefined {
  if (buf.length < MAGIC.length + 8) return undefined
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error('not an nsm CNI request')
  const headerLen = buf.readUInt32BE(MAGIC.length)
  const stdinLen = buf.readUInt32BE(MAGIC.length + 4)
  if (headerLen > MAX_HEADER) throw new Error(`request header of ${headerLen} bytes (at most ${MAX_HEADER})`)
  if (stdinLen > MAX_STDIN_BYTES + 1) throw new Error(`stdin of ${stdinLen} bytes (at most ${MAX_STDIN_BYTES + 1})`)
  const start = MAGIC.length + 8
  if (buf.length < start + headerLen + stdinLen) return undefined
  const header = JSON.parse(buf.subarray(start, start + headerLen).toString('utf8')) as { env?: unknown }
  const env: Record<string, string> = {}
  if (header.env !== null && typeof header.env === 'object') {
    for (const [k, v] of Object.entries(header.env)) if ((k.startsWith('CNI_') || k === 'TRACEPARENT' || k === 'TRACESTATE') && typeof v === 'string') env[k] = v
  }
  return { env, stdin: Buffer.from(buf.subarray(start + headerLen, start + headerLen + stdinLen)) }
}

export function encodeAnswer(a: ShimAnswer): Buffer {
  const body = Buffer.from(JSON.stringify(a))
  const len = Buffer.allocUnsafe(4)
  len.writeUInt32BE(body.length, 0)
  return Buffer.concat([len, body])
}

/** Decodes the answer from the bytes received so far: undefined while incomplete. */
export function decodeAnswer(buf: Buffer): ShimAnswer | undefined {
  if (buf.length < 4) return undefined
  const len = buf.readUInt32BE(0)
  if (len > MAX_ANSWER) throw new Error(`answer of ${len} bytes`)
  if (buf.length < 4 + len) return undefined
  const a = JSON.parse(buf.subarray(4, 4 + len).toString('utf8')) as Partial<ShimAnswer>
  if (typeof a.exitCode !== 'number' || typeof a.stdout !== 'string' || typeof a.stderr !== 'string') throw new Error('malformed answer')
  return { exitCode: a.exitCode, stdout: a.stdout, stderr: a.stderr }
}

export const DEFAULT_SOCKET = '/run/nsm/agent.sock'
/** How long the shim waits for the agent's answer unless the netconf's `timeoutMs` says otherwise. */
export const DEFAULT_TIMEOUT_MS = 120_000

/**
 * The agent's socket a network configuration names: `socket` or `agentSocket` (an absolute path), else
 * DEFAULT_SOCKET. Returns the field at fault and why instead when the fields are unusable (CNI code 7).
 * The shim needs it to connect; the agent checks the same fields with the same function.
 */
export function agentSocketOf(conf: Record<string, unknown>): { socket: string } | { field: string; problem: string } {
  const a = conf.socket ?? undefined
  const b = conf.agentSocket ?? undefined
  for (const [field, v] of [['socket', a], ['agentSocket', b]] as const) {
    if (v === undefined || v === null) continue
    if (typeof v !== 'string') return { field, problem: `expected a string, got ${JSON.stringify(v)}` }
    if (!v.startsWith('/') || v.includes('\0')) return { field, problem: `${JSON.stringify(v)} must be an absolute path` }
  }
  if (typeof a === 'string' && typeof b === 'string' && a !== b) return { field: 'agentSocket', problem: `conflicts with socket (${JSON.stringify(a)} vs ${JSON.stringify(b)}): give one` }
  return { socket: (typeof a === 'string' ? a : typeof b === 'string' ? b : undefined) ?? DEFAULT_SOCKET }
}
