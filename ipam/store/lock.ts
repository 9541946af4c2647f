// A cross-process mutex that cannot go stale: an abstract-namespace unix socket (Linux).
//
// Binding a name in the abstract namespace is exclusive (EADDRINUSE for everyone else) and the kernel
// frees the name when the socket is closed, including when its process dies. So a crashed holder never
// leaves a lock behind, and there is no "stale lock recovery" race to get wrong (an O_EXCL lockfile
// needs one: two processes can each decide the same file is stale and remove each other's lock).
//
// Limit: abstract names are per network namespace. CNI plugins run in the runtime's netns (the host's,
// or rootless podman's one per user), which is also the scope of a dataDir, so every process that can
// race on one store shares the lock. The store uses the lock only to serialize releases (see file.ts).
import type { Server } from 'node:net'
import { IpamError } from '../range/errors'

/** FNV-1a 64-bit of a string, hex: a short stable lock name for a long path. */
function fnv1a64(s: string): string {
  let h = 0xcbf29ce484222325n
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i))
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn
  }
  return h.toString(16).padStart(16, '0')
}

export const lockNameFor = (key: string): string => `\0nsm-ipam/${fnv1a64(key)}`

async function tryBind(name: string): Promise<Server | undefined> {
  const net = await import('node:net')
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(undefined)
      else reject(err)
    })
    server.listen({ path: name, exclusive: true }, () => {
      server.unref()
      resolve(server)
    })
  })
}

/** Runs `fn` while holding the lock `key`; waits up to `timeoutMs` for it. */
export async function withLock<T>(key: string, fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const name = lockNameFor(key)
  const deadline = Date.now() + timeoutMs
  let server: Server | undefined
  for (;;) {
    try {
      server = await tryBind(name)
    } catch (err) {
      throw new IpamError('STORE', `lock ${key}: ${(err as Error).message}`, { cause: err })
    }
    if (server !== undefined) break
    if (Date.now() > deadline) throw new IpamError('STORE', `lock ${key}: still held by another process after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 1 + Math.random() * 4))
  }
  try {
    return await fn()
  } finally {
    const s = server
    await new Promise<void>((r) => s.close(() => r()))
  }
}
