// dist/nsm: the CNI plugin the runtime execs is a shim. It answers VERSION itself and sends every other
// call, whole (the CNI_* variables and the configuration bytes on stdin), to the node agent over its
// root-only unix socket; the agent runs the CNI logic (agent/cni/) and answers with what to print and how
// to exit. Framing: ./frame.ts. Public Node APIs only: node:fs, and node:net once there is a call to send.
//
// The agent not reachable (no socket, nobody listening, no permission):
//   DEL     exit 0, with a warning on stderr naming the socket: a failing DEL keeps a pod Terminating
//           while the agent is down; the kernel state goes with the pod's netns, and the agent, once it
//           runs again, closes connections whose netns is gone (heal) and CNI GC closes the rest.
//   STATUS  code 50 naming the socket.
//   others  code 100 naming the socket.
// The agent reachable but not answering within `timeoutMs` (netconf, default 120000): code 11.
import { fstatSync } from 'node:fs'
import { CniCode, CniError } from '../protocol/errors'
import { decodeJson } from '../protocol/config'
import { parseEnv } from '../protocol/env'
import { checkStdinSize, MAX_STDIN_BYTES, readFd0, writeFd } from '../protocol/stdio'
import { NEWEST, parseVersion, SUPPORTED_VERSIONS } from '../protocol/version'
import { agentSocketOf, decodeAnswer, DEFAULT_TIMEOUT_MS, encodeRequest, RequestTooLarge, type ShimAnswer } from './frame'

/** Prints the answer (synchronous writes: nothing is pending) and exits at once, skipping the teardown
 * of the socket and the event loop, which cost a measurable part of a call. */
function finish(a: ShimAnswer): void {
  if (a.stdout !== '') writeFd(1, a.stdout)
  if (a.stderr !== '') writeFd(2, a.stderr)
  process.exit(a.exitCode)
}

const errorAnswer = (version: string, e: CniError): ShimAnswer => ({ exitCode: 1, stdout: `${JSON.stringify(e.toJSON(version))}\n`, stderr: '' })

function unreachable(command: string, version: string, socket: string, why: string): ShimAnswer {
  const what = `nsm agent unreachable at ${socket} (${why}): is nsm-agent running?`
  if (command === 'DEL') return { exitCode: 0, stdout: '', stderr: `nsm: DEL: ${what} Its connections are closed when it runs again (heal, GC).\n` }
  return errorAnswer(version, new CniError(command === 'STATUS' ? CniCode.NOT_AVAILABLE : CniCode.AGENT_UNREACHABLE, what))
}

function call(socket: string, request: Buffer, timeoutMs: number, command: string, version: string): Promise<ShimAnswer> {
  // Loaded here, not at start-up: node:net and the stream modules under it are ~4 ms of a call that VERSION
  // and a refused configuration do without. require, not import(): the bundle is CommonJS, and a dynamic
  // import would start Node's ESM loader (more milliseconds).
  const { createConnection } = require('node:net') as typeof import('node:net')
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let connected = false
    const s = createConnection(socket)
    s.setTimeout(timeoutMs, () => {
      s.destroy()
      resolve(errorAnswer(version, new CniError(CniCode.TRY_AGAIN_LATER, `nsm agent at ${socket} did not answer within ${timeoutMs} ms`)))
    })
    s.on('connect', () => {
      connected = true
      s.end(request)
    })
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('error', (err: NodeJS.ErrnoException) => {
      resolve(connected ? errorAnswer(version, new CniError(CniCode.TRY_AGAIN_LATER, `nsm agent at ${socket}: ${err.message}`)) : unreachable(command, version, socket, err.code ?? err.message))
    })
    s.on('close', () => {
      let a: ShimAnswer | undefined
      try {
        a = decodeAnswer(Buffer.concat(chunks))
      } catch (err) {
        return resolve(errorAnswer(version, new CniError(CniCode.INTERNAL, `nsm agent at ${socket}: ${(err as Error).message}`)))
      }
      resolve(a ?? errorAnswer(version, new CniError(CniCode.TRY_AGAIN_LATER, `nsm agent at ${socket} closed the connection without an answer`)))
    })
  })
}

// TRACEPARENT / TRACESTATE: a caller's W3C trace context in the environment (OpenTelemetry's environment
// carrier), forwarded so the agent's span of this call joins the caller's trace.
const CNI_VARIABLES = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH', 'TRACEPARENT', 'TRACESTATE'] as const

function stdinIsTerminal(): boolean {
  try {
    return fstatSync(0).isCharacterDevice()
  } catch {
    return true // no stdin at all
  }
}

export async function shim(): Promise<ShimAnswer> {
  // The spec's six variables and the trace context, read one by one (enumerating process.env costs ~1 ms in a big environment).
  const env: Record<string, string> = {}
  for (const k of CNI_VARIABLES) {
    const v = process.env[k]
    if (v !== undefined) env[k] = v
  }
  const command = env.CNI_COMMAND ?? ''
  // VERSION needs no configuration: read none when stdin is a terminal (someone typing the command).
  const stdin = command === 'VERSION' && stdinIsTerminal() ? Buffer.alloc(0) : readFd0(MAX_STDIN_BYTES)
  let conf: Record<string, unknown> | undefined
  try {
    conf = decodeJson(stdin)
  } catch {
    // Handled below: VERSION needs none, anything else cannot even find the agent.
  }
  const version = typeof conf?.cniVersion === 'string' && parseVersion(conf.cniVersion) !== undefined ? conf.cniVersion : NEWEST
  if (command === 'VERSION') return { exitCode: 0, stdout: `${JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS })}\n`, stderr: '' }
  if (conf === undefined || stdin.length > MAX_STDIN_BYTES) {
    // Answered here, in the spec's order (environment, then stdin), as the agent would: a configuration
    // that cannot be read names no socket, and one over the size limit is never sent.
    parseEnv(process.env)
    decodeJson(checkStdinSize(stdin))
  }
  const where = agentSocketOf(conf ?? {})
  if (!('socket' in where)) return errorAnswer(version, new CniError(CniCode.INVALID_CONFIG, `${where.field}: ${where.problem}`))
  const t = conf?.timeoutMs
  const timeoutMs = typeof t === 'number' && Number.isInteger(t) && t > 0 ? t : DEFAULT_TIMEOUT_MS
  let request: Buffer
  try {
    request = encodeRequest({ env, stdin })
  } catch (err) {
    // The agent would refuse the frame by closing the connection: say why here, as the permanent error it is.
    if (err instanceof RequestTooLarge) return errorAnswer(version, new CniError(CniCode.INVALID_ENVIRONMENT, err.message))
    throw err
  }
  return call(where.socket, request, timeoutMs, command, version)
}

export function runShim(): void {
  shim().then(finish, (err: unknown) => {
    finish(errorAnswer(NEWEST, CniError.from(err)))
  })
}
