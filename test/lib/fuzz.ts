// Helpers for bounded, deterministic fuzz tests of the CNI binaries: a seeded PRNG, an exec that passes
// the environment exactly as given (empty variables included, unlike conformance/exec's callEnv) with a
// hard timeout, and the checks every answer of a CNI plugin must pass whatever its input.
import { spawn } from 'node:child_process'
import { isIP } from 'node:net'

/** mulberry32: a small 32-bit PRNG, good enough to pick mutations reproducibly from a seed. */
export class Prng {
  private s: number
  constructor(seed: number) {
    this.s = seed >>> 0
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0
    let x = this.s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1))
  }
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('pick from an empty list')
    return xs[Math.floor(this.next() * xs.length)] as T
  }
  /** NUL-free junk: control characters, ASCII, Latin-1 and BMP code points (no lone surrogates). */
  junk(len: number): string {
    let s = ''
    for (let i = 0; i < len; i++) {
      const kind = this.int(0, 3)
      const cp = kind === 0 ? this.int(1, 31) : kind === 1 ? this.int(32, 126) : kind === 2 ? this.int(127, 255) : this.int(256, 0xd7ff)
      s += String.fromCodePoint(cp)
    }
    return s
  }
}

/** The seed: NSM_FUZZ_SEED (decimal or 0x hex) or the given default. */
export function fuzzSeed(fallback: number): number {
  const v = process.env.NSM_FUZZ_SEED
  if (v === undefined || v.trim() === '') return fallback >>> 0
  const n = Number(v.trim())
  if (!Number.isInteger(n)) throw new Error(`NSM_FUZZ_SEED=${v} is not an integer`)
  return n >>> 0
}

export interface RawOutcome {
  exitCode: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  timedOut: boolean
  ms: number
}

/**
 * Execs `binary` with exactly `env` (plus nothing) and `stdin`, as a runtime does. Kills it with SIGKILL
 * after `timeoutMs` (timedOut then true). Never rejects on a plugin failure; EPIPE on stdin is tolerated.
 */
export function rawExec(binary: string, env: Record<string, string>, stdin: Buffer, timeoutMs: number): Promise<RawOutcome> {
  const start = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => err.push(d))
    child.stdin.on('error', () => undefined)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ exitCode: code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut, ms: Date.now() - start })
    })
    child.stdin.end(stdin)
  })
}

/** CNI codes a plugin of this project may answer (spec 1-7, 11, 50, 51; ours 100-111: pkg/codes.ts). */
export const KNOWN_CODES = new Set([1, 2, 3, 4, 5, 6, 7, 11, 50, 51, ...Array.from({ length: 12 }, (_, i) => 100 + i)])

const STACK_LINE = /^ {4}at /m

export type Verdict = { ok: true; kind: 'result' | 'empty' | 'error'; code?: number } | { ok: false; why: string }

/**
 * The shape rules for one answer: the process exited (no timeout, no signal); exit 0 with a CNI result
 * JSON object (or nothing, for commands that print nothing on success), or exit non-zero with exactly
 * {cniVersion, code, msg[, details]} and a known code; no stack trace on stdout or stderr.
 */
