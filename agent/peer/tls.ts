// The agent's mutual-TLS material for talking to other agents (--tls-cert, --tls-key, --tls-ca), read from
// PEM files and read again when they change, so certificates rotate without a restart.
//
// How a rotation is seen: fs.watch on the directories holding the three files (a directory, not the files:
// tools replace files by rename, and Kubernetes secret volumes swap a `..data` symlink, neither of which a
// watch on the old file's inode reports), any event there re-reads the files after a short settle, and a
// slow poll catches what a watch can miss. The three files' contents are hashed: unchanged bytes are no
// change. Changed bytes are checked before use (each file parses, the key matches the certificate, Node
// builds a TLS context from them); files caught half-written, or a key not yet matching a new certificate,
// are logged and the previous material stays in use until a later read gives a consistent set.
//
// The material reaches grpc-js through its CertificateProvider interface (`experimental`): the peer
// listener's server credentials and the peer client's channel credentials listen to a PeerTls, and grpc-js
// builds each NEW connection's TLS context from the latest update. Connections already open keep theirs.
import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { createSecureContext } from 'node:tls'
import { dirname } from 'node:path'
import type { experimental } from '@grpc/grpc-js'
import type { Logger } from '../server/log.js'
import { dnsNames } from './identity.js'

type CertificateProvider = experimental.CertificateProvider
type CaListener = experimental.CaCertificateUpdateListener
type IdentityListener = experimental.IdentityCertificateUpdateListener

export interface PeerTlsFiles {
  /** This agent's certificate (PEM; may carry intermediates after it). */
  readonly cert: string
  /** Its private key (PEM). */
  readonly key: string
  /** The CA(s) a peer's certificate must chain to (PEM, one or more certificates). */
  readonly ca: string
}

/** One consistent set of the three files' contents. */
export interface PeerTlsMaterial {
  readonly cert: Buffer
  readonly key: Buffer
  readonly ca: Buffer
  /** sha256 over the three contents: what a re-read compares. */
  readonly hash: string
  /** The certificate's SHA-256 fingerprint (AA:BB:...), serial number (hex) and DNS SANs, for logs. */
  readonly fingerprint256: string
  readonly serialNumber: string
  readonly dnsNames: readonly string[]
  readonly validTo: string
}

