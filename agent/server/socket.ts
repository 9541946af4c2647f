// The agent's unix socket carries two protocols: gRPC (HTTP/2: nsmctl, NSM clients and endpoints) and the
// CNI shim's one-call frames (cni/nsm/frame.ts). Each connection is told apart by its first bytes: an
// HTTP/2 client opens with the preface `PRI * HTTP/2.0`, the shim with frame.ts's MAGIC. gRPC
// connections are handed to grpc-js (a connection injector: the gRPC server never binds a socket of its
// own); shim connections get one answer and are closed.
import { createServer, type Server, type Socket } from 'node:net'
import { decodeRequest, encodeAnswer, MAGIC, type ShimAnswer, type ShimRequest } from '../../cni/nsm/frame.js'

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0')
/** Bytes needed to tell the two apart. */
const SNIFF = 4

export interface SocketHandlers {
  grpc(socket: Socket): void
  cni(req: ShimRequest): Promise<ShimAnswer>
  /** A failure answering a shim (logged; the shim reports the closed connection as 11). */
  onError(err: unknown): void
}

export function dualProtocolServer(h: SocketHandlers): Server {
  // Half-open: the shim ends its side once its request is sent and waits for the answer on the other.
  return createServer({ allowHalfOpen: true }, (socket) => {
    let buf: Buffer = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      if (buf.length < SNIFF) return
      if (buf.subarray(0, SNIFF).equals(H2_PREFACE.subarray(0, SNIFF))) {
        socket.removeListener('data', onData)
        socket.pause()
        socket.unshift(buf)
        h.grpc(socket)
        return
      }
      if (!buf.subarray(0, Math.min(buf.length, MAGIC.length)).equals(MAGIC.subarray(0, Math.min(buf.length, MAGIC.length)))) {
        socket.destroy()
        return
      }
      let req: ShimRequest | undefined
      try {
        req = decodeRequest(buf)
      } catch (err) {
        h.onError(err)
        socket.destroy()
        return
      }
      if (req === undefined) return
      socket.removeListener('data', onData)
      h.cni(req).then(
        (answer) => socket.end(encodeAnswer(answer)),
        (err: unknown) => {
          h.onError(err)
          socket.destroy()
        },
      )
    }
    socket.on('data', onData)
    // A client that goes away mid-call (the shim killed by its runtime): nothing to answer any more.
    socket.on('error', () => socket.destroy())
  })
}