export function judge(command: string, o: RawOutcome): Verdict {
  if (o.timedOut) return { ok: false, why: `did not exit within the timeout (killed after ${o.ms} ms)` }
  if (o.signal !== null) return { ok: false, why: `killed by ${o.signal}` }
  if (STACK_LINE.test(o.stdout)) return { ok: false, why: 'stack trace on stdout' }
  if (STACK_LINE.test(o.stderr)) return { ok: false, why: 'stack trace on stderr' }
  const text = o.stdout.trim()
  let json: unknown
  if (text !== '') {
    try {
      json = JSON.parse(text)
    } catch {
      return { ok: false, why: 'stdout is not JSON' }
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) return { ok: false, why: 'stdout is JSON but not an object' }
  }
  const obj = json as Record<string, unknown> | undefined
  if (o.exitCode === 0) {
    if (obj === undefined) {
      // Success without output is what DEL, CHECK, GC and STATUS print.
      return ['DEL', 'CHECK', 'GC', 'STATUS'].includes(command) ? { ok: true, kind: 'empty' } : { ok: false, why: `exit 0 with nothing on stdout for ${command}` }
    }
    if ('code' in obj) return { ok: false, why: 'exit 0 with an error object on stdout' }
    if (typeof obj.cniVersion !== 'string') return { ok: false, why: 'exit 0: result without a cniVersion string' }
    if (command === 'VERSION' && !Array.isArray(obj.supportedVersions)) return { ok: false, why: 'VERSION result without supportedVersions' }
    if (command === 'ADD') {
      const bad = resultProblem(obj)
      if (bad !== undefined) return { ok: false, why: `exit 0 with an invalid CNI result: ${bad}` }
    }
    return { ok: true, kind: 'result' }
  }
  if (obj === undefined) return { ok: false, why: `exit ${String(o.exitCode)} with no CNI error on stdout` }
  const keys = Object.keys(obj).sort()
  const extra = keys.filter((k) => !['cniVersion', 'code', 'msg', 'details'].includes(k))
  if (extra.length > 0) return { ok: false, why: `error object with extra keys ${extra.join(',')}` }
  if (typeof obj.cniVersion !== 'string' || obj.cniVersion === '') return { ok: false, why: `error object: cniVersion ${JSON.stringify(obj.cniVersion)}` }
  if (typeof obj.code !== 'number' || !KNOWN_CODES.has(obj.code)) return { ok: false, why: `error object: unknown code ${JSON.stringify(obj.code)}` }
  if (typeof obj.msg !== 'string' || obj.msg === '') return { ok: false, why: `error object: msg ${JSON.stringify(obj.msg)}` }
  if (obj.details !== undefined && typeof obj.details !== 'string') return { ok: false, why: 'error object: details is not a string' }
  if (/\[object Object\]/.test(obj.msg)) return { ok: false, why: 'error message contains [object Object]' }
  return { ok: true, kind: 'error', code: obj.code }
}

const isCidr = (s: unknown): boolean => {
  if (typeof s !== 'string') return false
  const [ip, len, ...rest] = s.split('/')
  const fam = isIP(ip ?? '')
  const n = Number(len)
  return rest.length === 0 && fam !== 0 && len !== undefined && /^\d+$/.test(len) && n <= (fam === 4 ? 32 : 128)
}

/** What is wrong with an ADD result (CNI 1.x types: interfaces, ips, routes), or undefined. */
export function resultProblem(r: Record<string, unknown>): string | undefined {
  const interfaces = r.interfaces ?? []
  const ips = r.ips ?? []
  const routes = r.routes ?? []
  if (!Array.isArray(interfaces) || !Array.isArray(ips) || !Array.isArray(routes)) return 'interfaces, ips and routes must be lists'
  for (const [i, x] of interfaces.entries()) {
    if (typeof x !== 'object' || x === null || typeof (x as { name?: unknown }).name !== 'string') return `interfaces[${i}] has no name`
  }
  for (const [i, x] of ips.entries()) {
    const ip = x as { address?: unknown; gateway?: unknown; interface?: unknown }
    if (typeof x !== 'object' || x === null || !isCidr(ip.address)) return `ips[${i}].address ${JSON.stringify(ip?.address)} is not an address/prefix`
    if (ip.gateway !== undefined && (typeof ip.gateway !== 'string' || isIP(ip.gateway) === 0)) return `ips[${i}].gateway ${JSON.stringify(ip.gateway)} is not an address`
    if (ip.interface !== undefined && (typeof ip.interface !== 'number' || ip.interface < 0 || ip.interface >= interfaces.length)) return `ips[${i}].interface ${JSON.stringify(ip.interface)} is not an index into interfaces`
  }
  for (const [i, x] of routes.entries()) {
    if (typeof x !== 'object' || x === null || !isCidr((x as { dst?: unknown }).dst)) return `routes[${i}].dst is not a prefix`
  }
  return undefined
}

/** A short, printable preview of bytes (for failure reports). */
export function preview(b: Buffer | string, max = 240): string {
  const s = typeof b === 'string' ? b : b.toString('utf8')
  const j = JSON.stringify(s.length > max ? `${s.slice(0, max)}…(+${s.length - max} chars)` : s)
  return j
}
