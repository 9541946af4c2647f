// A real etcd for a test: Debian's etcd-server (/usr/bin/etcd, v3.4; scripts/setup.sh installs it), one
// member on 127.0.0.1 only, on free client and peer ports, with a temporary data dir (tmpfs), automatic compaction
// off (tests compact explicitly), and leases as short as 1 s (--election-timeout 500: etcd's shortest lease
// is 1.5 × the election timeout, rounded up to whole seconds).
//
//   const etcd = await startEtcd(t)            // healthy when it resolves
//   etcd.endpoints                             // ['http://127.0.0.1:<port>']
//   await etcd.kill(); await etcd.start()      // SIGKILL, then the same member on the same ports and data
//   etcd.freeze(); etcd.thaw()                 // SIGSTOP / SIGCONT: a member that hangs
//   await etcd.compact()                       // drop history up to the current revision
//   await etcd.leases()                        // the lease ids etcd holds
//
// t.teardown kills the process and removes the data dir, also when the test fails. The process is started
// through setpriv --pdeathsig KILL, so it dies with the test process even when no teardown runs (a test
// runner killed by its timeout); the data of such a run is removed by the next startEtcd. Health and compaction go through etcd's JSON gateway (/health,
// /v3/kv/...), not through the client under test. `makeEtcdCerts` writes a throwaway CA, server and client
// certificates (openssl) for `tls`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

const ETCD = '/usr/bin/etcd'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
  /** tap's: when the test failed, teardown shows the end of etcd's log. */
  passing?(): boolean
  comment?(...args: unknown[]): void
}

/** Files for an etcd that serves TLS and requires client certificates signed by `ca`. */
export interface EtcdCerts {
  readonly dir: string
  readonly ca: string
  readonly serverCert: string
  readonly serverKey: string
  /** A client certificate signed by `ca` (the harness uses it too). */
  readonly clientCert: string
  readonly clientKey: string
  /** A client certificate from another CA: etcd must refuse it. */
  readonly strangerCert: string
  readonly strangerKey: string
}

export interface EtcdOptions {
  /** Serve https with client certificate auth. */
  readonly tls?: EtcdCerts
  /**
   * Run inside this network namespace (a test bed's underlay, test/lib/nodes.ts) serving clients on
   * `host` there, so agents in the bed's node namespaces reach it; the harness itself talks to it over a
   * unix socket in its directory (the filesystem is shared). Plain http only.
   */
  readonly netns?: { readonly name: string; readonly host: string }
}

export interface TestEtcd {
  /** Client URLs: http(s)://127.0.0.1:<port>. */
  readonly endpoints: string[]
  readonly dataDir: string
  /** The running process's pid, undefined while stopped. */
  readonly pid: number | undefined
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>
  /**
   * SIGSTOP: etcd keeps its connections and answers nothing (a hung member, or a network gone quiet).
   * Resolves once every thread of it is stopped: kill(2) returns before they are, and a thread still running
   * could answer a call made right after.
   */
  freeze(): Promise<void>
  /** SIGCONT after freeze(). */
  thaw(): void
  /** Starts the member again on the same ports and data dir; resolves once it is healthy. */
  start(): Promise<void>
  /** Compacts the history up to `revision` (default: the current one); gives the revision compacted. */
  compact(revision?: string): Promise<string>
  /** The store's current revision. */
  revision(): Promise<string>
  /** The ids of the leases etcd holds now. */
  leases(): Promise<string[]>
  /** The end of etcd's log (stderr) since it was last started. */
  log(): string
}

