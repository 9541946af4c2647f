// The file store under real concurrency and real crashes, through the bundled dist/nsm-ipam binary:
// parallel processes never hand out one address twice, an oversubscribed pool gives each address once,
// SIGKILLed processes leave only whole reservations (and GC cleans up after them), and DEL/GC racing
// with ADDs never drop a fresh reservation.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { callEnv, execPlugin, stageNsmIpam, stdinBytes, type CniOutcome } from '../conformance/exec'
import { makeNetns } from '../lib/netns'

const binDir = await stageNsmIpam(t)
const bin = join(binDir, 'nsm-ipam')

function setup(t: Test, ipam: Record<string, unknown>) {
  const dataDir = mkdtempSync(join(tmpdir(), 'nsm-store-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const ns = makeNetns(t)
  const conf = { cniVersion: '1.1.0', name: 'storenet', type: 'nsm-ipam', ipam: { type: 'nsm-ipam', dataDir, ...ipam } }
  const dir = join(dataDir, 'storenet')
  const call = (command: string, containerId: string, extra: Record<string, unknown> = {}): Promise<CniOutcome> =>
    execPlugin(bin, { command, containerId, netns: ns.path, ifname: 'eth0', path: binDir, stdin: { ...conf, ...extra } })
  const files = (sub: string): string[] => (existsSync(join(dir, sub)) ? readdirSync(join(dir, sub)) : [])
  // reservations/<ip>/o.<token>: one record per address directory (ipam/store/file.ts).
  const records = () =>
    files('reservations').map((ip) => {
      const recs = readdirSync(join(dir, 'reservations', ip))
      if (recs.length !== 1) throw new Error(`reservations/${ip} holds ${recs.length} records`)
      return { ip, ...(JSON.parse(readFileSync(join(dir, 'reservations', ip, recs[0] as string), 'utf8')) as { v: number; containerID: string; ifname: string; rangeSet: number }) }
    })
  return { conf, ns, call, files, records }
}

const addresses = (o: CniOutcome): string[] => ((o.json?.ips as Array<{ address: string }> | undefined) ?? []).map((i) => i.address.split('/')[0] as string)

t.test('32 parallel ADDs (dual-stack): 32 distinct addresses per family; 32 DELs leave nothing', async (t) => {
  const s = setup(t, { ranges: [[{ subnet: '10.214.40.0/24' }], [{ subnet: 'fd14:40::/64' }]] })
  const ids = Array.from({ length: 32 }, (_, i) => `par-${i}`)
  const adds = await Promise.all(ids.map((id) => s.call('ADD', id)))
  t.same(adds.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], 'every ADD succeeded')
  const v4 = adds.map((o) => addresses(o)[0])
  const v6 = adds.map((o) => addresses(o)[1])
  t.equal(new Set(v4).size, 32, 'no IPv4 address handed out twice')
  t.equal(new Set(v6).size, 32, 'no IPv6 address handed out twice')
  const recs = s.records()
  t.equal(recs.length, 64, 'one reservation file per address')
  t.ok(recs.every((r) => r.v === 1 && ids.includes(r.containerID) && r.ifname === 'eth0'), 'every record is whole and owned')
  adds.forEach((o, i) => {
    for (const a of addresses(o)) if (recs.find((r) => r.ip === a)?.containerID !== ids[i]) t.fail(`${a} is not recorded for ${ids[i]}`)
  })
  const dels = await Promise.all(ids.map((id) => s.call('DEL', id)))
  t.same(dels.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], 'every DEL succeeded')
  t.same(s.files('reservations'), [], 'no reservation left')
  t.same(s.files('tmp'), [], 'no temp file left')
})

