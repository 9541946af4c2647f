// The README's run command, end to end: the seed demo (scripts/demo.ts) builds client → firewall →
// vpn-gateway with the real agent and the real dist/nsm, pings the intranet through the firewall and
// tears down. Asserts what a user sees: the topology, the ping, the counter rising, nothing left.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')

t.test('npm run demo (scripts/demo.ts) succeeds and leaves nothing behind', async (t) => {
  const before = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
  const r = spawnSync(process.execPath, ['--import=tsx', 'scripts/demo.ts'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 0, `exit 0 (stderr: ${r.stderr})`)
  t.match(r.stdout, /Topology \(client → firewall → vpn-gateway\)/)
  t.match(r.stdout, /client\s+\[demo-\S+\]\s+nsm0 172\.16\.1\.\d+\/32/)
  t.match(r.stdout, /3 packets transmitted, 3 received/)
  const m = /firewall forward counter: (\d+) → (\d+) packets/.exec(r.stdout)
  t.ok(m !== null && Number(m[2]) >= Number(m[1]) + 6, 'the firewall forwarded the pings and their replies')
  t.match(r.stdout, /torn down: 0 links and 0 connections were left/)
  t.match(r.stdout, /demo OK/)
  const after = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout
  t.notMatch(after, /demo-/, 'no demo namespace left')
  t.equal(after.split('\n').filter((l) => l.startsWith('demo-')).length, before.split('\n').filter((l) => l.startsWith('demo-')).length)
})
