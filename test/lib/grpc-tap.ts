// A unix-socket proxy in front of an agent that records the gRPC calls passing through it: the `:path`
// of every request stream a client opens (HTTP/2 HEADERS frames from the client, HPACK-decoded), in
// order. Tests point a CNI netconf's `socket` at it to count the round trips a command makes. Bytes are
// forwarded unchanged both ways; the server, its connections and the socket file go at teardown.
import { createConnection, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { HpackDecoder } from '../../cni/nsm/hpack'
import { tempDir } from './agent'

interface Teardown {
  teardown(fn: () => void | Promise<void>): void
}

export interface GrpcTap {
  /** Where clients connect instead of the agent's socket. */
  socket: string
  /** Method paths of the requests seen so far (`/nsmcni.Agent/Detach`, ...). */
  paths: string[]
  /** Forgets the paths seen so far. */
  reset(): void
}

const PREFACE = 24
const HEADERS = 1
const CONTINUATION = 9
const END_HEADERS = 0x4
const PADDED = 0x8
const PRIORITY = 0x20

/** Reads a client's HTTP/2 byte stream and calls `onPath` for every request it opens. */
function requestPaths(onPath: (path: string) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0)
  let prefaceSeen = false
  const hpack = new HpackDecoder()
  let block: Buffer[] | undefined
  const endBlock = (): void => {
    const fields = hpack.decode(Buffer.concat(block ?? []))
    block = undefined
    onPath(fields.get(':path') ?? '(no :path)')
  }
  return (chunk) => {
    buf = Buffer.concat([buf, chunk])
    if (!prefaceSeen) {
      if (buf.length < PREFACE) return
      buf = buf.subarray(PREFACE)
      prefaceSeen = true
    }
    while (buf.length >= 9) {
      const length = buf.readUIntBE(0, 3)
      if (buf.length < 9 + length) return
      const type = buf[3] as number
      const flags = buf[4] as number
      let payload = buf.subarray(9, 9 + length)
      buf = buf.subarray(9 + length)
      if (type === HEADERS) {
        let pad = 0
        if ((flags & PADDED) !== 0) {
          pad = payload[0] as number
          payload = payload.subarray(1)
        }
        if ((flags & PRIORITY) !== 0) payload = payload.subarray(5)
        block = [payload.subarray(0, payload.length - pad)]
        if ((flags & END_HEADERS) !== 0) endBlock()
      } else if (type === CONTINUATION && block !== undefined) {
        block.push(payload)
        if ((flags & END_HEADERS) !== 0) endBlock()
      }
    }
  }
}

/** Starts a recording proxy to `upstream` (a unix socket path). */
export async function tapGrpc(t: Teardown, upstream: string): Promise<GrpcTap> {
  const socket = join(tempDir(t, 'nsm-tap-'), 'tap.sock')
  const paths: string[] = []
  const open = new Set<Socket>()
  const server = createServer((client) => {
    const agent = createConnection(upstream)
    open.add(client)
    open.add(agent)
    const record = requestPaths((p) => paths.push(p))
    client.on('data', (d: Buffer) => {
      record(d)
      agent.write(d)
    })
    agent.on('data', (d: Buffer) => client.write(d))
    const end = (): void => {
      client.destroy()
      agent.destroy()
      open.delete(client)
      open.delete(agent)
    }
    client.on('close', end)
    agent.on('close', end)
    client.on('error', end)
    agent.on('error', end)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socket, resolve)
  })
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy()
        server.close(() => resolve())
      }),
  )
  return {
    socket,
    paths,
    reset: () => {
      paths.length = 0
    },
  }
}