/** A port nobody listens on right now (etcd may still lose it to a race: startEtcd retries then). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  await new Promise<void>((resolve) => server.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('freePort: no port')
  return address.port
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const hasSetpriv = existsSync('/usr/bin/setpriv')

class EtcdProcess implements TestEtcd {
  readonly endpoints: string[]
  private child: ChildProcess | undefined
  private exited: Promise<void> = Promise.resolve()
  private stderr: string[] = []
  private readonly token = `nsm-test-${randomBytes(4).toString('hex')}`

  constructor(
    readonly dataDir: string,
    private readonly clientPort: number,
    private readonly peerPort: number,
    private readonly tls: EtcdCerts | undefined,
    private readonly netns?: { readonly name: string; readonly host: string },
  ) {
    this.endpoints = [`${tls ? 'https' : 'http'}://${netns?.host ?? '127.0.0.1'}:${clientPort}`]
  }

  /** In a netns: the unix socket etcd also serves (unix://localhost:<port> is a file in its cwd). */
  private get socketPath(): string | undefined {
    return this.netns === undefined ? undefined : join(dirname(this.dataDir), `localhost:${this.clientPort + 1}`)
  }

  get pid(): number | undefined {
    return this.child?.pid
  }

  private args(): string[] {
    const client = `${this.endpoints[0] ?? ''}${this.netns === undefined ? '' : `,unix://localhost:${this.clientPort + 1}`}`
    const peer = `http://127.0.0.1:${this.peerPort}`
    const args = [
      '--name', 'nsm-test',
      '--data-dir', this.dataDir,
      '--listen-client-urls', client,
      '--advertise-client-urls', this.endpoints[0] ?? '',
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `nsm-test=${peer}`,
      '--initial-cluster-token', this.token,
      '--initial-cluster-state', 'new',
      '--auto-compaction-retention', '0',
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-level', 'warn',
    ]
    if (this.tls) {
      args.push('--cert-file', this.tls.serverCert, '--key-file', this.tls.serverKey, '--trusted-ca-file', this.tls.ca, '--client-cert-auth')
    }
    return args
  }

  /** Spawns etcd and waits until /health says true; rejects (process gone) when it exits first. */
  async start(): Promise<void> {
    if (this.child !== undefined) throw new Error('etcd: already running')
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD')))
    const inNetns = this.netns === undefined ? [] : ['ip', 'netns', 'exec', this.netns.name]
    const [cmd, ...argv] = [...(hasSetpriv ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--'] : []), ...inNetns, ETCD, ...this.args()] as [string, ...string[]]
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env, cwd: dirname(this.dataDir) })
    this.child = child
    this.stderr = []
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr.push(chunk)
      if (this.stderr.length > 50) this.stderr.shift()
    })
    let gone = false
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        gone = true
        if (this.child === child) this.child = undefined
        resolve()
      })
      child.once('error', () => {
        gone = true
        if (this.child === child) this.child = undefined
        resolve()
      })
    })
    for (let i = 0; i < 300; i++) {
      if (gone) throw new Error(`etcd exited while starting: ${this.log()}`)
      if (await this.healthy()) return
      await sleep(100)
    }
    await this.kill()
    throw new Error(`etcd: not healthy after 30 s: ${this.log()}`)
  }

  log(): string {
    return this.stderr.join('').slice(-4000)
  }

  private async healthy(): Promise<boolean> {
    try {
      const body = await this.gateway('GET', '/health')
      return (body as { health?: string }).health === 'true'
    } catch {
      return false
    }
  }

  async stop(): Promise<void> {
    await this.signal('SIGTERM', 10_000)
  }

  async kill(): Promise<void> {
    await this.signal('SIGKILL', 10_000)
  }

  async freeze(): Promise<void> {
    const pid = this.child?.pid
    if (pid === undefined) return
    this.child?.kill('SIGSTOP')
    /** Each thread's state letter (the field after the parenthesised name in /proc/<pid>/task/<tid>/stat). */
    const states = (): string[] =>
      readdirSync(`/proc/${pid}/task`).map((tid) => {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
      })
    const deadline = Date.now() + 5_000
    while (!states().every((s) => s === 'T')) {
      if (Date.now() > deadline) throw new Error(`etcd (pid ${pid}) not stopped 5 s after SIGSTOP: thread states ${states().join('')}`)
      await sleep(5)
    }
  }

  thaw(): void {
    this.child?.kill('SIGCONT')
  }

  private async signal(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child
    if (child === undefined) return
    child.kill(sig)
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await this.exited
    clearTimeout(timer)
  }

  async revision(): Promise<string> {
    const res = (await this.gateway('POST', '/v3/kv/range', { key: Buffer.from('\0').toString('base64'), count_only: true })) as { header?: { revision?: string } }
    const rev = res.header?.revision
    if (rev === undefined) throw new Error(`etcd: no revision in ${JSON.stringify(res)}`)
    return rev
  }

  async leases(): Promise<string[]> {
    const res = (await this.gateway('POST', '/v3/lease/leases', {})) as { leases?: Array<{ ID: string }> }
    return (res.leases ?? []).map((l) => l.ID)
  }

  async compact(revision?: string): Promise<string> {
    const rev = revision ?? (await this.revision())
    await this.gateway('POST', '/v3/kv/compaction', { revision: rev, physical: true })
    return rev
  }

  /** One request to etcd's JSON gateway (with the client certificate when serving TLS). */
  private gateway(method: string, path: string, body?: unknown): Promise<unknown> {
    const url = new URL(path, this.endpoints[0])
    const data = body === undefined ? undefined : JSON.stringify(body)
    const tls = this.tls ? { ca: readFileSync(this.tls.ca), cert: readFileSync(this.tls.clientCert), key: readFileSync(this.tls.clientKey) } : {}
    const request = this.tls ? httpsRequest : httpRequest
    return new Promise((resolve, reject) => {
      const req = request(url, { method, timeout: 2000, ...(this.socketPath === undefined ? {} : { socketPath: this.socketPath }), headers: data === undefined ? {} : { 'content-type': 'application/json' }, ...tls }, (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (c: string) => (text += c))
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`etcd ${method} ${path}: HTTP ${res.statusCode}: ${text}`))
          else {
            try {
              resolve(JSON.parse(text))
            } catch (err) {
              reject(err instanceof Error ? err : new Error(String(err)))
            }
          }
        })
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error(`etcd ${method} ${path}: no answer in 2 s`)))
      req.on('error', reject)
      req.end(data)
    })
  }
}

