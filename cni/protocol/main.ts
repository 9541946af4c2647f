// The tiny plugin entry: `pluginMain(handlers, io)` reads the environment and stdin, validates them in
// the spec's order (environment → stdin → configuration → version → command allowed in that version →
// CNI_ARGS → netns), calls one handler and prints its result or the error JSON. The io is injectable so
// tests run handlers in-process exactly as the bundled binary does.
import { fstatSync } from 'node:fs'
import { parseCniArgs, type CniArgs } from './args'
import { decodeJson, parseNetConf, type NetConf } from './config'
import { assertNetnsExists, parseEnv, type CniEnv } from './env'
import { checkStdinSize, MAX_STDIN_BYTES, readFd0, writeFd } from './stdio'

export { MAX_STDIN_BYTES }
import { CniCode, CniError } from './errors'
import { encodeResult, type CniResult } from './result'
import { assertCommandAllowed, NEWEST, parseVersion, SUPPORTED_VERSIONS, type SpecVersion } from './version'


export interface CallContext {
  env: CniEnv
  conf: NetConf
  version: SpecVersion
  /** CNI_ARGS, already filtered to the keys the plugin declared (IgnoreUnknown honoured). */
  envArgs: CniArgs
}

export interface PluginHandlers {
  add(ctx: CallContext): Promise<CniResult>
  del(ctx: CallContext): Promise<void>
  check(ctx: CallContext): Promise<void>
  status(ctx: CallContext): Promise<void>
  gc(ctx: CallContext): Promise<void>
  /** CNI_ARGS keys the plugin understands. */
  knownArgs: readonly string[]
  /** Printed on stderr when run without CNI_COMMAND (with the code-4 error on stdout). */
  about: string
}

export interface PluginIo {
  env: Readonly<Record<string, string | undefined>>
  /** Returns stdin, at most `limit` + 1 bytes of it. */
  readStdin(limit: number): Buffer
  /** VERSION reads no stdin when this says it is a terminal (someone typing the command by hand). */
  stdinIsTerminal?(): boolean
  stdout(text: string): void
  stderr(text: string): void
  /** Throws a CniError when the path is not a network namespace. */
  assertNetns(path: string): void
}

/** True when stdin is a terminal (a plugin run by hand) or missing: VERSION then reads nothing. */
function stdinIsTerminal(): boolean {
  try {
    return fstatSync(0).isCharacterDevice()
  } catch {
    return true // no stdin at all
  }
}

/** The process's real io. */
export const processIo: PluginIo = {
  env: process.env,
  readStdin: readFd0,
  stdinIsTerminal,
  stdout: (t) => writeFd(1, t),
  stderr: (t) => writeFd(2, t),
  assertNetns: assertNetnsExists,
}

function readConfig(io: PluginIo): Buffer {
  return checkStdinSize(io.readStdin(MAX_STDIN_BYTES))
}

/** VERSION: echo the caller's cniVersion (when it is a version) and list what we speak. */
function versionReply(io: PluginIo): Record<string, unknown> {
  let asked: string = NEWEST
  try {
    if (io.stdinIsTerminal?.() === true) return { cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] }
    const v = decodeJson(readConfig(io)).cniVersion
    if (typeof v === 'string' && parseVersion(v) !== undefined) asked = v
  } catch {
    // VERSION needs no configuration: an empty or unreadable stdin still gets an answer.
  }
  return { cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] }
}

/** Runs one CNI call. Returns the exit code; never throws. */
export async function pluginMain(handlers: PluginHandlers, io: PluginIo = processIo): Promise<number> {
  let version: string = NEWEST
  try {
    if ((io.env.CNI_COMMAND ?? '') === '') io.stderr(`${handlers.about}\nCNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`)
    const env = parseEnv(io.env)
    if (env.command === 'VERSION') {
      io.stdout(`${JSON.stringify(versionReply(io))}\n`)
      return 0
    }
    const raw = decodeJson(readConfig(io))
    if (typeof raw.cniVersion === 'string' && parseVersion(raw.cniVersion) !== undefined) version = raw.cniVersion
    const conf = parseNetConf(raw)
    version = conf.version
    assertCommandAllowed(env.command, conf.version)
    const envArgs = parseCniArgs(env.args, handlers.knownArgs)
    if (env.command === 'ADD' || env.command === 'CHECK') io.assertNetns(env.netns)
    const ctx: CallContext = { env, conf, version: conf.version, envArgs }
    switch (env.command) {
      case 'ADD': {
        const result = await handlers.add(ctx)
        io.stdout(`${JSON.stringify(encodeResult(result, conf.version))}\n`)
        return 0
      }
      case 'DEL':
        await handlers.del(ctx)
        return 0
      case 'CHECK':
        await handlers.check(ctx)
        return 0
      case 'STATUS':
        await handlers.status(ctx)
        return 0
      case 'GC':
        await handlers.gc(ctx)
        return 0
    }
  } catch (err) {
    const e = CniError.from(err)
    io.stdout(`${JSON.stringify(e.toJSON(version))}\n`)
    if (e.code === CniCode.INTERNAL && err instanceof Error && err.stack !== undefined) io.stderr(`${err.stack}\n`)
    return 1
  }
}

/** Entry for a bundled binary: run with the process io and exit with the code. */
export function runPlugin(handlers: PluginHandlers): void {
  pluginMain(handlers).then(
    (code) => process.exit(code),
    (err: unknown) => {
      // pluginMain never rejects; this is the last resort if writing stdout itself failed.
      process.stderr.write(`${String(err)}\n`)
      process.exit(1)
    },
  )
}
