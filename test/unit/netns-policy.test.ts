// pkg/netns-policy.ts by spelling alone: which patterns the agent can be configured with, and which paths
// each pattern form accepts. (Judging by what a path opens — bind mounts, symlinks, /proc/<pid> of a
// process in the host netns — needs real namespaces: test/integration/kernel-netns-policy.test.ts.)
// Paths here do not exist, so only their spelling is judged.
import t from 'tap'
import { DEFAULT_NETNS_PATTERNS, NetnsPatternError, NetnsPolicy, parseNetnsPattern } from '../../pkg/netns-policy.js'

// No such pid can exist (pid_max is at most 2^22).
const PID = '/proc/999999999/ns/net'

t.test('pattern forms: accepted', async (t) => {
  t.same(parseNetnsPattern('/var/run/netns/*'), { kind: 'dir', text: '/var/run/netns/*', dir: '/var/run/netns' })
  t.same(parseNetnsPattern('/proc/*/ns/net'), { kind: 'proc-pid', text: '/proc/*/ns/net' })
  t.same(parseNetnsPattern('/srv/pods/ns-a'), { kind: 'exact', text: '/srv/pods/ns-a' })
  t.same(parseNetnsPattern('/x/*'), { kind: 'dir', text: '/x/*', dir: '/x' })
  t.doesNotThrow(() => new NetnsPolicy(DEFAULT_NETNS_PATTERNS))
})

t.test('pattern forms: refused, naming the pattern and the accepted forms', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['', /is empty/],
    ['relative/*', /is not an absolute path/],
    ['/var/run/*/x', /uses \* other than as the whole last component/],
    ['/a/**', /uses \*/],
    ['/a/b*', /uses \*/],
    ['/a/*/*', /uses \*/],
    ['/*', /every top-level path/],
    ['/', /root directory/],
    ['/var/run/netns/', /not in normal form/],
    ['/var/run/../netns/*', /not in normal form/],
    ['/var//run/*', /not in normal form/],
    ['/var/./run/*', /not in normal form/],
    ['/proc/self/ns/net', /under \/proc/],
    ['/proc/*/ns/*', /under \/proc/],
    ['/proc/*', /under \/proc/],
    ['/proc/1/ns/net', /under \/proc/],
    ['/a\0b', /NUL/],
  ]
  for (const [pattern, why] of bad) {
    const err = t.throws(() => parseNetnsPattern(pattern), NetnsPatternError, JSON.stringify(pattern)) as unknown as NetnsPatternError
    t.match(err.message, why, `${JSON.stringify(pattern)}: why`)
    t.match(err.message, JSON.stringify(pattern), `${JSON.stringify(pattern)}: names the pattern`)
    t.match(err.message, /accepted forms: \/dir\/\* .*\/proc\/\*\/ns\/net .*exact absolute path/, `${JSON.stringify(pattern)}: lists the accepted forms`)
    t.throws(() => new NetnsPolicy(['/run/netns/*', pattern]), NetnsPatternError, `${JSON.stringify(pattern)}: the policy refuses to be built`)
  }
  t.throws(() => new NetnsPolicy([]), NetnsPatternError, 'an empty list accepts nothing: refused')
})

t.test('each path form against the default patterns', async (t) => {
  const policy = new NetnsPolicy()
  const accepted = ['/var/run/netns/cni-1234', '/run/netns/x', '/run/netns/a.b-c_d', PID]
  for (const p of accepted) t.equal(policy.check(p), p, `accepted: ${p}`)
  const refused: Array<[string, string, RegExp]> = [
    ['', 'INVALID_ARGUMENT', /empty/],
    ['/run/netns/a\0b', 'INVALID_ARGUMENT', /NUL/],
    ['relative/x', 'NETNS_NOT_ALLOWED', /not absolute/],
    ['/var/run/netns/', 'NETNS_NOT_ALLOWED', /normal form/],
    ['/var/run/netns/./x', 'NETNS_NOT_ALLOWED', /normal form/],
    ['/var/run/netns/../../etc/passwd', 'NETNS_NOT_ALLOWED', /normal form/],
    ['/var/run/netns//x', 'NETNS_NOT_ALLOWED', /normal form/],
    ['/var/run/netns/a/b', 'NETNS_NOT_ALLOWED', /outside the allowlist/],
    ['/var/run/netns', 'NETNS_NOT_ALLOWED', /outside/],
    ['/var/run/netnsx/a', 'NETNS_NOT_ALLOWED', /outside/],
    ['/proc/self/ns/net', 'NETNS_NOT_ALLOWED', /agent's own network namespace/],
    ['/proc/thread-self/ns/net', 'NETNS_NOT_ALLOWED', /agent's own network namespace/],
    ['/proc/0/ns/net', 'NETNS_NOT_ALLOWED', /outside/],
    ['/proc/01/ns/net', 'NETNS_NOT_ALLOWED', /outside/],
    ['/proc/42/ns/mnt', 'NETNS_NOT_ALLOWED', /outside/],
    ['/proc/42/task/42/ns/net', 'NETNS_NOT_ALLOWED', /outside/],
    ['/etc/passwd', 'NETNS_NOT_ALLOWED', /outside/],
  ]
  for (const [p, code, msg] of refused) {
    t.throws(() => policy.check(p), { name: 'KernelError', code, message: msg }, `refused: ${JSON.stringify(p)}`)
  }
  t.throws(() => policy.check('/etc/x'), { message: 'netns /etc/x is outside the allowlist (/var/run/netns/*, /run/netns/*, /proc/*/ns/net)' }, 'the message names the path and the patterns')
  t.throws(() => policy.check('/etc/a b\n'), { message: 'netns "/etc/a b\\n" is outside the allowlist (/var/run/netns/*, /run/netns/*, /proc/*/ns/net)' }, 'a path with odd characters is quoted')
})

t.test('exact paths and custom directories; /proc only when configured', async (t) => {
  const policy = new NetnsPolicy(['/srv/ns/*', '/opt/pod-ns'])
  t.equal(policy.check('/srv/ns/a'), '/srv/ns/a')
  t.equal(policy.check('/opt/pod-ns'), '/opt/pod-ns', 'an exact path')
  t.throws(() => policy.check('/opt/pod-ns/x'), { code: 'NETNS_NOT_ALLOWED' }, 'an exact path is not a directory')
  t.throws(() => policy.check('/opt/pod-nsx'), { code: 'NETNS_NOT_ALLOWED' })
  t.throws(() => policy.check('/var/run/netns/a'), { code: 'NETNS_NOT_ALLOWED' }, 'the defaults are replaced')
  t.throws(() => policy.check(PID), { code: 'NETNS_NOT_ALLOWED', message: /outside/ }, 'no /proc pattern: no pid paths')
  t.throws(() => policy.check('/proc/self/ns/net'), { code: 'NETNS_NOT_ALLOWED', message: /outside/ })
})

t.test('identify and open on a path that does not exist', async (t) => {
  const policy = new NetnsPolicy()
  t.same(policy.identify('/run/netns/t-no-such-ns'), { path: '/run/netns/t-no-such-ns', key: undefined })
  t.throws(() => policy.open('/run/netns/t-no-such-ns'), { name: 'KernelError', code: 'BAD_NETNS', message: /does not exist/ })
  t.throws(() => policy.open('/etc/passwd'), { code: 'NETNS_NOT_ALLOWED' }, 'spelling first: nothing outside the allowlist is opened')
})