/** Removes the data of test runs that died without their teardown (their pid is gone): it fills memory. */
function sweepOrphans(base: string): void {
  for (const name of readdirSync(base)) {
    const pid = /^nsm-etcd-(\d+)-/.exec(name)?.[1]
    if (pid === undefined || alive(Number(pid))) continue
    rmSync(join(base, name), { recursive: true, force: true })
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Starts a one-member etcd on loopback, healthy when this resolves; gone (process and data) at teardown. */
export async function startEtcd(t: Teardown, opts: EtcdOptions = {}): Promise<TestEtcd> {
  // On tmpfs when there is one: etcd fsyncs every write, and a disk busy with other work can stall it for
  // seconds. A SIGKILLed etcd loses nothing there either (the test kills processes, not the machine).
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir()
  sweepOrphans(base)
  const root = mkdtempSync(join(base, `nsm-etcd-${process.pid}-`))
  let etcd: EtcdProcess | undefined
  t.teardown(async () => {
    await etcd?.kill()
    if (etcd !== undefined && t.passing?.() === false) t.comment?.(`etcd's log:\n${etcd.log()}`)
    rmSync(root, { recursive: true, force: true })
  })
  // A port found free can be taken before etcd binds it: then etcd exits, and we try other ports.
  for (let attempt = 1; ; attempt++) {
    // In its own netns every port is free (the client port + 1 names its unix socket).
    const [clientPort, peerPort] = opts.netns === undefined ? [await freePort(), await freePort()] : [2379, 2390]
    if (clientPort === peerPort || clientPort + 1 === peerPort) continue
    rmSync(join(root, 'data'), { recursive: true, force: true })
    etcd = new EtcdProcess(join(root, 'data'), clientPort, peerPort, opts.tls, opts.netns)
    try {
      await etcd.start()
      return etcd
    } catch (err) {
      if (attempt >= 5 || !/address already in use/.test(String(err))) throw err
    }
  }
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr || r.error?.message}`)
}

/** A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, plus a stranger's
 *  client certificate from another CA; the directory goes at teardown. EC P-256, valid two days. */
export function makeEtcdCerts(t: Teardown): EtcdCerts {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-etcd-certs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const ca = (name: string): void => openssl(dir, ['req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=nsm-test-${name}`])
  const leaf = (name: string, signer: string, ext: string): void => {
    writeFileSync(join(dir, `${name}.ext`), ext)
    openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=nsm-test-${name}`])
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`])
  }
  ca('ca')
  ca('stranger-ca')
  leaf('server', 'ca', 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n')
  leaf('client', 'ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n')
  leaf('stranger', 'stranger-ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n')
  const f = (name: string): string => join(dir, name)
  return {
    dir,
    ca: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    strangerCert: f('stranger.crt'),
    strangerKey: f('stranger.key'),
  }
}
