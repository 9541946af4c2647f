// The real agent binary with bad OTEL_* variables (agent/main.ts starts tracing, agent/tracing/, when
// OTEL_EXPORTER_OTLP_ENDPOINT or its _TRACES_ form is set): a sampler name or ratio that is not one, a
// schedule delay that is not a number, an endpoint that is not http(s) are a bad config — exit 2, stderr
// `nsm-agent: tracing: <VARIABLE>: ...`, nothing served. The endpoint given where one is needed is a port
// nothing listens on; nothing is sent, since the agent stops at start.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { agentCommand, tempDir, type AgentExit } from '../lib/agent.js'

const NOWHERE = 'http://127.0.0.1:9/'
/** The agent stops at start on a bad config; one that does not is killed after this long and the test fails. */
const START_BOUND_MS = 30_000

/**
 * Runs the agent with `env` added to this process's environment (minus its own OTEL_* variables, so that
 * only the case's apply) until it exits. runAgentToExit (test/lib/agent.ts) cannot pass an environment.
 */
function runWithEnv(t: Test, args: string[], env: Record<string, string>): Promise<AgentExit & { stdout: string; stderr: string }> {
  const { cmd, args: base } = agentCommand()
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')))
  const child = spawn(cmd, [...base, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...inherited, ...env } })
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  t.teardown(kill)
  const bound = setTimeout(kill, START_BOUND_MS)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((res) =>
    child.on('exit', (code, signal) => {
      clearTimeout(bound)
      res({ code, signal, stdout, stderr })
    }),
  )
}

const cases: Array<{ name: string; env: Record<string, string>; err: RegExp }> = [
  {
    name: 'sampler name',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: NOWHERE, OTEL_TRACES_SAMPLER: 'sometimes' },
    err: /^nsm-agent: tracing: OTEL_TRACES_SAMPLER: "sometimes" is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio$/m,
  },
  {
    name: 'sampler ratio',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: NOWHERE, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' },
    err: /^nsm-agent: tracing: OTEL_TRACES_SAMPLER_ARG: "2" is not a ratio between 0 and 1$/m,
  },
  {
    name: 'schedule delay',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: NOWHERE, OTEL_BSP_SCHEDULE_DELAY: 'abc' },
    err: /^nsm-agent: tracing: OTEL_BSP_SCHEDULE_DELAY: "abc" /m,
  },
  {
    name: 'ftp endpoint',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://x' },
    err: /^nsm-agent: tracing: OTEL_EXPORTER_OTLP_ENDPOINT: "ftp:\/\/x.*": only http: and https: are served$/m,
  },
  {
    name: 'ftp traces endpoint',
    env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'ftp://x' },
    err: /^nsm-agent: tracing: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp:\/\/x": only http: and https: are served$/m,
  },
  {
    name: 'protocol',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: NOWHERE, OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' },
    err: /^nsm-agent: tracing: OTEL_EXPORTER_OTLP_PROTOCOL: "thrift" is not http\/protobuf, grpc or http\/json$/m,
  },
  {
    name: 'grpc endpoint with a path',
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9/v1/traces', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
    err: /^nsm-agent: tracing: OTEL_EXPORTER_OTLP_ENDPOINT: .*the endpoint is a host and port, with no path$/m,
  },
]

for (const c of cases) {
  t.test(`a bad ${c.name} is a bad config: exit 2, the variable named, nothing served`, async (t) => {
    const dir = tempDir(t, 'nsm-otel-config-')
    const socket = join(dir, 'agent.sock')
    const res = await runWithEnv(t, ['--socket', socket, '--state-dir', join(dir, 'state')], c.env)
    t.same({ code: res.code, signal: res.signal }, { code: 2, signal: null }, 'exit 2')
    t.match(res.stderr, c.err, 'stderr names the variable and the value')
    t.notOk(existsSync(socket), 'no socket file')
    t.notMatch(res.stdout, /"msg":"ready"/, 'never ready')
  })
}
