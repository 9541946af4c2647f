// The plugin's unix stream (cni/nsm/unix-stream.ts), both implementations — the raw libuv pipe and the
// node:net fallback — against a real unix socket server: bytes both ways (also written before the
// connection is up, and 4 MiB that arrive in many reads), the agent closing the stream, every way a
// connect fails (no file, a file that is not a socket, a socket nobody listens on), close() silencing
// everything after it. And that the raw one is what this Node gives.
import { createServer, type Server, type Socket } from 'node:net'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { connectNet, connectRaw, connectUnix, rawBindings, type ByteStream, type StreamSink } from '../../cni/nsm/unix-stream'

const dir = mkdtempSync(join(tmpdir(), 'nsm-stream-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const bindings = rawBindings()
const kinds: Array<['raw' | 'net', (path: string, sink: StreamSink) => ByteStream]> = [
  ['net', connectNet],
  ['raw', (p, s) => {
    if (bindings === null) throw new Error('no raw bindings')
    return connectRaw(bindings, p, s)
  }],
]

async function listen(path: string, onConn: (s: Socket) => void): Promise<Server> {
  const srv = createServer(onConn)
  await new Promise<void>((resolve) => srv.listen(path, resolve))
  t.teardown(() => new Promise<void>((resolve) => srv.close(() => resolve())))
  return srv
}

t.test('this Node offers the raw pipe, and connectUnix uses it', async (t) => {
  t.not(bindings, null)
  const path = join(dir, 'pick.sock')
  await listen(path, (s) => s.end())
  const s = connectUnix(path, { data() {}, error() {} })
  t.equal(s.kind, 'raw')
  s.close()
})

for (const [kind, connect] of kinds) {
  t.test(`${kind}: echo, written before the connection is up, 4 MiB back in many reads`, async (t) => {
    const path = join(dir, `echo-${kind}.sock`)
    await listen(path, (s) => s.pipe(s))
    const got: Buffer[] = []
    const errors: Array<string | undefined> = []
    let wake = (): void => {}
    const total = (): number => got.reduce((a, b) => a + b.length, 0)
    const s = connect(path, {
      data: (c) => {
        got.push(Buffer.from(c))
        wake()
      },
      error: (m, errno) => {
        errors.push(errno ?? m)
        wake()
      },
    })
    const big = Buffer.alloc(4 << 20)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
    s.write(Buffer.from('hello '))
    s.write(big)
    await new Promise<void>((resolve) => {
      wake = () => {
        if (total() >= 6 + big.length || errors.length > 0) resolve()
      }
      wake()
    })
    t.same(errors, [])
    const all = Buffer.concat(got)
    t.equal(all.length, 6 + big.length)
    t.equal(all.subarray(0, 6).toString(), 'hello ')
    t.ok(all.subarray(6).equals(big), 'the bytes come back unchanged')
    t.ok(got.length > 1, `several reads (${got.length})`)
    s.close()
  })

  t.test(`${kind}: the agent closing the stream is an error without errno, reported once`, async (t) => {
    const path = join(dir, `close-${kind}.sock`)
    await listen(path, (s) => s.end('bye'))
    const events: string[] = []
    await new Promise<void>((resolve) => {
      connect(path, {
        data: (c) => void events.push(`data ${c.toString()}`),
        error: (m, errno) => {
          events.push(`error ${errno ?? 'none'}: ${m}`)
          setTimeout(resolve, 50)
        },
      })
    })
    t.same(events, ['data bye', 'error none: the agent closed the connection'])
  })

  t.test(`${kind}: connect failures carry the errno`, async (t) => {
    const file = join(dir, `file-${kind}`)
    writeFileSync(file, 'not a socket')
    // A socket file nobody listens on: a node process listens on it and is killed, so it cannot unlink it.
    const lone = join(dir, `lone-${kind}.sock`)
    const { spawnSync } = await import('node:child_process')
    spawnSync(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(lone)}, () => process.kill(process.pid, 'SIGKILL'))`])
    t.ok(existsSync(lone), 'the socket file was left behind')
    for (const [path, want] of [
      [join(dir, 'missing.sock'), 'ENOENT'],
      [file, 'ECONNREFUSED'],
      [lone, 'ECONNREFUSED'],
    ] as const) {
      const errno = await new Promise<string | undefined>((resolve) => {
        const s = connect(path, { data: () => resolve('data?'), error: (_m, e) => resolve(e) })
        s.write(Buffer.from('x'))
      })
      t.equal(errno, want, path)
    }
  })

  t.test(`${kind}: close() releases the socket and nothing is reported after it`, async (t) => {
    const path = join(dir, `quiet-${kind}.sock`)
    let peerClosed: () => void = () => {}
    const closed = new Promise<void>((resolve) => (peerClosed = resolve))
    await listen(path, (s) => {
      s.on('data', () => s.write('late'))
      s.on('close', () => peerClosed())
      s.on('error', () => {})
    })
    const events: string[] = []
    const s = connect(path, { data: () => void events.push('data'), error: (m) => void events.push(`error ${m}`) })
    s.write(Buffer.from('ping'))
    await new Promise((r) => setTimeout(r, 20))
    s.close()
    events.push('closed')
    s.write(Buffer.from('ignored'))
    await closed
    await new Promise((r) => setTimeout(r, 50))
    t.same(events.slice(events.indexOf('closed')), ['closed'], `nothing after close (${events.join(', ')})`)
    t.ok(events.includes('data'), 'the answer before close arrived')
  })
}
