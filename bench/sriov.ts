// SR-IOV VF vs veth: CNI ADD and DEL latency through dist/nsm exec'd as a runtime does, with one real agent,
// in one run, interleaved (veth ADD, veth DEL, VF ADD, VF DEL, ...) so both see the same machine. The VF is
// a fake-sysfs one (test/integration/sriov.test.ts's wiring: a veth end standing in for the VF, its peer for
// the PF): ADD claims it (a durable file), tags, moves and renames it into the pod, sets MAC, MTU, address,
// routes, builds the endpoint's macvlan on the PF and writes the device-info file; DEL gives it all back.
// The veth is the KERNEL mechanism's pair. Same pod netns, same endpoint, a new container id per round.
//
//   npx tsx bench/sriov.ts      (root; BENCH_N rounds, default 40)
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startMesh, WEB } from '../test/integration/nsm-fixture'
import { latencyTable, machine, ms, stats, writeSection } from './lib/report'

const N = Number(process.env.BENCH_N ?? 40)
const cleanups: Array<() => void | Promise<void>> = []
const teardown = { teardown: (fn: () => void | Promise<void>) => void cleanups.push(fn) }
async function cleanup(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c()
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => void cleanup().then(() => process.exit(130)))

const tag = `bs${process.pid % 10000}`
const run = (cmd: string, args: string[]): void => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
}
try {
  const work = mkdtempSync(join(tmpdir(), 'nsm-bench-sriov-'))
  cleanups.push(() => rmSync(work, { recursive: true, force: true }))
  const sysfs = join(work, 'sys')
  const pci = '0000:5e:01.0'
  const [vf, pf] = [`${tag}vf`, `${tag}pf`]
  run('ip', ['link', 'add', vf, 'mtu', '1400', 'type', 'veth', 'peer', 'name', pf])
  cleanups.push(() => void spawnSync('ip', ['link', 'del', pf]))
  run('ip', ['link', 'set', pf, 'up'])
  mkdirSync(join(sysfs, 'bus/pci/devices', pci, 'net', vf), { recursive: true })
  mkdirSync(join(sysfs, 'bus/pci/devices/0000:5e:00.0/net', pf), { recursive: true })
  symlinkSync('../0000:5e:00.0', join(sysfs, 'bus/pci/devices', pci, 'physfn'))
  symlinkSync('../../../../bus/pci/drivers/iavf', join(sysfs, 'bus/pci/devices', pci, 'driver'))
  for (const ns of [`${tag}ep`, `${tag}p`]) {
    run('ip', ['netns', 'add', ns])
    cleanups.push(() => void spawnSync('ip', ['netns', 'del', ns]))
  }
  const mesh = await startMesh(teardown, { network: 'bench', agentArgs: ['--sysfs-root', sysfs, '--devinfo-dir', join(work, 'devinfo')] })
  await mesh.endpoint({ name: 'bench-ep', netns: `/var/run/netns/${tag}ep`, pools: ['172.22.0.0/16'] })
  const pod = `/var/run/netns/${tag}p`
  const kinds = {
    veth: mesh.conf({ networkService: WEB }),
    vf: mesh.conf({ networkService: WEB, runtimeConfig: { deviceID: pci } }),
  }
  const samples = { veth: { add: [] as number[], del: [] as number[] }, vf: { add: [] as number[], del: [] as number[] } }
  const timed = async (kind: 'veth' | 'vf', command: 'ADD' | 'DEL', id: string): Promise<number> => {
    const t0 = performance.now()
    const out = await mesh.cni({ command, containerId: id, netns: pod, ifname: 'net1', stdin: kinds[kind] })
    const dt = performance.now() - t0
    if (out.exitCode !== 0) throw new Error(`${kind} ${command}: ${out.stdout} ${out.stderr}`)
    return dt
  }
  for (let i = -3; i < N; i++) {
    for (const kind of ['veth', 'vf'] as const) {
      const id = `${kind}-${i + 3}`
      const add = await timed(kind, 'ADD', id)
      const del = await timed(kind, 'DEL', id)
      if (i >= 0) {
        samples[kind].add.push(add)
        samples[kind].del.push(del)
      }
    }
  }
  const back = spawnSync('ip', ['-j', 'link', 'show', 'dev', vf], { encoding: 'utf8' })
  if (back.status !== 0) throw new Error(`the VF ${vf} is not back in the host netns after the run`)
  const md = [
    '## SR-IOV VF vs veth: CNI ADD / DEL latency',
    '',
    `\`bench/sriov.ts\`, ${machine()}. \`dist/nsm\` exec'd as a runtime does (spawn, env, stdin, exit) against one real agent, ` +
      `interleaved per round (veth ADD, veth DEL, VF ADD, VF DEL), ${N} rounds after 3 warm-up rounds, same pod netns and endpoint. ` +
      'The VF is a fake-sysfs one whose netdev is a veth end standing in for the VF (its peer for the PF): ADD claims it (a durable ' +
      'file under the state dir), tags, moves and renames it into the pod, sets MAC, MTU, address and routes, builds the endpoint\'s ' +
      'macvlan on the PF and writes the device-info file; DEL gives it back (name, MAC, MTU, down) and removes the rest. A real VF ' +
      'adds its driver\'s own time for the move and MAC change. Milliseconds, wall time of the exec.',
    '',
    latencyTable([
      ['veth ADD (KERNEL)', samples.veth.add],
      ['VF ADD (SR-IOV)', samples.vf.add],
      ['veth DEL (KERNEL)', samples.veth.del],
      ['VF DEL (SR-IOV)', samples.vf.del],
    ]),
  ].join('\n')
  writeSection('sriov', md)
  process.stdout.write(`${md}\n`)
} finally {
  await cleanup()
}
