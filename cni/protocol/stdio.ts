// The plugin process's stdin and stdout, read and written synchronously (a plugin runs one call), shared
// by pluginMain (nsm-ipam) and the nsm shim.
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import { CniCode, CniError } from './errors'

/** The configuration on stdin is refused beyond this size (a runtime bug or abuse, never a real config). */
export const MAX_STDIN_BYTES = 1 << 20

/** The configuration bytes, or code 5 when there are more than MAX_STDIN_BYTES of them. */
export function checkStdinSize(stdin: Buffer): Buffer {
  if (stdin.length > MAX_STDIN_BYTES) throw new CniError(CniCode.IO_FAILURE, `stdin: network configuration is larger than ${MAX_STDIN_BYTES} bytes`)
  return stdin
}

/**
 * Reads stdin to its end, at most `limit` + 1 bytes, as the reference plugins do (no terminal check: a
 * runtime always gives a pipe, and fstat's first call costs a plugin process ~0.3 ms).
 */
export function readFd0(limit: number): Buffer {
  const chunks: Buffer[] = []
  let total = 0
  const buf = Buffer.allocUnsafe(65536)
  let fd = 0
  let opened = false
  for (;;) {
    let n: number
    try {
      n = readSync(fd, buf, 0, buf.length, null)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EOF') break
      if (code === 'EAGAIN' && !opened) {
        // A non-blocking stdin (inherited O_NONBLOCK pipe): reopen it blocking through /proc.
        fd = openSync('/dev/stdin', 'r')
        opened = true
        continue
      }
      if (code === 'EBADF') break
      throw new CniError(CniCode.IO_FAILURE, `stdin: read failed: ${(err as Error).message}`, { cause: err })
    }
    if (n === 0) break
    chunks.push(Buffer.from(buf.subarray(0, n)))
    total += n
    if (total > limit) break
  }
  if (opened) closeSync(fd)
  return chunks.length === 1 && total <= limit ? (chunks[0] as Buffer) : Buffer.concat(chunks, total)
}

export function writeFd(fd: number, text: string): void {
  const data = Buffer.from(text)
  let off = 0
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
    }
  }
}