/** The files cannot be used: names the file (or files) at fault. */
export class PeerTlsError extends Error {
  override readonly name = 'PeerTlsError'
  constructor(
    readonly file: string,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(`${file}: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause })
  }
}

/** Reads and checks the three files; throws PeerTlsError naming the file at fault. */
export function readPeerTls(files: PeerTlsFiles): PeerTlsMaterial {
  const read = (path: string): Buffer => {
    try {
      return readFileSync(path)
    } catch (err) {
      throw new PeerTlsError(path, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err })
    }
  }
  const cert = read(files.cert)
  const key = read(files.key)
  const ca = read(files.ca)
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(cert)
  } catch (err) {
    throw new PeerTlsError(files.cert, 'not a PEM certificate', { cause: err })
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(key)
  } catch (err) {
    throw new PeerTlsError(files.key, 'not a PEM private key (unencrypted)', { cause: err })
  }
  if (!leaf.checkPrivateKey(privateKey)) throw new PeerTlsError(`${files.cert}, ${files.key}`, 'the key does not belong to the certificate')
  const caCount = pemCertificates(ca)
  if (caCount === 0) throw new PeerTlsError(files.ca, 'holds no PEM certificate')
  try {
    new X509Certificate(ca)
    createSecureContext({ cert, key, ca })
  } catch (err) {
    throw new PeerTlsError(files.ca, `not usable as CA certificates: ${(err as Error).message}`, { cause: err })
  }
  return {
    cert,
    key,
    ca,
    hash: createHash('sha256').update(cert).update('\0').update(key).update('\0').update(ca).digest('hex'),
    fingerprint256: leaf.fingerprint256,
    serialNumber: leaf.serialNumber,
    dnsNames: dnsNames(leaf.subjectAltName),
    validTo: leaf.validTo,
  }
}

function pemCertificates(pem: Buffer): number {
  return pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0
}

export interface PeerTlsOptions {
  log: Logger
  /** Quiet time after a directory event before the files are read (writes come in bursts). Default 50 ms. */
  settleMs?: number
  /** Re-read this often even without events. Default 60 s. */
  pollMs?: number
}

/** The outcome of a re-read. */
export type ReloadResult = 'changed' | 'unchanged' | 'kept-previous'

/**
 * The watched material; a grpc-js CertificateProvider for both the CA and the identity. `open` throws when
 * the files are not usable now; afterwards the material only ever moves to another consistent set.
 */
export class PeerTls implements CertificateProvider {
  private material: PeerTlsMaterial
  private readonly watchers: FSWatcher[] = []
  private readonly caListeners = new Set<CaListener>()
  private readonly identityListeners = new Set<IdentityListener>()
  private readonly changeListeners = new Set<(m: PeerTlsMaterial) => void>()
  private settle: NodeJS.Timeout | undefined
  private poll: NodeJS.Timeout | undefined
  private lastProblem: string | undefined
  private closed = false

  private constructor(
    readonly files: PeerTlsFiles,
    private readonly opts: PeerTlsOptions,
  ) {
    this.material = readPeerTls(files)
  }

  static open(files: PeerTlsFiles, opts: PeerTlsOptions): PeerTls {
    const tls = new PeerTls(files, opts)
    tls.warnIfExpired()
    tls.startWatching()
    return tls
  }

  /** The material in use for new connections. */
  get current(): PeerTlsMaterial {
    return this.material
  }

  /** Called after each change of material (after grpc-js's listeners); returns the unsubscribe. */
  onChange(listener: (m: PeerTlsMaterial) => void): () => void {
    this.changeListeners.add(listener)
    return () => this.changeListeners.delete(listener)
  }

  /** Reads the files now; the watcher calls this, and so may anyone who knows they changed. */
  reload(): ReloadResult {
    if (this.closed) return 'unchanged'
    let next: PeerTlsMaterial
    try {
      next = readPeerTls(this.files)
    } catch (err) {
      const problem = (err as Error).message
      // One line per distinct problem: a half-written file is reported once, not at every event.
      if (problem !== this.lastProblem) {
        this.lastProblem = problem
        this.opts.log.warn('peer TLS files changed but are not usable: keeping the previous certificates', { problem, fingerprint256: this.material.fingerprint256 })
      }
      return 'kept-previous'
    }
    this.lastProblem = undefined
    if (next.hash === this.material.hash) return 'unchanged'
    const previous = this.material
    this.material = next
    this.opts.log.info('peer TLS certificates reloaded', {
      serialNumber: next.serialNumber,
      fingerprint256: next.fingerprint256,
      dnsNames: next.dnsNames,
      validTo: next.validTo,
      previousSerialNumber: previous.serialNumber,
      caChanged: !next.ca.equals(previous.ca),
    })
    for (const l of [...this.identityListeners]) l(this.identityUpdate())
    for (const l of [...this.caListeners]) l(this.caUpdate())
    for (const l of [...this.changeListeners]) l(next)
    this.warnIfExpired()
    return 'changed'
  }

  /** Used all the same (a peer's clock may differ), but peers will refuse it: said loudly. */
  private warnIfExpired(): void {
    if (Date.parse(this.material.validTo) < Date.now()) this.opts.log.error('peer TLS certificate has expired: peers will refuse it', { file: this.files.cert, validTo: this.material.validTo, serialNumber: this.material.serialNumber })
  }

  /** Stops watching; grpc-js keeps the material it was last given. */
  close(): void {
    this.closed = true
    for (const w of this.watchers.splice(0)) w.close()
    if (this.settle !== undefined) clearTimeout(this.settle)
    if (this.poll !== undefined) clearInterval(this.poll)
    this.settle = undefined
    this.poll = undefined
  }

  // grpc-js CertificateProvider. An update is delivered on the next tick, never inside add*Listener: the
  // server credentials register their watcher only after subscribing, and would miss a synchronous one.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener)
    process.nextTick(() => {
      if (this.caListeners.has(listener)) listener(this.caUpdate())
    })
  }
  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener)
  }
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener)
    process.nextTick(() => {
      if (this.identityListeners.has(listener)) listener(this.identityUpdate())
    })
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener)
  }

  private caUpdate(): experimental.CaCertificateUpdate {
    return { caCertificate: this.material.ca }
  }
  private identityUpdate(): experimental.IdentityCertificateUpdate {
    return { certificate: this.material.cert, privateKey: this.material.key }
  }

  private startWatching(): void {
    const dirs = new Set([this.files.cert, this.files.key, this.files.ca].map((f) => dirname(f)))
    for (const dir of dirs) {
      try {
        // Not persistent: watching certificates must not keep the agent alive.
        const w = watch(dir, { persistent: false }, () => this.schedule())
        w.on('error', (err) => this.opts.log.warn('peer TLS files: cannot watch the directory any more: changes are seen by the poll only', { dir, err }))
        this.watchers.push(w)
      } catch (err) {
        this.opts.log.warn('peer TLS files: cannot watch the directory: changes are seen by the poll only', { dir, err })
      }
    }
    this.poll = setInterval(() => this.reload(), this.opts.pollMs ?? 60_000)
    this.poll.unref()
  }

  private schedule(): void {
    if (this.closed || this.settle !== undefined) return
    this.settle = setTimeout(() => {
      this.settle = undefined
      this.reload()
    }, this.opts.settleMs ?? 50)
    this.settle.unref()
  }
}
