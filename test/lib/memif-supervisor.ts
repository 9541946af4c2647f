// A MemifForwarders supervisor in a process of its own (a stand-in for the agent), for tests that kill the
// agent for real: `startSupervisorProcess` runs this file with tsx; it starts the supervisor on `runDir`,
// attaches `ports`, prints `ready <forwarder pids>` and then only waits to be killed. SIGKILLed at teardown.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { MemifForwarders } from '../../agent/mechanisms/memif/forwarder'
import type { MemifPort } from '../../agent/mechanisms/memif/forwarder-types'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface SupervisorProcess {
  child: ChildProcess
  /** The forwarder processes it runs. */
  forwarderPids: number[]
  /** SIGKILL, resolves once it has exited. */
  kill(): Promise<void>
}

export async function startSupervisorProcess(t: Teardown, runDir: string, ports: MemifPort[]): Promise<SupervisorProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), JSON.stringify({ runDir, ports })], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((res) => child.once('exit', () => res()))
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  t.teardown(kill)
  let out = ''
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  const pids = await new Promise<number[]>((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d
      const m = /^ready ([\d,]*)$/m.exec(out)
      if (m !== null) resolve((m[1] ?? '').split(',').filter((x) => x !== '').map(Number))
    })
    void exited.then(() => reject(new Error(`the supervisor process exited: ${out}`)))
  })
  return { child, forwarderPids: pids, kill }
}

async function main(arg: string): Promise<void> {
  const { runDir, ports } = JSON.parse(arg) as { runDir: string; ports: MemifPort[] }
  const fw = new MemifForwarders({ runDir })
  await fw.start()
  for (const p of ports) await fw.attach(p)
  process.stdout.write(`ready ${fw.processes().map((p) => p.pid).join(',')}\n`)
  setInterval(() => undefined, 1 << 30)
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] !== undefined) {
  main(process.argv[2]).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`)
    process.exit(1)
  })
}
