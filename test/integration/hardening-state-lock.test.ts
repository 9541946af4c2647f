// One agent per state dir: a second agent started on a state dir another agent holds exits 1 with a
// message naming the holder's pid, and serves nothing; the lock is the kernel's (flock on <state>/lock),
// so a SIGKILLed holder leaves it free for the next start.
import t from 'tap'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni.js'
import { runAgentToExit, startAgent } from '../lib/agent.js'

t.test('a second agent on the same state dir exits 1 naming the holder', { timeout: 30_000 }, async (t) => {
  const first = await startAgent(t)
  const socket2 = join(first.dir, 'run', 'second.sock')
  const second = await runAgentToExit(t, ['--socket', socket2, '--state-dir', first.stateDir])
  t.equal(second.code, 1, 'exit 1')
  const out = second.stdout + second.stderr
  t.match(out, new RegExp(`locked by pid ${first.pid}\\b`), 'names the holder pid')
  t.match(out, join(first.stateDir, 'lock'), 'names the lock file')
  t.notOk(existsSync(socket2), 'the second agent served nothing')
  const status = await first.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.ready, true, 'the first agent still serves')
  t.same(await first.stop(), { code: 0, signal: null })
})

t.test('a SIGKILLed holder releases the lock', { timeout: 30_000 }, async (t) => {
  const first = await startAgent(t)
  t.equal((await first.stop('SIGKILL')).signal, 'SIGKILL')
  const second = await startAgent(t, { dir: first.dir })
  const status = await second.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.ready, true)
  // And now the new holder is the one named.
  const third = await runAgentToExit(t, ['--socket', join(first.dir, 'run', 'third.sock'), '--state-dir', first.stateDir])
  t.equal(third.code, 1)
  t.match(third.stdout + third.stderr, new RegExp(`locked by pid ${second.pid}\\b`))
  t.same(await second.stop(), { code: 0, signal: null })
})
