// The agent's --state-dir (and the config file's stateDir) under /proc or /sys is refused at load, naming
// the flag or key: Node 20's recursive mkdirSync spins forever on /proc.
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '../../agent/config/config'
import { parseConfigFile, parseFlags } from '../../agent/config/settings'

const thrown = (f: () => unknown): Error | undefined => {
  try {
    f()
  } catch (err) {
    return err as Error
  }
  return undefined
}

t.test('--state-dir under /proc or /sys is refused naming the flag', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'nsm-cfg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  symlinkSync('/proc/self', join(dir, 'link'))
  for (const bad of ['/proc/nsm', '/proc/self/nsm', '/sys/nsm', '/var/../proc/x', join(dir, 'link', 'x')]) {
    const err = thrown(() => parseFlags(['--state-dir', bad]))
    t.ok(err instanceof ConfigError, `${bad}: refused`)
    t.match(err?.message, /^--state-dir: .*\/(proc|sys)/, `${bad}: names the flag and why`)
    const fromFile = thrown(() => parseConfigFile('/etc/nsm/agent.yaml', `stateDir: ${bad}\n`))
    t.ok(fromFile instanceof ConfigError, `${bad} in the file: refused`)
    t.match(fromFile?.message, /stateDir: .*\/(proc|sys)/, `${bad} in the file: names the key`)
  }
  t.equal(parseFlags(['--state-dir', join(dir, 'state')]).overrides.stateDir, join(dir, 'state'), 'an ordinary directory is fine')
  t.equal(parseFlags(['--state-dir', '/processes']).overrides.stateDir, '/processes', '/processes is not /proc')
})
