// A minimal HTTP/2 client (cleartext, prior knowledge) over the agent's unix socket, for unary gRPC
// calls from the plugin. Why not node:http2: loading it costs ~12 ms of CPU per exec (measured here,
// `node -e "require('node:http2')"` vs `node -e 0`), a third of a whole `node -e 0`, and the plugin's
// ADD budget is 1.3 × `node -e 0` (BENCHMARKS.md). The socket is unix-stream.ts (not node:net either).
//
// What it does: the connection preface and SETTINGS (header table size 0, no push, large windows so the
// server never waits for a WINDOW_UPDATE), SETTINGS and PING acknowledgements, one stream per request
// (HEADERS + DATA with END_STREAM), response HEADERS / CONTINUATION / DATA / trailers, RST_STREAM and
// GOAWAY. HPACK in hpack.ts. What it does not: TLS, server push, priorities, sending more than the
// server's initial window (our requests are a few hundred bytes; the call is refused beyond 64 KiB).
import { connectUnix, type ByteStream } from './unix-stream'
import { encodeHeaders, HpackDecoder } from './hpack'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const T = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const
const F = { END_STREAM: 1, ACK: 1, END_HEADERS: 4, PADDED: 8, PRIORITY: 32 } as const
const MAX_WINDOW = 0x7fffffff
const MAX_FRAME = 16384
const DEFAULT_WINDOW = 65535

/** A failure below gRPC: the socket (errno set when it could not be reached), the protocol, a reset. */
export class H2Error extends Error {
  override readonly name = 'H2Error'
  constructor(
    message: string,
    /** ENOENT, ECONNREFUSED, ... when the connection itself failed. */
    readonly errno?: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause })
  }
}

export interface H2Response {
  headers: Map<string, string>
  trailers: Map<string, string>
  data: Buffer
}

interface Stream {
  resolve(r: H2Response): void
  reject(e: Error): void
  headers: Map<string, string> | undefined
  data: Buffer[]
}

// Plain byte arithmetic instead of Buffer's writeUIntBE / writeUInt32BE / concat: each of those costs its
// first caller a lazy compile of Node's own code (~0.1–0.2 ms apiece), and every plugin call is a first.
function putU32(b: Uint8Array, at: number, n: number): void {
  b[at] = (n >>> 24) & 0xff
  b[at + 1] = (n >>> 16) & 0xff
  b[at + 2] = (n >>> 8) & 0xff
  b[at + 3] = n & 0xff
}

function frame(type: number, flags: number, id: number, payload?: Uint8Array): Buffer {
  const len = payload === undefined ? 0 : payload.length
  const f = Buffer.allocUnsafe(9 + len)
  f[0] = (len >>> 16) & 0xff
  f[1] = (len >>> 8) & 0xff
  f[2] = len & 0xff
  f[3] = type
  f[4] = flags
  putU32(f, 5, id)
  if (payload !== undefined) f.set(payload, 9)
  return f
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  putU32(b, 0, n)
  return b
}

function settings(pairs: Array<[number, number]>): Buffer {
  const b = Buffer.allocUnsafe(6 * pairs.length)
  pairs.forEach(([k, v], i) => {
    b[6 * i] = (k >>> 8) & 0xff
    b[6 * i + 1] = k & 0xff
    putU32(b, 6 * i + 2, v)
  })
  return b
}

