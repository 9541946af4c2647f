// Throwaway PKI for tests and the multi-node demo: CAs and node certificates made with openssl (EC P-256,
// two days) in a temp dir removed at teardown. A node certificate carries the node name as its one DNS SAN
// (agent/peer/identity.ts) and both server and client usage, as an agent presents it both ways.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { PeerTlsFiles } from '../../agent/peer/tls'
import { tempDir } from './agent'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr || r.error?.message}`)
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

/** Throwaway CAs and node certificates (EC P-256, two days) in a temp dir removed at teardown. */
export class Pki {
  readonly dir: string
  constructor(t: Teardown) {
    this.dir = tempDir(t, 'nsm-peer-pki-')
    this.ca('ca')
    this.ca('other-ca')
  }
  private ca(name: string): void {
    openssl(this.dir, ['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=nsm-peer-test-${name}`])
  }
  /** A leaf certificate `name.crt`/`name.key` signed by `signer`, with these SANs (openssl syntax) and CN. */
  leaf(name: string, opts: { signer?: string; san?: string; cn?: string } = {}): PeerTlsFiles {
    const signer = opts.signer ?? 'ca'
    const ext = `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n${opts.san === undefined ? '' : `subjectAltName=${opts.san}\n`}`
    writeFileSync(join(this.dir, `${name}.ext`), ext)
    openssl(this.dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${opts.cn ?? name}`])
    openssl(this.dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${signer}.crt`, '-CAkey', `${signer}.key`, '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`])
    return this.files(name)
  }
  files(name: string, ca = 'ca'): PeerTlsFiles {
    return { cert: join(this.dir, `${name}.crt`), key: join(this.dir, `${name}.key`), ca: join(this.dir, `${ca}.crt`) }
  }
  /** Copies a certificate set into its own directory (as a secret volume holds it): tls.crt, tls.key, ca.crt. */
  install(name: string, into: string): PeerTlsFiles {
    mkdirSync(into, { recursive: true })
    const src = this.files(name)
    const dst = { cert: join(into, 'tls.crt'), key: join(into, 'tls.key'), ca: join(into, 'ca.crt') }
    copyFileSync(src.cert, dst.cert)
    copyFileSync(src.key, dst.key)
    copyFileSync(src.ca, dst.ca)
    return dst
  }
}
