// A full disk under the state dir (a small tmpfs): the agent refuses to start when the connection
// journal cannot be preallocated (exit 1 naming the file and the size), and a request whose record cannot
// be made durable fails cleanly — no links left, not in the table, not after a restart — while every
// acknowledged connection survives. NSM_AGENT_JOURNAL_BYTES makes the journal small enough to fill.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { NetworkServiceDefinition } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { runAgentToExit, startAgent, type AgentExit } from '../lib/agent'
import { linkNames, makeNetns } from '../lib/netns'
import { kernelRequest, seedAgent } from '../lib/mesh'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

/** A tmpfs of `size` mounted on a fresh dir, unmounted and removed at teardown. */
function smallTmpfs(t: Teardown, size: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-disk-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  t.teardown(() => {
    execFileSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Writes zeros into `path` until the filesystem is full. */
function fill(path: string): void {
  const fd = openSync(path, 'w')
  const chunk = Buffer.alloc(4096)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  } finally {
    closeSync(fd)
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what}: no exit within ${ms} ms`)), ms).unref())])
}

t.test('a journal that cannot be preallocated stops the start, naming the file and the size', { timeout: 30_000 }, async (t) => {
  const disk = smallTmpfs(t, '64k')
  const run = runAgentToExit(t, ['--socket', join(disk, 'agent.sock'), '--state-dir', join(disk, 'state')])
  const res: AgentExit & { stdout: string; stderr: string } = await withTimeout(run, 15_000, 'agent on a 64 KiB state dir')
  t.equal(res.code, 1, 'exit 1')
  const out = res.stdout + res.stderr
  t.match(out, join(disk, 'state', 'connections.json.journal'), 'names the journal file')
  t.match(out, /8388608 bytes/, 'names the size')
  t.match(out, /ENOSPC|no space/i, 'says why')
  t.notMatch(out, /"msg":"ready"/, 'never ready')
})

t.test('ENOSPC fails the request cleanly; acknowledged connections survive a restart', { timeout: 120_000 }, async (t) => {
  const saved = process.env.NSM_AGENT_JOURNAL_BYTES
  process.env.NSM_AGENT_JOURNAL_BYTES = '8192'
  t.teardown(() => {
    if (saved === undefined) delete process.env.NSM_AGENT_JOURNAL_BYTES
    else process.env.NSM_AGENT_JOURNAL_BYTES = saved
  })
  const disk = smallTmpfs(t, '1m')
  mkdirSync(join(disk, 'run'))
  const fw = makeNetns(t, 'fw')
  const client = makeNetns(t, 'cl')
  const agent = await startAgent(t, { dir: disk })
  await seedAgent(agent.client, fw.path, ['172.16.1.0/24'])
  const request = (i: number) => agent.client.unary(NetworkServiceDefinition, NetworkServiceDefinition.methods.request, kernelRequest(`disk-${i}`, client.path, `nsm${i}`))
  await request(0)
  fill(join(disk, 'filler'))

  // Requests are acknowledged while the preallocated journal has room; the one that needs a new
  // snapshot on the full disk fails.
  const acked: string[] = ['disk-0']
  let failure: Error | undefined
  for (let i = 1; i < 40 && failure === undefined; i++) {
    try {
      await request(i)
      acked.push(`disk-${i}`)
    } catch (err) {
      failure = err as Error
      t.notOk(linkNames(client.name).includes(`nsm${i}`), 'the failed request left no client link')
    }
  }
  t.ok(failure !== undefined, 'a request failed on the full disk')
  t.match(failure?.message, /STORE_FAILURE/, 'as a store failure')
  t.match(failure?.message, /connections\.json/, 'naming the file')
  t.equal(linkNames(client.name).filter((n) => n.startsWith('nsm')).length, acked.length, 'one client link per acknowledged connection')
  t.equal(linkNames(fw.name).filter((n) => n.startsWith('nsm')).length, acked.length, 'one endpoint link per acknowledged connection')
  const status = await agent.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(status.connections, acked.length, 'the failed connection is not in the table')

  // Space again: requests succeed; then a crash and a restart keep exactly the acknowledged ones.
  rmSync(join(disk, 'filler'))
  await request(100)
  acked.push('disk-100')
  await agent.stop('SIGKILL')
  const second = await startAgent(t, { dir: disk })
  const after = await second.client.unary(AgentDefinition, AgentDefinition.methods.status, {})
  t.equal(after.connections, acked.length, 'every acknowledged connection, and only those, after the restart')
  t.equal(linkNames(client.name).filter((n) => n.startsWith('nsm')).length, acked.length, 'no link leaked or lost')
  t.same(await second.stop(), { code: 0, signal: null })
})