t.test('an oversubscribed pool: 24 parallel ADDs for 8 addresses', async (t) => {
  const s = setup(t, { subnet: '10.214.41.0/24', rangeStart: '10.214.41.10', rangeEnd: '10.214.41.17' })
  const outs = await Promise.all(Array.from({ length: 24 }, (_, i) => s.call('ADD', `over-${i}`)))
  const ok = outs.filter((o) => o.exitCode === 0)
  t.equal(ok.length, 8, 'exactly as many successes as addresses')
  t.equal(new Set(ok.map((o) => addresses(o)[0])).size, 8, 'each address once')
  t.same([...new Set(outs.filter((o) => o.exitCode !== 0).map((o) => o.json?.code))], [102], 'the others: 102 pool exhausted')
  t.equal(s.records().length, 8)
  t.same(s.files('tmp'), [], 'failed attempts left no temp file')
})

t.test('SIGKILL in the middle of ADDs leaves only whole reservations; GC cleans up', async (t) => {
  const s = setup(t, { subnet: '10.214.42.0/24' })
  // Kill at staggered moments over a window wider than one call takes, so some die during start-up,
  // some in the middle of the store work, and some after finishing.
  const outcomes = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      new Promise<'killed' | 'finished'>((resolve) => {
        const child = spawn(bin, [], { env: callEnv({ command: 'ADD', containerId: `crash-${i}`, netns: s.ns.path, ifname: 'eth0', stdin: '' }), stdio: ['pipe', 'ignore', 'ignore'] })
        child.stdin.on('error', () => undefined)
        child.stdin.end(stdinBytes(s.conf))
        const timer = setTimeout(() => child.kill('SIGKILL'), i * 120)
        child.on('close', (code, signal) => {
          clearTimeout(timer)
          resolve(signal === 'SIGKILL' ? 'killed' : 'finished')
        })
      }),
    ),
  )
  t.comment(`${outcomes.filter((o) => o === 'killed').length} killed, ${outcomes.filter((o) => o === 'finished').length} finished`)
  const recs = s.records()
  t.comment(`${recs.length} reservations survived`)
  t.ok(outcomes.includes('killed'), 'some calls were killed')
  t.ok(recs.every((r) => r.v === 1 && /^crash-\d+$/.test(r.containerID) && r.ifname === 'eth0' && r.rangeSet === 0), `all ${recs.length} surviving reservations are whole records`)
  t.equal(new Set(recs.map((r) => r.containerID)).size, recs.length, 'no container holds two addresses')
  const gc = await s.call('GC', '', { 'cni.dev/valid-attachments': [] })
  t.equal(gc.exitCode, 0, gc.stdout)
  t.same(s.files('reservations'), [], 'GC released the reservations of the crashed calls')
  t.same(s.files('tmp'), [], 'GC swept the temp files of dead processes')
  const after = await s.call('ADD', 'after-crash')
  t.same(addresses(after).length, 1, 'the store works after the crashes')
})

t.test('DELs and a GC racing with ADDs never drop a fresh reservation', async (t) => {
  const s = setup(t, { subnet: '10.214.43.0/24' })
  const old = Array.from({ length: 12 }, (_, i) => `old-${i}`)
  const fresh = Array.from({ length: 12 }, (_, i) => `new-${i}`)
  for (const id of old) t.equal((await s.call('ADD', id)).exitCode, 0)
  const valid = fresh.map((containerID) => ({ containerID, ifname: 'eth0' }))
  const [adds, dels, gc] = await Promise.all([
    Promise.all(fresh.map((id) => s.call('ADD', id))),
    Promise.all(old.map((id) => s.call('DEL', id))),
    s.call('GC', '', { 'cni.dev/valid-attachments': valid }),
  ])
  t.same(adds.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], 'every ADD succeeded')
  t.same(dels.filter((o) => o.exitCode !== 0).map((o) => o.stdout), [], 'every DEL succeeded')
  t.equal(gc.exitCode, 0, gc.stdout)
  const recs = s.records()
  t.same(recs.map((r) => r.containerID).sort(), [...fresh].sort(), 'exactly the fresh attachments hold addresses')
  adds.forEach((o, i) => t.equal(recs.find((r) => r.ip === addresses(o)[0])?.containerID, fresh[i], `${fresh[i]} still holds ${addresses(o)[0]}`))
})
