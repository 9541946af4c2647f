// The byte stream under the plugin's HTTP/2 client: a connected unix socket to the agent.
//
// Why not simply node:net: `require('node:net')` pulls 28 more of Node's internal modules into the
// process (streams, diagnostics_channel, perf hooks, ...), and connecting a net.Socket costs ~4.5 ms of
// a ~27 ms process here (`node -e "require('net').connect(s)"` against `node -e 0`, BENCHMARKS.md), a
// sixth of the whole ADD budget (1.3 × `node -e 0`). The plugin writes a few hundred bytes and reads a
// few hundred back, so it talks to the libuv pipe handle that net.Socket itself wraps
// (`process.binding('pipe_wrap')`, `process.binding('stream_wrap')`: the same objects lib/net.js and
// lib/internal/stream_base_commons.js use), which costs ~0.2 ms.
//
// Those bindings are Node internals (documented as deprecated, DEP0111, but present and unchanged from
// Node 12 to 24). So the raw stream is used only when every piece it needs is there with the expected
// shape; otherwise, and when Node is asked to warn about pending deprecations, the plugin falls back to
// node:net, loaded on demand. Both are tested against the real agent (test/unit/cni-nsm-stream.test.ts).
//
// Contract of both: `connectUnix(path, sink)` returns at once; bytes written before the connection is up
// are queued; every chunk read goes to `sink.data`; the first failure (connect, read, write) goes to
// `sink.error` with a Node errno name (ENOENT, ECONNREFUSED, EPIPE, ...; none when the agent closed the
// stream) and nothing is called after;
// `close()` releases the socket and silences the sink.

export interface StreamSink {
  /** The connection is up and what was written before has been handed to the kernel. */
  connected?(): void
  data(chunk: Buffer): void
  /** The stream failed (`errno`: a Node error name) or the agent closed it (no errno). Called at most once. */
  error(message: string, errno: string | undefined): void
}

export interface ByteStream {
  write(data: Buffer): void
  close(): void
  /** Which implementation carries it ('raw' or 'net'), for tests and diagnostics. */
  readonly kind: 'raw' | 'net'
}

// The subset of the internal handle and request objects this file uses (lib/net.js uses the same).
interface PipeHandle {
  connect(req: unknown, path: string): number | undefined
  readStart(): number
  writeBuffer(req: unknown, data: Buffer): number
  close(cb?: () => void): void
  /** Must always be a function: the binding aborts the process on anything else. */
  onread: (buf: ArrayBuffer | undefined) => void
}
interface StreamState {
  streamBaseState: Int32Array
  kReadBytesOrError: number
  kArrayBufferOffset: number
  kLastWriteWasAsync: number
  WriteWrap: new () => { handle: unknown; buffer: Buffer | undefined; oncomplete: (status: number) => void }
}
interface RawBindings {
  Pipe: new (type: number) => PipeHandle
  PipeConnectWrap: new () => { oncomplete: (status: number) => void }
  socketType: number
  stream: StreamState
  errname: (code: number) => string
}

let raw: RawBindings | null | undefined
const ignore = (): void => {}

/** The internal pipe bindings, or null when they are missing or not shaped as expected. */
export function rawBindings(): RawBindings | null {
  if (raw !== undefined) return raw
  raw = null
  try {
    const opts = `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`
    // process.binding() warns under --pending-deprecation: stderr is the runtime's log, keep it clean.
    if (opts.includes('--pending-deprecation')) return raw
    const binding = (process as unknown as { binding?: (name: string) => Record<string, unknown> }).binding
    if (typeof binding !== 'function') return raw
    const pw = binding('pipe_wrap') as { Pipe?: unknown; PipeConnectWrap?: unknown; constants?: { SOCKET?: unknown } }
    const sw = binding('stream_wrap') as Partial<StreamState>
    const ok =
      typeof pw.Pipe === 'function' &&
      typeof pw.PipeConnectWrap === 'function' &&
      typeof pw.constants?.SOCKET === 'number' &&
      typeof sw.WriteWrap === 'function' &&
      sw.streamBaseState instanceof Int32Array &&
      typeof sw.kReadBytesOrError === 'number' &&
      typeof sw.kArrayBufferOffset === 'number' &&
      typeof sw.kLastWriteWasAsync === 'number'
    if (!ok) return raw
    const proto = (pw.Pipe as { prototype: Record<string, unknown> }).prototype
    for (const m of ['connect', 'readStart', 'writeBuffer', 'close']) if (typeof proto[m] !== 'function') return raw
    raw = {
      Pipe: pw.Pipe as RawBindings['Pipe'],
      PipeConnectWrap: pw.PipeConnectWrap as RawBindings['PipeConnectWrap'],
      socketType: pw.constants?.SOCKET as number,
      stream: sw as StreamState,
      // Only a failure needs an errno name: the uv binding (~0.2 ms to set up) is not loaded before one.
      errname: (code) => {
        const errname = (binding('uv') as { errname?: (c: number) => string }).errname
        return typeof errname === 'function' ? errname(code) : `UV_${-code}`
      },
    }
  } catch {
    raw = null
  }
  return raw
}

