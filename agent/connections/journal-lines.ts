// The connection journal's line format and its reader: each op is one line `<crc32 hex> <json>\n`, the
// CRC-32 (IEEE) of the JSON's UTF-8 bytes. A line whose check fails is damage (a wrong byte on disk) and is
// dropped alone: the lines after it are still read. Lines without a check (`<json>\n`, written before the
// check existed) are still read when they parse. The last line, when it has no newline, is a write a
// crash cut short: it was never acknowledged, so it is dropped without being called damage.
//
// Also writes buffers whole: a positional write may be short (a full disk), so writeFully loops until
// every byte is written and fails on an error or on a write that makes no progress.
import type { FileHandle } from 'node:fs/promises'

export type JournalOp<E> = { op: 'put'; id: string; entry: E } | { op: 'del'; id: string }

const TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff
  for (const b of buf) c = (TABLE[(c ^ b) & 0xff] as number) ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

export function encodeLine(op: JournalOp<unknown>): string {
  const json = JSON.stringify(op)
  return `${crc32(Buffer.from(json)).toString(16).padStart(8, '0')} ${json}\n`
}

export interface DamagedLine {
  /** 1-based line number in the journal file. */
  line: number
  reason: string
}

export interface ReadLines<E> {
  ops: Array<JournalOp<E>>
  damaged: DamagedLine[]
  /** End of the valid content (the first NUL byte, or the file's end). */
  end: number
  /** One past the last non-zero byte of the file: where zeroing must reach to leave no stray bytes. */
  dirtyEnd: number
}

const CHECKED = /^([0-9a-f]{8}) (.*)$/s

/** Reads a journal file's content (preallocated with zeros: the valid content ends at the first NUL). */
export function readLines<E>(raw: Buffer): ReadLines<E> {
  const nul = raw.indexOf(0)
  const end = nul < 0 ? raw.length : nul
  let dirtyEnd = raw.length
  while (dirtyEnd > end && raw[dirtyEnd - 1] === 0) dirtyEnd--
  const lines = raw.toString('utf8', 0, end).split('\n')
  // The last element is '' when the content ends with a newline, else a torn (unacknowledged) write.
  lines.pop()
  const ops: Array<JournalOp<E>> = []
  const damaged: DamagedLine[] = []
  lines.forEach((line, i) => {
    if (line === '') return
    const result = decodeLine<E>(line)
    if (typeof result === 'string') damaged.push({ line: i + 1, reason: result })
    else ops.push(result)
  })
  return { ops, damaged, end, dirtyEnd: Math.max(dirtyEnd, end) }
}

/** The op a line holds, or why it holds none. */
function decodeLine<E>(line: string): JournalOp<E> | string {
  const m = CHECKED.exec(line)
  let json = line
  if (m !== null) {
    json = m[2] as string
    const want = Number.parseInt(m[1] as string, 16)
    if (crc32(Buffer.from(json)) !== want) return 'checksum mismatch'
  } else if (!line.startsWith('{')) {
    return 'not a journal line'
  }
  let op: JournalOp<E>
  try {
    op = JSON.parse(json) as JournalOp<E>
  } catch (err) {
    return `not JSON (${(err as Error).message})`
  }
  if (op === null || typeof op !== 'object' || (op.op !== 'put' && op.op !== 'del') || typeof op.id !== 'string' || op.id === '') return 'not a journal op'
  if (op.op === 'put' && (op.entry === null || typeof op.entry !== 'object')) return 'a put without an entry'
  return op
}

/** Writes all of `data` at `position`, looping on short writes; throws on an error or no progress. */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done)
    if (bytesWritten <= 0) {
      throw Object.assign(new Error(`ENOSPC: no space left on device, ${done} of ${data.length} bytes written`), { code: 'ENOSPC' })
    }
    done += bytesWritten
  }
}
