// Issue 12 item 1: agents talk to each other over the NSM v1 API on TCP with mutual TLS (agent/peer/).
//
// In-process first (a peer listener with stub services, throwaway certificates made with openssl): the
// identity rule (the certificate's one DNS SAN is the node name, admitted while the node has a live record),
// the peer name handlers see (never the caller's own claim under TLS), the client's check of the server's
// name, --insecure's header, and the certificate files' reload keeping the previous material while the
// files are broken or half-rotated.
//
// Then real agents (dist/nsm-agent) n1 and n2 on a real etcd, n2 called from here as n1 with n1's
// certificate: authentication passes (Request reaches the pipeline, Close and MonitorConnections work); a
// certificate from another CA, a node name without a live record, plain TCP and an insecure client are
// refused; nsmcni.Agent is not served on the peer port; n2's certificate rotated on disk is what new
// connections see, without a restart; --listen without TLS or --insecure does not start; --insecure serves
// plain TCP and says so.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { randomBytes, X509Certificate } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import type { ServerUnaryCall, sendUnaryData, ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js'
import { GrpcCallError } from '../../agent/client/client'
import { PeerClient } from '../../agent/peer/client'
import { PEER_AUTH_HEADER, PEER_NODE_HEADER } from '../../agent/peer/identity'
import { startPeerListener, type PeerListener } from '../../agent/peer/server'
import { PeerTls, type PeerTlsFiles } from '../../agent/peer/tls'
import { metadataMap } from '../../agent/server/call-context'
import { toGrpcService } from '../../agent/server/grpc-adapter'
import { jsonLogger } from '../../agent/server/log'
import { GrpcStatus } from '../../pkg/codes'
import { ConnectionEventType, MonitorConnectionDefinition, type Connection, type ConnectionEvent } from '../../proto/gen/networkservice/connection'
import { NetworkServiceDefinition, NetworkServiceRequest } from '../../proto/gen/networkservice/networkservice'
import { AgentDefinition } from '../../proto/gen/nsmcni/nsmcni'
import { runAgentToExit, startAgent, tempDir, type RunningAgent } from '../lib/agent'
import { startEtcd } from '../lib/etcd'
import { Pki } from '../lib/pki'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

const serialOf = (file: string): string => new X509Certificate(readFileSync(file)).serialNumber
const fingerprintOf = (file: string): string => new X509Certificate(readFileSync(file)).fingerprint256

/** Replaces a file the way rotation tools do: a new file renamed over the old. */
function replaceFile(target: string, from: string): void {
  const tmp = `${target}.tmp-${process.pid}`
  copyFileSync(from, tmp)
  renameSync(tmp, target)
}

const pki = new Pki(t)
pki.leaf('n1', { san: 'DNS:n1' })
pki.leaf('n2', { san: 'DNS:n2,IP:127.0.0.1' })
pki.leaf('n2-next', { san: 'DNS:n2,IP:127.0.0.1' })
pki.leaf('n9', { san: 'DNS:n9' })
pki.leaf('stranger', { signer: 'other-ca', san: 'DNS:n1' })
pki.leaf('no-san', { cn: 'n1' })
pki.leaf('two-sans', { san: 'DNS:n1,DNS:n2' })

// ------------------------------------------------------------------------------------ helpers

interface Line {
  level: string
  msg: string
  [k: string]: unknown
}

/** A logger that keeps its lines; `next` gives the first line matching, waiting for it if need be (no clock involved). */
function capturingLog(): { log: ReturnType<typeof jsonLogger>; lines: Line[]; next(pred: (l: Line) => boolean): Promise<Line> } {
  const lines: Line[] = []
  const waiters: Array<{ pred: (l: Line) => boolean; resolve: (l: Line) => void }> = []
  const log = jsonLogger('debug', (text) => {
    const line = JSON.parse(text) as Line
    lines.push(line)
    for (const w of [...waiters]) {
      if (w.pred(line)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(line)
      }
    }
  })
  return {
    log,
    lines,
    next: (pred) => {
      const seen = lines.find(pred)
      return seen !== undefined ? Promise.resolve(seen) : new Promise((resolve) => waiters.push({ pred, resolve }))
    },
  }
}