/** The libuv pipe handle directly. */
export function connectRaw(b: RawBindings, path: string, sink: StreamSink): ByteStream {
  const handle = new b.Pipe(b.socketType)
  const st = b.stream
  let state: 'connecting' | 'open' | 'done' = 'connecting'
  let queued: Buffer[] = []
  const name = (code: number): string => {
    try {
      return b.errname(code)
    } catch {
      return 'EIO'
    }
  }
  const fail = (what: string, code: number): void => {
    if (state === 'done') return
    state = 'done'
    queued = []
    handle.onread = ignore
    handle.close()
    const errno = name(code)
    sink.error(`${what} ${path}: ${errno}`, errno)
  }
  const send = (data: Buffer): void => {
    const req = new st.WriteWrap()
    req.handle = handle
    // A write libuv finishes later still reads `data`: the request object keeps it alive until then.
    req.buffer = data
    req.oncomplete = (status: number) => {
      if (status < 0) fail('write', status)
    }
    const err = handle.writeBuffer(req, data)
    if (err !== 0) fail('write', err)
  }
  handle.onread = (buf: ArrayBuffer | undefined) => {
    const n = st.streamBaseState[st.kReadBytesOrError] as number
    if (state !== 'open') return
    if (n > 0 && buf !== undefined) {
      sink.data(Buffer.from(buf, st.streamBaseState[st.kArrayBufferOffset] as number, n))
      return
    }
    if (n === 0) return // EAGAIN
    // n < 0: UV_EOF when the agent closed, or a read error.
    const errno = name(n)
    if (errno === 'EOF') {
      state = 'done'
      handle.onread = ignore
      handle.close()
      sink.error('the agent closed the connection', undefined)
      return
    }
    fail('read from', n)
  }
  const req = new b.PipeConnectWrap()
  req.oncomplete = (status: number) => {
    if (state !== 'connecting') return
    if (status < 0) return fail('connect to', status)
    state = 'open'
    const err = handle.readStart()
    if (err !== 0) return fail('read from', err)
    const pending = queued
    queued = []
    if (pending.length > 0) send(pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending))
    if (state === 'open') sink.connected?.()
  }
  const err = handle.connect(req, path)
  if (typeof err === 'number' && err < 0) {
    // Reported on the next tick, as net.Socket does: the caller has finished setting up by then.
    process.nextTick(() => fail('connect to', err))
  }
  return {
    kind: 'raw',
    write(data) {
      if (state === 'connecting') queued.push(data)
      else if (state === 'open') send(data)
    },
    close() {
      if (state === 'done') return
      state = 'done'
      queued = []
      handle.onread = ignore
      handle.close()
    },
  }
}

/**
 * node:net on demand. The bundle is CommonJS run through vm.Script (scripts/code-cache.mjs), where a
 * dynamic import() has no loader to go to, so it uses `require`; under the ESM test runner there is no
 * `require`, and import() works.
 */
function loadNet(): Promise<typeof import('node:net')> {
  if (typeof require === 'function') return Promise.resolve(require('node:net') as typeof import('node:net'))
  return import('node:net')
}

/** node:net, loaded only when this is called. */
export function connectNet(path: string, sink: StreamSink): ByteStream {
  let s: import('node:net').Socket | undefined
  let queued: Buffer[] = []
  let done = false
  const fail = (message: string, errno: string | undefined): void => {
    if (done) return
    done = true
    s?.destroy()
    sink.error(message, errno)
  }
  loadNet().then(
    (net) => {
      if (done) return
      const sock = net.connect(path)
      s = sock
      sock.on('data', (d: Buffer) => {
        if (!done) sink.data(d)
      })
      sock.on('error', (err: NodeJS.ErrnoException) => fail(err.message, err.code ?? 'EIO'))
      sock.on('close', () => fail('the agent closed the connection', undefined))
      for (const q of queued) sock.write(q)
      queued = []
      sock.on('connect', () => {
        if (!done) sink.connected?.()
      })
    },
    (err: unknown) => fail(`node:net: ${(err as Error).message}`, 'EIO'),
  )
  return {
    kind: 'net',
    write(data) {
      if (done) return
      if (s === undefined) queued.push(data)
      else s.write(data)
    },
    close() {
      done = true
      queued = []
      s?.destroy()
    },
  }
}

/** The raw pipe when Node offers it as expected, else node:net. */
export function connectUnix(path: string, sink: StreamSink): ByteStream {
  const b = rawBindings()
  return b === null ? connectNet(path, sink) : connectRaw(b, path, sink)
}
