// Runs the agent as a real process for tests: `dist/nsm-agent` (what `npm test` builds first; set
// NSM_AGENT_BIN to use another entry, e.g. "tsx agent/main.ts") on a socket and state dir in a fresh temp
// dir, waits for its JSON `ready` line, and at teardown kills it (SIGKILL if still running) and removes
// the temp dir. The gRPC client is agent/client (node:http2), the same one the CNI plugin uses.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { AGENT_NODE_FLAGS } from '../../agent/node-flags.js'
import { AgentClient } from '../../agent/client/client.js'
import { MonitorConnectionDefinition, type Connection, type ConnectionEvent } from '../../proto/gen/networkservice/connection.js'

const ROOT = resolve(import.meta.dirname, '../..')

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface AgentExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface RunningAgent {
  dir: string
  socket: string
  stateDir: string
  pid: number
  client: AgentClient
  /** Parsed JSON log lines so far (stdout). */
  logs: Array<Record<string, unknown>>
  stderr(): string
  /** Sends a signal and resolves when the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<AgentExit>
  exited: Promise<AgentExit>
}

export interface AgentOptions {
  /** Extra flags (after --socket/--state-dir, so they can override them). */
  args?: string[]
  /** Reuse a directory (restart tests); otherwise a fresh temp dir removed at teardown. */
  dir?: string
  /** Another agent bundle to run with node instead of dist/nsm-agent (bench/nsm.ts: an earlier build). */
  bundle?: string
  /** A command prefix the agent runs under, e.g. ['ip', 'netns', 'exec', node] (test/lib/nodes.ts). */
  wrap?: string[]
  /** Variables added to the agent's environment (e.g. OTEL_EXPORTER_OTLP_ENDPOINT). */
  env?: Record<string, string>
}

/** node running agent bundle `file` with the options the agent is deployed with (agent/node-flags.ts). */
function nodeRunning(file: string): { cmd: string; args: string[] } {
  return { cmd: process.execPath, args: [...AGENT_NODE_FLAGS, file] }
}

export function agentCommand(): { cmd: string; args: string[] } {
  const bin = process.env.NSM_AGENT_BIN
  if (bin !== undefined && bin !== '') {
    const [cmd, ...args] = bin.split(' ')
    return { cmd: cmd === 'tsx' ? join(ROOT, 'node_modules/.bin/tsx') : (cmd ?? ''), args: args.map((a) => resolve(ROOT, a)) }
  }
  const dist = join(ROOT, 'dist/nsm-agent')
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run npm run build (or set NSM_AGENT_BIN="tsx agent/main.ts")`)
  return nodeRunning(dist)
}

/** Makes a temp dir removed at teardown. */
export function tempDir(t: Teardown, prefix = 'nsm-agent-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Spawns the agent with arbitrary argv; resolves when it exits (for bad-config tests). */
export function runAgentToExit(t: Teardown, args: string[], env: Record<string, string> = {}): Promise<AgentExit & { stdout: string; stderr: string }> {
  const { cmd, args: base } = agentCommand()
  const child = spawn(cmd, [...base, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((res) => child.on('exit', (code, signal) => res({ code, signal, stdout, stderr })))
}

export async function startAgent(t: Teardown, opts: AgentOptions = {}): Promise<RunningAgent> {
  const dir = opts.dir ?? tempDir(t)
  const socket = join(dir, 'run', 'agent.sock')
  const stateDir = join(dir, 'state')
  const base = opts.bundle === undefined ? agentCommand() : nodeRunning(opts.bundle)
  const [cmd, ...args] = [...(opts.wrap ?? []), base.cmd, ...base.args] as [string, ...string[]]
  const child: ChildProcess = spawn(cmd, [...args, '--socket', socket, '--state-dir', stateDir, ...(opts.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env } }),
  })
  const client = new AgentClient(socket)
  t.teardown(() => {
    client.close()
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const logs: Array<Record<string, unknown>> = []
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<AgentExit>((res) => child.on('exit', (code, signal) => res({ code, signal })))
  await new Promise<void>((res, rej) => {
    let partial = ''
    child.stdout?.on('data', (d: Buffer) => {
      partial += d.toString()
      let nl: number
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl)
        partial = partial.slice(nl + 1)
        try {
          const obj = JSON.parse(line) as Record<string, unknown>
          logs.push(obj)
          if (obj.msg === 'ready') res()
        } catch {
          logs.push({ raw: line })
        }
      }
    })
    void exited.then((e) => rej(new Error(`agent exited before ready (code ${e.code}, signal ${e.signal}): ${stderr}`)))
  })
  return {
    dir,
    socket,
    stateDir,
    pid: child.pid ?? -1,
    client,
    logs,
    stderr: () => stderr,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/** The connections `agent` holds now: the first event (the snapshot) of its MonitorConnections stream. */
export async function connectionsOf(agent: RunningAgent): Promise<Connection[]> {
  const abort = new AbortController()
  let got: Connection[] | undefined
  await agent.client
    .stream(MonitorConnectionDefinition, MonitorConnectionDefinition.methods.monitorConnections, { pathSegments: [], networkServices: [] }, (ev: ConnectionEvent) => {
      got ??= Object.values(ev.connections)
      abort.abort()
    }, { signal: abort.signal })
    .catch((err: unknown) => {
      if (got === undefined) throw err
    })
  return got ?? []
}

/** Collects a server stream's messages; `until` waits for one matching a predicate (no timing involved). */
export interface Collected<T> {
  items: T[]
  until(pred: (m: T) => boolean): Promise<T>
  cancel(): void
  /** Settles when the stream ends (resolves on OK, rejects with the call error, e.g. on cancel). */
  done: Promise<void>
}

export function collect<T>(start: (onMessage: (m: T) => void, signal: AbortSignal) => Promise<void>): Collected<T> {
  const items: T[] = []
  const waiters: Array<{ pred: (m: T) => boolean; resolve: (m: T) => void }> = []
  const controller = new AbortController()
  const done = start((m) => {
    items.push(m)
    for (const w of [...waiters]) {
      if (w.pred(m)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(m)
      }
    }
  }, controller.signal)
  done.catch(() => undefined)
  return {
    items,
    done,
    cancel: () => controller.abort(),
    until: (pred) => {
      const seen = items.find(pred)
      if (seen !== undefined) return Promise.resolve(seen)
      return new Promise<T>((resolve, reject) => {
        waiters.push({ pred, resolve })
        done.then(
          () => reject(new Error('stream ended before the expected message')),
          (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
        )
      })
    },
  }
}
