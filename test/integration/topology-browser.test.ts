// The live topology page in a real browser: headless Chromium (Debian's `chromium`, scripts/setup.sh installs
// it) driven by puppeteer-core, against an agent serving the page (`--web-address 0`: loopback, a free port)
// while the seed scenario runs through dist/nsm. The page shows the chain client → firewall → vpn-gateway
// (connection edges between the pods' boxes, the chain list), a click on a connection shows its details,
// the client's connection disappears from the page within 1 s of its CNI DEL, every request the page makes
// goes to the agent, and a screenshot is saved as an artifact (its path is printed). The page is read-only
// (405), refuses foreign Host headers (421) and serves no path tokens.
import t from 'tap'
import { mkdirSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import puppeteer, { type Browser } from 'puppeteer-core'
import type { Topology } from '../../agent/topology/model.js'
import { startMesh } from './nsm-fixture'
import { addSeedPods } from '../lib/seed-pods'
import { runAgentToExit, tempDir } from '../lib/agent'

const CHROMIUM = process.env.NSM_CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = join(tmpdir(), 'nsm-test-artifacts')

async function launch(t: { teardown(fn: () => Promise<void>): void }): Promise<Browser> {
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
  t.teardown(() => browser.close())
  return browser
}

t.test('the seed chain on the page, details on click, a DEL seen within 1 s', async (t) => {
  const mesh = await startMesh(t, { agentArgs: ['--web-address', '0'] })
  const url = String(mesh.agent.logs.find((l) => l.msg === 'ready')?.web ?? '')
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'the ready line names the page, on loopback')
  const seed = await addSeedPods(t, mesh)
  const pod = (p: { netns: { path: string } }): string => `node-a|${p.netns.path}`
  const clientConn = `${seed.client.containerId}-nsm0`
  const firewallConn = `${seed.firewall.containerId}-nsm0`

  const browser = await launch(t)
  const page = await browser.newPage()
  await page.setViewport({ width: 1400, height: 800 })
  const requests: string[] = []
  const errors: string[] = []
  page.on('request', (r) => requests.push(r.url()))
  page.on('pageerror', (e) => errors.push(String(e)))
  await page.goto(url)
  await page.waitForFunction(() => document.querySelectorAll('.conn').length === 2, { timeout: 5000 })

  // The chain: an edge from the client's box to the firewall's, and one from the firewall's to the gateway's.
  const edges = await page.$$eval('.conn', (els) => els.map((e) => ({ id: e.getAttribute('data-id'), from: e.getAttribute('data-from'), to: e.getAttribute('data-to'), state: e.getAttribute('data-state') })))
  t.same(
    edges.sort((a, b) => String(a.id).localeCompare(String(b.id))),
    [
      { id: clientConn, from: pod(seed.client), to: pod(seed.firewall), state: 'UP' },
      { id: firewallConn, from: pod(seed.firewall), to: pod(seed.vpn), state: 'UP' },
    ].sort((a, b) => a.id.localeCompare(b.id)),
    'client → firewall → vpn-gateway as edges between the pods',
  )
  const boxes = await page.$$eval('.box.pod', (els) => els.map((e) => ({ id: e.getAttribute('data-id'), name: e.getAttribute('data-name'), endpoints: Array.from(e.querySelectorAll('[data-endpoint]'), (r) => r.getAttribute('data-endpoint')) })))
  t.same(
    boxes.find((b) => b.id === pod(seed.firewall)),
    { id: pod(seed.firewall), name: 'sec/firewall', endpoints: [`secure-intranet-connectivity.cni-${seed.firewall.containerId}`] },
    'the firewall pod with its endpoint',
  )
  t.equal(boxes.find((b) => b.id === pod(seed.client))?.name, 'sec/client')
  const x = async (id: string): Promise<number> => page.$eval(`.box[data-id="${id}"] rect`, (r) => Number(r.getAttribute('x')))
  t.ok((await x(pod(seed.client))) < (await x(pod(seed.firewall))) && (await x(pod(seed.firewall))) < (await x(pod(seed.vpn))), 'laid out left to right along the chain')
  t.same(await page.$$eval('#chains li', (els) => els.map((e) => e.textContent)), [`sec/client → sec/firewall → ${seed.vpn.netns.name}`])

  // A connection's details on click.
  await page.click(`.conn[data-id="${clientConn}"] .hit`)
  await page.waitForSelector('#details table')
  const details = Object.fromEntries(await page.$$eval('#details tr', (rows) => rows.map((r) => [r.querySelector('th')?.textContent ?? '', r.querySelector('td')?.textContent ?? ''])))
  t.match(details, {
    id: clientConn,
    state: 'UP',
    client: 'sec/client on node-a',
    interface: 'nsm0',
    mechanism: 'LOCAL KERNEL veth nsm0',
    endpoint: `secure-intranet-connectivity.cni-${seed.firewall.containerId} in sec/firewall on node-a`,
    'client addresses': /^172\.31\.41\.\d+\/32$/,
    'endpoint addresses': /^172\.31\.41\.\d+\/32$/,
    'CNI attachment': `network nsm-net, container ${seed.client.containerId}, eth0, ${seed.client.netns.path}`,
  })
  mkdirSync(ARTIFACTS, { recursive: true })
  const shot = join(ARTIFACTS, 'topology-browser.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.comment(`screenshot: ${shot}`)

  // The client's DEL: its connection leaves the page within 1 s, and the open details say it is gone.
  await seed.del(seed.client)
  const deleted = Date.now()
  await page.waitForFunction((id: string) => document.querySelector(`.conn[data-id="${id}"]`) === null, { timeout: 1000 }, clientConn)
  t.comment(`gone from the page ${Date.now() - deleted} ms after the DEL returned`)
  t.same(await page.$$eval('.conn', (els) => els.map((e) => e.getAttribute('data-id'))), [firewallConn], 'the firewall\'s connection stays')
  t.equal(await page.$eval('#details .gone', (e) => e.textContent), `connection ${clientConn} is gone`)

  const origin = new URL(url).origin
  t.same(requests.filter((r) => !r.startsWith(`${origin}/`)), [], 'every asset comes from the agent')
  t.same(errors, [], 'no script errors')
})

t.test('read-only, no tokens, no foreign Host; loopback unless --web-public', async (t) => {
  const mesh = await startMesh(t, { agentArgs: ['--web-address', '127.0.0.1:0'] })
  const url = String(mesh.agent.logs.find((l) => l.msg === 'ready')?.web ?? '')
  await addSeedPods(t, mesh)
  const page = await fetch(url)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'/)
  const html = await page.text()
  t.notMatch(html, /https?:\/\//, 'the page names no other site')
  const json = await (await fetch(`${url}topology.json`)).text()
  t.equal((JSON.parse(json) as Topology).connections.length, 2)
  t.notMatch(json, /token/i, 'no path segment tokens')
  t.equal((await fetch(`${url}topology.json`, { method: 'POST' })).status, 405)
  t.equal((await fetch(url, { method: 'DELETE' })).status, 405)
  // fetch() will not send another Host: node:http will.
  const foreign = await new Promise<number>((resolve, reject) => {
    const req = request(url, { headers: { Host: 'attacker.example' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
  t.equal(foreign, 421, 'a foreign Host (DNS rebinding) is refused')
  t.equal((await fetch(`${url}nope`)).status, 404)

  const dir = tempDir(t)
  const refused = await runAgentToExit(t, ['--socket', join(dir, 'a.sock'), '--state-dir', join(dir, 'state'), '--web-address', '0.0.0.0:0'])
  t.equal(refused.code, 2)
  t.match(refused.stderr, '--web-address: 0.0.0.0:0 is not a loopback address')
})