/** The parts one after another in a new buffer. */
function join(parts: readonly Uint8Array[]): Buffer {
  let n = 0
  for (const p of parts) n += p.length
  const out = Buffer.allocUnsafe(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

export class H2Connection {
  private sock: ByteStream | undefined
  private nextId = 1
  private readonly streams = new Map<number, Stream>()
  private buf: Buffer = Buffer.alloc(0)
  private readonly decoder = new HpackDecoder()
  /** A header block split over CONTINUATION frames. */
  private partial: { id: number; parts: Buffer[]; endStream: boolean } | undefined
  private dead: H2Error | undefined
  private connected = false
  /** Deadlines of requests written before the connection was up (armed when it is). */
  private readonly onConnected: Array<() => void> = []

  constructor(readonly path: string) {}

  private open(): ByteStream {
    if (this.sock !== undefined) return this.sock
    const s = connectUnix(this.path, {
      data: (d) => {
        try {
          this.onData(d)
        } catch (err) {
          this.fail(new H2Error(`http2: ${(err as Error).message}`, undefined, { cause: err }))
          s.close()
        }
      },
      error: (message, errno) => this.fail(new H2Error(message, errno)),
      connected: () => {
        this.connected = true
        for (const f of this.onConnected.splice(0)) f()
      },
    })
    // SETTINGS: HEADER_TABLE_SIZE 0, ENABLE_PUSH 0, INITIAL_WINDOW_SIZE max; the connection window too.
    s.write(join([PREFACE, frame(T.SETTINGS, 0, 0, settings([[1, 0], [2, 0], [4, MAX_WINDOW]])), frame(T.WINDOW_UPDATE, 0, 0, u32(MAX_WINDOW - DEFAULT_WINDOW))]))
    this.sock = s
    return s
  }

  /** One request: HEADERS then the body with END_STREAM; resolves when the response stream ends. */
  request(headers: ReadonlyArray<readonly [string, string]>, body: Buffer, timeoutMs: number): Promise<H2Response> {
    if (this.dead !== undefined) return Promise.reject(this.dead)
    if (body.length > DEFAULT_WINDOW) return Promise.reject(new H2Error(`request of ${body.length} bytes exceeds the initial flow-control window`))
    const sock = this.open()
    const id = this.nextId
    this.nextId += 2
    return new Promise<H2Response>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      let settled = false
      // The deadline is armed once the request is on its way: on a new connection that is in the connect
      // callback, while the agent works on it (a process's first setTimeout costs ~0.5 ms of CPU here).
      const arm = (): void => {
        if (settled) return
        timer = setTimeout(() => {
          if (!this.streams.delete(id)) return
          sock.write(frame(T.RST_STREAM, 0, id, u32(8))) // CANCEL
          reject(new H2Error(`no answer within ${timeoutMs} ms`, 'ETIMEDOUT'))
        }, timeoutMs)
      }
      const done = (): void => {
        settled = true
        if (timer !== undefined) clearTimeout(timer)
        this.streams.delete(id)
      }
      this.streams.set(id, {
        resolve: (r) => {
          done()
          resolve(r)
        },
        reject: (e) => {
          done()
          reject(e)
        },
        headers: undefined,
        data: [],
      })
      const block = encodeHeaders(headers)
      if (block.length > MAX_FRAME) return this.streams.get(id)?.reject(new H2Error('request headers too large'))
      const frames = [frame(T.HEADERS, F.END_HEADERS, id, block)]
      for (let off = 0; off < body.length || off === 0; off += MAX_FRAME) {
        const end = Math.min(body.length, off + MAX_FRAME)
        frames.push(frame(T.DATA, end === body.length ? F.END_STREAM : 0, id, body.subarray(off, end)))
        if (end === body.length) break
      }
      sock.write(join(frames))
      if (this.connected) arm()
      else this.onConnected.push(arm)
    })
  }

  close(): void {
    this.dead ??= new H2Error('connection closed by the client')
    this.sock?.close()
    this.sock = undefined
  }

  private fail(err: H2Error): void {
    this.dead ??= err
    for (const s of [...this.streams.values()]) s.reject(err)
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : join([this.buf, chunk])
    while (this.buf.length >= 9) {
      const b = this.buf
      const len = ((b[0] as number) << 16) | ((b[1] as number) << 8) | (b[2] as number)
      if (this.buf.length < 9 + len) break
      const type = this.buf[3] as number
      const flags = this.buf[4] as number
      const id = (((b[5] as number) << 24) | ((b[6] as number) << 16) | ((b[7] as number) << 8) | (b[8] as number)) & MAX_WINDOW
      const payload = this.buf.subarray(9, 9 + len)
      this.buf = this.buf.subarray(9 + len)
      this.onFrame(type, flags, id, payload)
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.partial !== undefined && type !== T.CONTINUATION) throw new Error('expected CONTINUATION')
    switch (type) {
      case T.DATA: {
        const body = flags & F.PADDED ? payload.subarray(1, payload.length - (payload[0] as number)) : payload
        const s = this.streams.get(id)
        if (s !== undefined) {
          s.data.push(Buffer.from(body))
          if (flags & F.END_STREAM) s.resolve({ headers: s.headers ?? new Map(), trailers: new Map(), data: join(s.data) })
        }
        return
      }
      case T.HEADERS: {
        let p = payload
        if (flags & F.PADDED) p = p.subarray(1, p.length - (p[0] as number))
        if (flags & F.PRIORITY) p = p.subarray(5)
        this.partial = { id, parts: [Buffer.from(p)], endStream: (flags & F.END_STREAM) !== 0 }
        if (flags & F.END_HEADERS) this.headerBlock()
        return
      }
      case T.CONTINUATION:
        if (this.partial === undefined || this.partial.id !== id) throw new Error('unexpected CONTINUATION')
        this.partial.parts.push(Buffer.from(payload))
        if (flags & F.END_HEADERS) this.headerBlock()
        return
      case T.RST_STREAM:
        this.streams.get(id)?.reject(new H2Error(`the agent reset the stream (http2 error ${payload.readUInt32BE(0)})`))
        return
      case T.SETTINGS:
        if (!(flags & F.ACK)) this.sock?.write(frame(T.SETTINGS, F.ACK, 0))
        return
      case T.PING:
        if (!(flags & F.ACK)) this.sock?.write(frame(T.PING, F.ACK, 0, payload))
        return
      case T.GOAWAY: {
        const last = payload.readUInt32BE(0) & MAX_WINDOW
        const err = new H2Error(`the agent is going away (http2 error ${payload.readUInt32BE(4)})`)
        this.dead ??= err
        for (const [sid, s] of [...this.streams]) if (sid > last) s.reject(err)
        return
      }
      default:
        // PRIORITY, WINDOW_UPDATE (our requests fit the initial window), PUSH_PROMISE (disabled), unknown: ignored.
        return
    }
  }

  private headerBlock(): void {
    const p = this.partial
    if (p === undefined) return
    this.partial = undefined
    // Every block is decoded, even for a cancelled stream, to keep the HPACK table in step with the server.
    const fields = this.decoder.decode(join(p.parts))
    const s = this.streams.get(p.id)
    if (s === undefined) return
    if (s.headers === undefined && !p.endStream) {
      s.headers = fields
      return
    }
    // Trailers, or a trailers-only response (HEADERS with END_STREAM first).
    s.resolve({ headers: s.headers ?? fields, trailers: fields, data: join(s.data) })
  }
}