function openTls(t: Teardown, files: PeerTlsFiles, log = capturingLog().log): PeerTls {
  const tls = PeerTls.open(files, { log })
  t.teardown(() => tls.close())
  return tls
}

function client(t: Teardown, opts: ConstructorParameters<typeof PeerClient>[0]): PeerClient {
  const c = new PeerClient({ timeoutMs: 10_000, ...opts })
  t.teardown(() => c.disconnect())
  return c
}

/** The call's gRPC error (fails the test when the call succeeds). */
async function failure(p: Promise<unknown>): Promise<GrpcCallError> {
  try {
    await p
  } catch (err) {
    if (err instanceof GrpcCallError) return err
    throw err
  }
  throw new Error('the call succeeded')
}

/** The first log line of the agent matching, once it is there (read as the agent writes; no time asserted). */
async function logged(a: RunningAgent, pred: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (;;) {
    const line = a.logs.find(pred)
    if (line !== undefined) return line
    await new Promise((r) => setTimeout(r, 20))
  }
}

const conn = (id: string): Connection => NetworkServiceRequest.fromPartial({ connection: { id, networkService: 'peer-test' } }).connection as Connection

/**
 * Stub NSM services that answer what the handler learned of the caller: Close answers OK, Request answers
 * a connection whose labels hold the peer metadata the listener set.
 */
function stubServices(): Array<{ definition: ReturnType<typeof toGrpcService>; implementation: UntypedServiceImplementation }> {
  const echo: UntypedServiceImplementation = {
    request(call: ServerUnaryCall<NetworkServiceRequest, Connection>, cb: sendUnaryData<Connection>) {
      const md = metadataMap(call.metadata)
      cb(null, { ...(call.request.connection ?? conn('x')), labels: { node: md.get(PEER_NODE_HEADER) ?? '', auth: md.get(PEER_AUTH_HEADER) ?? '' } })
    },
    close(_call: ServerUnaryCall<Connection, unknown>, cb: sendUnaryData<object>) {
      cb(null, {})
    },
  }
  const monitor: UntypedServiceImplementation = {
    monitorConnections(call: ServerWritableStream<unknown, ConnectionEvent>) {
      call.write({ type: ConnectionEventType.INITIAL_STATE_TRANSFER, connections: {} })
      call.end()
    },
  }
  return [
    { definition: toGrpcService(NetworkServiceDefinition), implementation: echo },
    { definition: toGrpcService(MonitorConnectionDefinition), implementation: monitor },
  ]
}

async function listener(t: Teardown, opts: { tls: PeerTls } | { insecure: true }, live: string[] | undefined, log = capturingLog().log): Promise<PeerListener> {
  const nodes = live === undefined ? undefined : { list: () => live.map((name) => ({ name })) }
  const l = await startPeerListener({ listen: '127.0.0.1:0', ...opts, services: stubServices(), nodes, log })
  t.teardown(() => l.close(0))
  return l
}

// ------------------------------------------------------------------------------------ in-process

