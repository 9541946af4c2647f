// dist/nsmctl: the command line for the node agent (over its unix socket, through agent/client).
//
//   nsmctl [--socket PATH] [-o table|json] COMMAND ...
//     register NAME --service SVC[?k=v&k2=v2]... [--labels k=v,...] [--netns PATH | --url URL]
//                   [--cidr CIDR]... [--route PREFIX[@NEXTHOP]]... [--exclude CIDR]... [--node NODE] [--ttl DUR]
//     unregister NAME
//     apply -f FILE|-            NetworkService YAML (v1alpha1 seed form or v1), every document
//     delete service NAME
//     get services|endpoints|connections [-w]   (alias: list; -w streams changes)
//     explain SERVICE [--labels k=v,...]
//     status
//     topology [-o table|json|dot]   the mesh: nodes, pods, endpoints, services, connections, chains
//
// Exit codes: 0 done; 1 the agent refused (the gRPC status and message are printed); 2 bad usage or
// input (the flag, file or field is named); 3 the agent is unreachable.
import { readFileSync } from 'node:fs'
import { GrpcCallError, statusName } from '../client/client.js'
import { UsageError } from './args.js'
import { runCommand, type Io } from './commands.js'

export async function main(argv: readonly string[], io: Io): Promise<number> {
  try {
    return await runCommand(argv, io)
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`nsmctl: ${err.message}\n(see nsmctl --help)\n`)
      return 2
    }
    if (err instanceof GrpcCallError) {
      if (err.agentCode === 'AGENT_UNREACHABLE') {
        io.err(`nsmctl: ${err.message}\n`)
        return 3
      }
      io.err(`nsmctl: ${statusName(err.code)}: ${err.message}\n`)
      return 1
    }
    throw err
  }
}

const io: Io = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  readFile: (path) => readFileSync(path === '-' ? 0 : path, 'utf8'),
  env: process.env,
  now: () => Date.now(),
}

main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`nsmctl: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  },
)
