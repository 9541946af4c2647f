// Running CNI plugins the way a runtime does: exec the binary with the CNI_* environment and the
// configuration on stdin, capture stdout/stderr/exit code. Also an in-process twin over pluginMain, and
// a snapshot of a directory tree to prove that a failed call changed nothing on disk.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { pluginMain, type PluginHandlers } from '../../cni/protocol/main'
import { assertNetnsExists } from '../../cni/protocol/env'

export interface CniCall {
  command: string
  containerId?: string
  netns?: string
  ifname?: string
  args?: string
  path?: string
  /** Configuration object (JSON-encoded) or raw stdin bytes. */
  stdin: unknown
  /** Variables to drop from the environment entirely. */
  unset?: string[]
}

export interface CniOutcome {
  exitCode: number
  stdout: string
  stderr: string
  /** stdout parsed as JSON when it is JSON. */
  json: Record<string, unknown> | undefined
}

export function callEnv(c: CniCall): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: c.command,
    CNI_CONTAINERID: c.containerId ?? '',
    CNI_NETNS: c.netns ?? '',
    CNI_IFNAME: c.ifname ?? '',
    CNI_ARGS: c.args ?? '',
    CNI_PATH: c.path ?? '',
  }
  for (const k of c.unset ?? []) delete env[k]
  for (const k of Object.keys(env)) if (env[k] === '' && k !== 'CNI_COMMAND') delete env[k]
  return env
}

export function stdinBytes(stdin: unknown): Buffer {
  return Buffer.isBuffer(stdin) ? stdin : Buffer.from(typeof stdin === 'string' ? stdin : JSON.stringify(stdin))
}

export function parseOut(stdout: string): Record<string, unknown> | undefined {
  const s = stdout.trim()
  if (s === '') return undefined
  try {
    const v: unknown = JSON.parse(s)
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/** Execs `binary` as a runtime would. Never rejects on a plugin failure; EPIPE on stdin is tolerated. */
export function execPlugin(binary: string, c: CniCall, timeoutMs = 30_000): Promise<CniOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [], { env: callEnv(c), stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => err.push(d))
    child.stdin.on('error', () => undefined) // the plugin may exit before reading everything
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      const stdout = Buffer.concat(out).toString()
      resolve({ exitCode: code ?? (signal === null ? -1 : 128), stdout, stderr: Buffer.concat(err).toString(), json: parseOut(stdout) })
    })
    child.stdin.end(stdinBytes(c.stdin))
  })
}

/** The same call in-process through pluginMain (no binary, no exec). */
export async function callInProcess(handlers: PluginHandlers, c: CniCall): Promise<CniOutcome> {
  let stdout = ''
  let stderr = ''
  const bytes = stdinBytes(c.stdin)
  const exitCode = await pluginMain(handlers, {
    env: callEnv(c),
    readStdin: (limit) => bytes.subarray(0, limit + 1),
    stdout: (s) => {
      stdout += s
    },
    stderr: (s) => {
      stderr += s
    },
    assertNetns: assertNetnsExists,
  })
  return { exitCode, stdout, stderr, json: parseOut(stdout) }
}

/** Every file and directory under `root` with its content (files) — equal snapshots mean nothing changed. */
export function snapshotTree(root: string): Record<string, string> {
  const out: Record<string, string> = {}
  if (!existsSync(root)) return out
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name)
      const r = rel === '' ? name : `${rel}/${name}`
      if (statSync(p).isDirectory()) {
        out[`${r}/`] = ''
        walk(p, r)
      } else {
        out[r] = readFileSync(p, 'utf8')
      }
    }
  }
  walk(root, '')
  return out
}

/**
 * Copies dist/nsm-ipam into a private directory for one test file: colleagues' builds rewrite dist/
 * while tests run (build.mjs removes and re-creates each bundle), and a test must not exec a half-written
 * file. Waits for a build in progress; checks the copy parses. Returns the directory (for CNI_PATH).
 */
export async function stageNsmIpam(t: { teardown(fn: () => void): void }): Promise<string> {
  const { copyFileSync, chmodSync, mkdtempSync: mk, rmSync: rm } = await import('node:fs')
  const { execFileSync } = await import('node:child_process')
  const { tmpdir: tmp } = await import('node:os')
  const dir = mk(join(tmp(), 'nsm-ipam-bin-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const src = join(process.cwd(), 'dist', 'nsm-ipam')
  const dst = join(dir, 'nsm-ipam')
  for (let attempt = 0; ; attempt++) {
    try {
      copyFileSync(src, dst)
      chmodSync(dst, 0o755)
      execFileSync(process.execPath, ['--check', dst], { stdio: 'ignore' })
      return dir
    } catch (err) {
      if (attempt >= 100) throw new Error(`dist/nsm-ipam is missing or broken (run npm run build): ${(err as Error).message}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
}