t.test('in-process: the identity rule, the peer handlers see, and the refusals', async (t) => {
  const captured = capturingLog()
  const server = await listener(t, { tls: openTls(t, pki.files('n2')) }, ['n1', 'n2'], captured.log)
  const url = `tcp://${server.address}`
  t.equal(server.secure, true)

  // n1's certificate, claiming to be n3 in the metadata: the handler sees n1, authenticated by mTLS.
  const asN1 = client(t, { url, node: 'n2', self: 'n3', tls: openTls(t, pki.files('n1')) })
  const echoed = await asN1.request(NetworkServiceRequest.fromPartial({ connection: { id: 'c1', networkService: 'peer-test' } }))
  t.same(echoed.labels, { node: 'n1', auth: 'mtls' }, 'the handler learns the certificate\'s node, not the caller\'s claim')
  await asN1.closeConnection(conn('c1'))
  t.equal(asN1.serverCertificate?.fingerprint256, fingerprintOf(pki.files('n2').cert), 'the client saw n2\'s certificate')

  const events: ConnectionEvent[] = []
  await asN1.monitorConnections({ pathSegments: [], networkServices: [] }, (e) => events.push(e))
  t.equal(events[0]?.type, ConnectionEventType.INITIAL_STATE_TRANSFER, 'MonitorConnections is served')

  const n9 = await failure(client(t, { url, node: 'n2', self: 'n9', tls: openTls(t, pki.files('n9')) }).closeConnection(conn('c1')))
  t.equal(n9.code, GrpcStatus.PERMISSION_DENIED, 'a node without a live record: PERMISSION_DENIED')
  t.match(n9.details, /peer node "n9" has no live node record/)
  const refusal = await captured.next((l) => l.msg === 'peer call refused')
  t.match(refusal, { code: 'PERMISSION_DENIED', method: '/networkservice.NetworkService/Close' }, 'the refusal is logged')

  const noSan = await failure(client(t, { url, node: 'n2', self: 'n1', tls: openTls(t, pki.files('no-san')) }).closeConnection(conn('c1')))
  t.equal(noSan.code, GrpcStatus.UNAUTHENTICATED, 'a certificate naming its node by CN only: UNAUTHENTICATED')
  t.match(noSan.details, /no DNS subjectAltName/)
  const twoSans = await failure(client(t, { url, node: 'n2', self: 'n1', tls: openTls(t, pki.files('two-sans')) }).closeConnection(conn('c1')))
  t.equal(twoSans.code, GrpcStatus.UNAUTHENTICATED, 'a certificate naming two nodes: UNAUTHENTICATED')
  t.match(twoSans.details, /exactly one node/)

  const stranger = await failure(client(t, { url, node: 'n2', self: 'n1', tls: openTls(t, pki.files('stranger', 'other-ca')) }).closeConnection(conn('c1')))
  t.equal(stranger.code, GrpcStatus.UNAVAILABLE, 'a client certificate from another CA: the TLS handshake fails')

  // Client side: n2's listener dialed as node n1: its certificate does not name n1.
  const wrongName = await failure(client(t, { url, node: 'n1', self: 'n1', tls: openTls(t, pki.files('n1')) }).closeConnection(conn('c1')))
  t.equal(wrongName.code, GrpcStatus.UNAVAILABLE, 'the client refuses a server certificate naming another node')
  t.match(wrongName.details, /dialed node "n1", but the server certificate names node "n2"/)
})

t.test('in-process: without node records (file store) any certificate from the CA naming a node is admitted', async (t) => {
  const server = await listener(t, { tls: openTls(t, pki.files('n2')) }, undefined)
  const c = client(t, { url: `tcp://${server.address}`, node: 'n2', self: 'n9', tls: openTls(t, pki.files('n9')) })
  t.same((await c.request(NetworkServiceRequest.fromPartial({ connection: { id: 'c', networkService: 'peer-test' } }))).labels, { node: 'n9', auth: 'mtls' })
})

t.test('in-process: --insecure takes the node name from the metadata, checked against the records, marked insecure', async (t) => {
  const captured = capturingLog()
  const server = await listener(t, { insecure: true }, ['n1', 'n2'], captured.log)
  t.equal(server.secure, false)
  t.ok(captured.lines.some((l) => l.level === 'warn' && /plain TCP \(--insecure\)/.test(l.msg)), 'the listener warns it is unauthenticated')
  const url = `tcp://${server.address}`
  const echoed = await client(t, { url, node: 'n2', self: 'n1', insecure: true }).request(NetworkServiceRequest.fromPartial({ connection: { id: 'c', networkService: 'peer-test' } }))
  t.same(echoed.labels, { node: 'n1', auth: 'insecure' })
  const unknown = await failure(client(t, { url, node: 'n2', self: 'n7', insecure: true }).closeConnection(conn('c')))
  t.equal(unknown.code, GrpcStatus.PERMISSION_DENIED, 'a claimed node without a record: PERMISSION_DENIED')
  const tlsToPlain = await failure(client(t, { url, node: 'n2', self: 'n1', tls: openTls(t, pki.files('n1')) }).closeConnection(conn('c')))
  t.equal(tlsToPlain.code, GrpcStatus.UNAVAILABLE, 'a TLS client gets no TLS from a plain listener')
})

