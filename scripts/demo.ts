// `npm run demo`: the main job on an embedded default. For now (until the seed demo lands): start
// dist/nsm-agent on a temporary socket with its embedded file store, wait for its `ready` line, ask it
// for its status over the socket, stop it with SIGTERM and check it left nothing behind.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentClient } from '../agent/client/grpc-http2'
import { AgentDefinition } from '../proto/gen/nsmcni/nsmcni'

const dir = mkdtempSync(join(tmpdir(), 'nsm-demo-'))
const socket = join(dir, 'agent.sock')
const agent = spawn(process.execPath, ['dist/nsm-agent', '--socket', socket, '--state-dir', join(dir, 'state')], { stdio: ['ignore', 'pipe', 'inherit'] })
const exited = new Promise<number | null>((res) => agent.on('exit', (code) => res(code)))
try {
  await new Promise<void>((res, rej) => {
    let buf = ''
    agent.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      for (const line of buf.split('\n')) if (line.includes('"msg":"ready"')) res()
    })
    void exited.then((code) => rej(new Error(`nsm-agent exited before ready (code ${code})`)))
  })
  console.log(`nsm-agent ready on ${socket} (pid ${agent.pid})`)
  const client = new AgentClient(socket)
  const status = await client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  client.close()
  console.log('status:', JSON.stringify(status))
  agent.kill('SIGTERM')
  const code = await exited
  console.log(`nsm-agent stopped on SIGTERM (exit ${code}); socket removed: ${!existsSync(socket)}`)
  if (code !== 0 || existsSync(socket)) process.exitCode = 1
} finally {
  if (agent.exitCode === null) agent.kill('SIGKILL')
  rmSync(dir, { recursive: true, force: true })
}
