// Where the MEMIF mechanism puts a pod's socket (agent/mechanisms/memif/params.ts) and what it accepts as
// the memif root, a pod directory and a whole socket path; the agent flags that set them.
import t from 'tap'
import { memifDirProblem, memifRootProblem, socketPath, MAX_SOCKET_PATH } from '../../agent/mechanisms/memif/params'
import { loadConfig } from '../../agent/config/load'

t.test('the memif root: absolute, normalized, safe in a DPDK device argument', async (t) => {
  t.equal(memifRootProblem('/run/nsm/memif'), undefined)
  t.equal(memifRootProblem('/'), undefined)
  for (const bad of ['run/nsm', '/run/nsm/', '/run//nsm', '/run/../x', '/run/a,b', '/run/a b', '/run/a=b']) t.type(memifRootProblem(bad), 'string', bad)
})

t.test('a pod directory: one path component of safe characters', async (t) => {
  for (const ok of ['0b0e7c2a-6b5a-4d1e-9f3e-1a2b3c4d5e6f', 'abc123', 'A.b_c-d']) t.equal(memifDirProblem(ok), undefined, ok)
  for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a,b', 'a b', 'x'.repeat(129), 'a..b', '-x']) t.type(memifDirProblem(bad), 'string', JSON.stringify(bad))
})

t.test('the socket path: <root>/<dir>/<ifname>.sock, within a unix socket address', async (t) => {
  t.same(socketPath('/run/nsm/memif', 'pod-1', 'net1'), { path: '/run/nsm/memif/pod-1/net1.sock' })
  const long = socketPath(`/${'r'.repeat(60)}`, 'd'.repeat(40), 'net1')
  t.ok('problem' in long && long.problem.includes(String(MAX_SOCKET_PATH)), 'too long for sun_path')
})

t.test('agent flags and keys', async (t) => {
  const { config } = loadConfig(['--memif-root', '/tmp/m', '--memif-forwarder', '/usr/bin/dpdk-testpmd', '--memif-cpu', '1'])
  t.equal(config.memifRoot, '/tmp/m')
  t.equal(config.memifForwarder, '/usr/bin/dpdk-testpmd')
  t.equal(config.memifCpu, 1)
  const d = loadConfig([]).config
  t.same([d.memifRoot, d.memifForwarder, d.memifCpu], ['/run/nsm/memif', 'dpdk-testpmd', undefined])
  t.equal(loadConfig(['--memif-forwarder', 'none']).config.memifForwarder, 'none')
  for (const [flag, value] of [['--memif-root', 'rel'], ['--memif-root', '/a,b'], ['--memif-forwarder', 'rm -rf'], ['--memif-forwarder', 'a;b'], ['--memif-cpu', '-1'], ['--memif-cpu', 'x']]) {
    t.throws(() => loadConfig([flag as string, value as string]), { message: new RegExp(`^${flag}: `) }, `${flag} ${value}`)
  }
})