t.test('in-process: certificate files re-read: a broken or half-rotated set keeps the previous one', async (t) => {
  const dir = tempDir(t, 'nsm-peer-rotate-')
  const files = pki.install('n2', dir)
  const captured = capturingLog()
  const tls = openTls(t, files, captured.log)
  const first = tls.current
  t.equal(first.serialNumber, serialOf(pki.files('n2').cert))
  t.same(first.dnsNames, ['n2'])
  t.equal(tls.reload(), 'unchanged', 'the same bytes are no change')

  // A certificate cut short (caught mid-write).
  writeFileSync(files.cert, readFileSync(pki.files('n2-next').cert).subarray(0, 200))
  t.equal(tls.reload(), 'kept-previous', 'a truncated certificate')
  t.equal(tls.current.fingerprint256, first.fingerprint256, 'the previous material stays')
  t.match(captured.lines.at(-1), { level: 'warn', msg: /keeping the previous certificates/, problem: /tls\.crt: not a PEM certificate/ })
  // The new certificate before its key.
  writeFileSync(files.cert, readFileSync(pki.files('n2-next').cert))
  t.equal(tls.reload(), 'kept-previous', 'a new certificate with the old key')
  t.match(captured.lines.at(-1), { problem: /the key does not belong to the certificate/ })
  // An empty CA file.
  writeFileSync(files.ca, '')
  t.equal(tls.reload(), 'kept-previous', 'an empty CA file')
  t.equal(tls.current.fingerprint256, first.fingerprint256)

  // The rest of the rotation arrives: the watcher picks it up by itself.
  const changed = new Promise<string>((resolve) => tls.onChange((m) => resolve(m.serialNumber)))
  const gotUpdate = new Promise<Buffer>((resolve) => {
    tls.addIdentityCertificateListener((u) => {
      if (u !== null && !u.certificate.equals(first.cert)) resolve(u.certificate)
    })
  })
  // The watch and its timers do not keep a process alive (an agent has its servers for that): this does.
  const alive = setInterval(() => undefined, 1000)
  t.teardown(() => clearInterval(alive))
  replaceFile(files.ca, pki.files('n2-next').ca)
  replaceFile(files.key, pki.files('n2-next').key)
  t.equal(await changed, serialOf(pki.files('n2-next').cert), 'the watcher loaded the new certificate')
  t.same(await gotUpdate, readFileSync(pki.files('n2-next').cert), 'grpc-js listeners were given it')
  t.match(captured.lines.find((l) => l.msg === 'peer TLS certificates reloaded'), { serialNumber: serialOf(pki.files('n2-next').cert), previousSerialNumber: first.serialNumber })
})

// ------------------------------------------------------------------------------------ real agents

