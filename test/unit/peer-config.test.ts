// Issue 12 item 1: the peer listener's flags and config keys (--listen, --tls-cert/--tls-key/--tls-ca,
// --insecure) and the rule between them: --listen needs mutual TLS or an explicit --insecure; the TLS files
// and --insecure exclude each other; neither without --listen. Also peerUrlFor, the URL recorded when
// --peer-url is not given.
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../../agent/config/config.js'
import { loadConfig } from '../../agent/config/load.js'
import { parseConfigFile, parseFlags, USAGE } from '../../agent/config/settings.js'
import { peerUrlFor } from '../../agent/peer/server.js'

const TLS = ['--tls-cert', '/etc/nsm/tls.crt', '--tls-key', '/etc/nsm/tls.key', '--tls-ca', '/etc/nsm/ca.crt']

function refused(t: Test, argv: string[], where: string, message: RegExp): void {
  try {
    loadConfig(argv)
    t.fail(`${argv.join(' ')}: accepted`)
  } catch (err) {
    t.ok(err instanceof ConfigError, `${argv.join(' ')}: a ConfigError`)
    t.equal((err as ConfigError).where, where, `${argv.join(' ')}: names ${where}`)
    t.match((err as Error).message, message)
  }
}

t.test('accepted: mutual TLS, or --insecure, or nothing', async (t) => {
  const none = loadConfig([]).config
  t.same([none.listen, none.tlsCert, none.tlsKey, none.tlsCa, none.insecure], [undefined, undefined, undefined, undefined, false], 'off by default')
  const tls = loadConfig(['--listen', '10.0.0.1:5002', ...TLS]).config
  t.same([tls.listen, tls.tlsCert, tls.tlsKey, tls.tlsCa, tls.insecure], ['10.0.0.1:5002', '/etc/nsm/tls.crt', '/etc/nsm/tls.key', '/etc/nsm/ca.crt', false])
  t.same(loadConfig(['--listen', '127.0.0.1:0', '--insecure']).config.insecure, true)
  for (const listen of ['[::1]:5002', '0.0.0.0:5002', '[::]:0', 'node-1.example.org:65535']) {
    t.equal(loadConfig([`--listen=${listen}`, ...TLS]).config.listen, listen, listen)
  }
})

t.test('refused: --listen without TLS or --insecure, part of the TLS files, both, or either without --listen', async (t) => {
  refused(t, ['--listen', '127.0.0.1:5002'], '--listen', /needs mutual TLS \(--tls-cert F --tls-key F --tls-ca F\), or --insecure/)
  refused(t, ['--listen', '127.0.0.1:5002', '--tls-cert', '/a.crt', '--tls-key', '/a.key'], '--listen', /needs --tls-ca too/)
  refused(t, ['--listen', '127.0.0.1:5002', '--tls-ca', '/ca.crt'], '--listen', /needs --tls-cert and --tls-key too/)
  refused(t, ['--listen', '127.0.0.1:5002', '--insecure', ...TLS], '--insecure', /excludes --tls-cert, --tls-key, --tls-ca/)
  refused(t, ['--listen', '127.0.0.1:5002', '--insecure', '--tls-ca', '/ca.crt'], '--insecure', /excludes --tls-ca/)
  refused(t, TLS, '--tls-cert', /needs --listen HOST:PORT/)
  refused(t, ['--tls-key', '/a.key'], '--tls-key', /needs --listen/)
  refused(t, ['--insecure'], '--insecure', /needs --listen/)
})

t.test('refused: malformed values', async (t) => {
  for (const bad of ['127.0.0.1', ':5002', '127.0.0.1:65536', '::1:5002', '[10.0.0.1]:5002', '[::1]', 'host:port', 'a b:1']) {
    t.throws(() => parseFlags(['--listen', bad]), { name: 'ConfigError', where: '--listen' }, `--listen ${bad}`)
  }
  t.throws(() => parseFlags(['--tls-cert', 'relative.crt']), { name: 'ConfigError', message: /--tls-cert: must be an absolute path/ })
  t.throws(() => parseFlags(['--insecure=yes']), { name: 'ConfigError', message: /--insecure: takes no value/ })
  t.throws(() => parseFlags(['--listen']), { name: 'ConfigError', message: /--listen: needs a value/ })
})

t.test('the config file: the same keys and the same rule', async (t) => {
  t.same(parseConfigFile('/etc/nsm/agent.yaml', 'listen: "10.0.0.1:5002"\ntlsCert: /c.crt\ntlsKey: /c.key\ntlsCa: /ca.crt\n'), { listen: '10.0.0.1:5002', tlsCert: '/c.crt', tlsKey: '/c.key', tlsCa: '/ca.crt' })
  t.same(parseConfigFile('/etc/nsm/agent.yaml', 'insecure: true\n'), { insecure: true })
  t.throws(() => parseConfigFile('/etc/nsm/agent.yaml', 'insecure: "yes"\n'), { name: 'ConfigError', message: /insecure: must be true or false/ })
  t.throws(() => parseConfigFile('/etc/nsm/agent.yaml', 'tlsCa: ca.crt\n'), { name: 'ConfigError', message: /tlsCa: must be an absolute path/ })
  t.throws(() => parseConfigFile('/etc/nsm/agent.yaml', 'tlsCertificate: /c.crt\n'), { name: 'ConfigError', message: /unknown key \(known: .*listen, tlsCert, tlsKey, tlsCa, insecure[,)]/ })

  const dir = mkdtempSync(join(tmpdir(), 'nsm-peer-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'agent.yaml')
  writeFileSync(file, 'listen: "127.0.0.1:5002"\n')
  refused(t, ['--config', file], '--listen', /needs mutual TLS/)
  t.equal(loadConfig(['--config', file, '--insecure']).config.insecure, true, 'a flag completes the file')
  writeFileSync(file, 'listen: "127.0.0.1:5002"\ninsecure: true\n')
  refused(t, ['--config', file, ...TLS], '--insecure', /excludes/)
})

t.test('--help names the flags and keys', async (t) => {
  t.match(USAGE, '[--listen HOST:PORT (--tls-cert F --tls-key F --tls-ca F | --insecure)]')
  t.match(USAGE, 'listen, tlsCert, tlsKey, tlsCa, insecure')
})

t.test('the peer URL recorded without --peer-url', async (t) => {
  t.equal(peerUrlFor('127.0.0.1:41234', ''), 'tcp://127.0.0.1:41234')
  t.equal(peerUrlFor('[::1]:5002', ''), 'tcp://[::1]:5002')
  t.equal(peerUrlFor('0.0.0.0:5002', '192.0.2.7'), 'tcp://192.0.2.7:5002', 'a wildcard host: the underlay address')
  t.equal(peerUrlFor('[::]:5002', '2001:db8::7'), 'tcp://[2001:db8::7]:5002')
  t.equal(peerUrlFor('0.0.0.0:5002', ''), 'tcp://0.0.0.0:5002', 'no underlay address: as bound')
})