t.test('real agents on etcd', async (t) => {
  const etcd = await startEtcd(t)
  const prefix = `/nsm-peer-${randomBytes(3).toString('hex')}`
  const base = tempDir(t, 'nsm-peer-agents-')
  const n1Files = pki.install('n1', join(base, 'n1-tls'))
  const n2Files = pki.install('n2', join(base, 'n2-tls'))
  const agent = (node: string, files: PeerTlsFiles | undefined): Promise<RunningAgent> =>
    startAgent(t, {
      args: [
        '--node-name', node,
        '--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--etcd-prefix', prefix,
        '--listen', '127.0.0.1:0',
        ...(files === undefined ? ['--insecure'] : ['--tls-cert', files.cert, '--tls-key', files.key, '--tls-ca', files.ca]),
      ],
    })
  const n1 = await agent('n1', n1Files)
  const n2 = await agent('n2', n2Files)
  const readyOf = (a: RunningAgent): Record<string, unknown> => {
    const l = a.logs.find((x) => x.msg === 'peer listener ready')
    if (l === undefined) throw new Error('no "peer listener ready" line')
    return l
  }
  const n2Ready = readyOf(n2)
  t.match(n2Ready, { address: /^127\.0\.0\.1:\d+$/, tls: true, serialNumber: serialOf(n2Files.cert) }, 'n2 logs its peer listener')
  const n2Url = `tcp://${String(n2Ready.address)}`
  t.equal(n2Ready.peerUrl, n2Url, 'without --peer-url, the peer URL is the bound address')
  t.not(n2Url, 'tcp://127.0.0.1:0', 'the bound port, not 0')

  // Both records, with their peer URLs, are in the store (n1's seen by n2: what admits n1's calls).
  const nodes = await n2.client.unary(AgentDefinition, AgentDefinition.methods.listNodes, {})
  t.same(
    nodes.nodes.map((n) => [n.name, n.peerUrl]),
    [
      ['n1', `tcp://${String(readyOf(n1).address)}`],
      ['n2', n2Url],
    ],
    'node records carry the peer URLs',
  )

  const n1Tls = openTls(t, n1Files)
  const asN1 = (): PeerClient => client(t, { url: n2Url, node: 'n2', self: 'n1', tls: n1Tls })

  t.test('n1 calls n2: authentication passes', async (t) => {
    const c = asN1()
    const req = await failure(c.request(NetworkServiceRequest.fromPartial({ connection: { id: `peer-${randomBytes(4).toString('hex')}`, networkService: 'no-such-service' } })))
    t.notOk(([GrpcStatus.UNAUTHENTICATED, GrpcStatus.PERMISSION_DENIED, GrpcStatus.UNAVAILABLE] as number[]).includes(req.code), `Request got past authentication (${req.details})`)
    t.not(req.agentCode, undefined, 'the answer is the pipeline\'s: it carries the agent\'s error name')
    await c.closeConnection(conn('no-such-connection'))
    t.pass('Close of an unknown connection: OK')
    const events: ConnectionEvent[] = []
    const stop = new AbortController()
    const stream = c.monitorConnections({ pathSegments: [], networkServices: [] }, (e) => {
      events.push(e)
      stop.abort()
    }, { signal: stop.signal })
    const ended = await failure(stream)
    t.equal(ended.code, GrpcStatus.CANCELLED, 'the stream ran until cancelled')
    t.equal(events[0]?.type, ConnectionEventType.INITIAL_STATE_TRANSFER, 'MonitorConnections sent its initial state')
    t.equal(c.serverCertificate?.serialNumber, serialOf(n2Files.cert), 'the client saw n2\'s certificate')
  })

  t.test('refused: another CA, a node without a record, plain TCP, an insecure client', async (t) => {
    const stranger = await failure(client(t, { url: n2Url, node: 'n2', self: 'n1', tls: openTls(t, pki.files('stranger', 'other-ca')) }).closeConnection(conn('x')))
    t.equal(stranger.code, GrpcStatus.UNAVAILABLE, `another CA: the TLS handshake fails (${stranger.details})`)
    const n9 = await failure(client(t, { url: n2Url, node: 'n2', self: 'n9', tls: openTls(t, pki.files('n9')) }).closeConnection(conn('x')))
    t.equal(n9.code, GrpcStatus.PERMISSION_DENIED, 'a certificate for node n9, which has no node record')
    t.match(n9.details, /"n9" has no live node record/)
    t.match(await logged(n2, (l) => l.msg === 'peer call refused' && l.code === 'PERMISSION_DENIED'), { reason: /"n9" has no live node record/ }, 'n2 logged the refusal')
    const insecure = await failure(client(t, { url: n2Url, node: 'n2', self: 'n1', insecure: true }).closeConnection(conn('x')))
    t.equal(insecure.code, GrpcStatus.UNAVAILABLE, `an insecure client (plain HTTP/2) to the TLS listener (${insecure.details})`)

    // Plain TCP: the HTTP/2 preface and an empty SETTINGS frame; no HTTP/2 frame ever comes back.
    const [host, port] = String(n2Ready.address).split(':')
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const s = connect(Number(port), host ?? '127.0.0.1')
      const chunks: Buffer[] = []
      s.on('data', (d: Buffer) => chunks.push(d))
      s.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)))
      s.on('close', () => resolve(Buffer.concat(chunks)))
      s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]))
    })
    t.ok(answer.length === 0 || answer[0] === 0x15, `plain TCP: the connection is closed with nothing or a TLS alert (${answer.subarray(0, 8).toString('hex')})`)
  })

  t.test('nsmcni.Agent is not served on the peer port', async (t) => {
    const err = await failure(asN1().unary(AgentDefinition, AgentDefinition.methods.listNodes, {}))
    t.equal(err.code, GrpcStatus.UNIMPLEMENTED, err.details)
  })

  t.test('rotation: n2\'s new certificate is what new connections see, without a restart', async (t) => {
    const next = pki.files('n2-next')
    t.not(serialOf(next.cert), serialOf(n2Files.cert), 'a different serial')
    replaceFile(n2Files.key, next.key)
    replaceFile(n2Files.cert, next.cert)
    t.match(await logged(n2, (l) => l.msg === 'peer TLS certificates reloaded'), { serialNumber: serialOf(next.cert), fingerprint256: fingerprintOf(next.cert) }, 'n2 logged the reload')
    const c = asN1()
    await c.closeConnection(conn('after-rotation'))
    t.equal(c.serverCertificate?.serialNumber, serialOf(next.cert), 'a new connection sees the new serial')
    t.equal(c.serverCertificate?.fingerprint256, fingerprintOf(next.cert))
    t.equal(n2.logs.filter((l) => l.msg === 'ready').length, 1, 'the same agent process (one ready line)')
  })

  t.test('--insecure: plain TCP, logged as such', async (t) => {
    const n3 = await agent('n3', undefined)
    t.ok(n3.logs.some((l) => l.level === 'warn' && /plain TCP \(--insecure\)/.test(String(l.msg))), 'the agent warns that peers are not authenticated')
    const ready = n3.logs.find((l) => l.msg === 'peer listener ready')
    t.match(ready, { tls: false })
    const url = `tcp://${String(ready?.address)}`
    await client(t, { url, node: 'n3', self: 'n1', insecure: true }).closeConnection(conn('x'))
    t.pass('a call naming a live node is served')
    const unnamed = await failure(client(t, { url, node: 'n3', self: 'n8', insecure: true }).closeConnection(conn('x')))
    t.equal(unnamed.code, GrpcStatus.PERMISSION_DENIED, 'a claimed node without a record is refused')
    await n3.stop()
  })

  await t.test('stop: the agent exits 0', async (t) => {
    t.match(await n1.stop(), { code: 0 })
    t.match(await n2.stop(), { code: 0 })
  })
})

t.test('--listen without TLS and without --insecure: the agent does not start (exit 2, naming the flags)', async (t) => {
  const dir = tempDir(t, 'nsm-peer-refuse-')
  const r = await runAgentToExit(t, ['--socket', join(dir, 'agent.sock'), '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0'])
  t.equal(r.code, 2)
  t.match(r.stderr, /--listen: needs mutual TLS \(--tls-cert F --tls-key F --tls-ca F\), or --insecure/)
  const files = pki.files('n1')
  const broken = join(dir, 'broken.crt')
  writeFileSync(broken, 'not a certificate')
  const bad = await runAgentToExit(t, ['--socket', join(dir, 'agent.sock'), '--state-dir', join(dir, 'state'), '--listen', '127.0.0.1:0', '--tls-cert', broken, '--tls-key', files.key, '--tls-ca', files.ca])
  t.equal(bad.code, 2, 'a certificate file that is no certificate: exit 2')
  t.match(bad.stderr, new RegExp(`${broken}: not a PEM certificate`))
})
