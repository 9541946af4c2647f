// HPACK (RFC 7541) for the plugin's own HTTP/2 client (h2c.ts): what a gRPC client needs and no more.
// Encoding: every field as a literal without indexing, name and value as plain (non-Huffman) strings,
// so the encoder keeps no state. Decoding: the whole format (indexed fields, literals with and without
// indexing, dynamic table size updates, Huffman strings), with the dynamic table kept, because the
// server chooses how to encode its responses (we ask it for a table size of 0, but do not rely on it).
// The Huffman code is canonical (RFC 7541 Appendix B), so the 257 code lengths define it completely.

/** RFC 7541 Appendix A, index 1..61. */
const STATIC: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'], [':scheme', 'http'],
  [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'], [':status', '304'], [':status', '400'],
  [':status', '404'], [':status', '500'], ['accept-charset', ''], ['accept-encoding', 'gzip, deflate'], ['accept-language', ''],
  ['accept-ranges', ''], ['accept', ''], ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''],
  ['cache-control', ''], ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''], ['expect', ''],
  ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''], ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''],
  ['if-unmodified-since', ''], ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''], ['set-cookie', ''],
  ['strict-transport-security', ''], ['transfer-encoding', ''], ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
]

/** Huffman code lengths of symbols 0..256 (256 = EOS), one character each: 'A' = 5 bits ... 'Z' = 30. */
const LENGTHS =
  'ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ'

/**
 * Canonical decoding tables, built on first use with counting loops (no sort, no maps: this runs cold,
 * once per plugin exec, so it must be cheap): per length, the first code and where its symbols start in
 * `symbols` (all symbols ordered by length, then value).
 */
interface Canonical {
  first: Int32Array
  count: Int32Array
  offset: Int32Array
  symbols: Uint16Array
}
let canonical: Canonical | undefined

function huffmanTable(): Canonical {
  if (canonical !== undefined) return canonical
  const count = new Int32Array(31)
  for (let sym = 0; sym <= 256; sym++) count[sym === 256 ? 30 : LENGTHS.charCodeAt(sym) - 60]! += 1
  const offset = new Int32Array(31)
  const first = new Int32Array(31)
  let code = 0
  for (let len = 1; len <= 30; len++) {
    code = (code + count[len - 1]!) * 2
    first[len] = code
    offset[len] = len === 1 ? 0 : offset[len - 1]! + count[len - 1]!
  }
  const symbols = new Uint16Array(257)
  const next = offset.slice()
  for (let sym = 0; sym <= 256; sym++) {
    const len = sym === 256 ? 30 : LENGTHS.charCodeAt(sym) - 60
    symbols[next[len]!++] = sym
  }
  canonical = { first, count, offset, symbols }
  return canonical
}

export function huffmanDecode(data: Uint8Array): string {
  const t = huffmanTable()
  const out: number[] = []
  let code = 0
  let len = 0
  for (const byte of data) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1)
      len += 1
      const index = code - t.first[len]!
      if (index >= 0 && index < t.count[len]!) {
        const sym = t.symbols[t.offset[len]! + index]!
        if (sym === 256) throw new Error('hpack: EOS inside a Huffman string')
        out.push(sym)
        code = 0
        len = 0
      } else if (len >= 30) throw new Error('hpack: invalid Huffman code')
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (len > 7 || code !== 2 ** len - 1) throw new Error('hpack: invalid Huffman padding')
  return Buffer.from(out).toString('latin1')
}

function encodeInt(value: number, prefixBits: number, first: number, out: number[]): void {
  const max = (1 << prefixBits) - 1
  if (value < max) {
    out.push(first | value)
    return
  }
  out.push(first | max)
  let v = value - max
  while (v >= 128) {
    out.push((v % 128) + 128)
    v = Math.floor(v / 128)
  }
  out.push(v)
}

function encodeString(s: string, out: number[]): void {
  const bytes = Buffer.from(s, 'latin1')
  encodeInt(bytes.length, 7, 0, out)
  for (const b of bytes) out.push(b)
}

/** A header block: every field a literal without indexing (0000xxxx, new name). */
export function encodeHeaders(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = []
  for (const [name, value] of fields) {
    out.push(0)
    encodeString(name, out)
    encodeString(value, out)
  }
  return Buffer.from(out)
}

export class HpackDecoder {
  private dynamic: Array<[string, string]> = []
  private size = 0
  private maxSize = 4096

  private entry(index: number): readonly [string, string] {
    if (index >= 1 && index <= STATIC.length) return STATIC[index - 1] as readonly [string, string]
    const e = this.dynamic[index - STATIC.length - 1]
    if (e === undefined) throw new Error(`hpack: no table entry ${index}`)
    return e
  }

  private evict(): void {
    while (this.size > this.maxSize) {
      const e = this.dynamic.pop()
      if (e === undefined) break
      this.size -= 32 + e[0].length + e[1].length
    }
  }

  /** Decodes one complete header block into lower-case name → value (repeated names joined by ","). */
  decode(block: Uint8Array): Map<string, string> {
    const out = new Map<string, string>()
    let pos = 0
    const int = (prefixBits: number): number => {
      const max = (1 << prefixBits) - 1
      let v = (block[pos++] as number) & max
      if (v < max) return v
      let shift = 1
      for (;;) {
        if (pos >= block.length) throw new Error('hpack: truncated integer')
        const b = block[pos++] as number
        v += (b & 127) * shift
        shift *= 128
        if ((b & 128) === 0) return v
      }
    }
    const str = (): string => {
      if (pos >= block.length) throw new Error('hpack: truncated string')
      const huffman = ((block[pos] as number) & 128) !== 0
      const len = int(7)
      if (pos + len > block.length) throw new Error('hpack: truncated string')
      const bytes = block.subarray(pos, pos + len)
      pos += len
      return huffman ? huffmanDecode(bytes) : Buffer.from(bytes).toString('latin1')
    }
    const emit = (name: string, value: string): void => {
      const prev = out.get(name)
      out.set(name, prev === undefined ? value : `${prev},${value}`)
    }
    while (pos < block.length) {
      const b = block[pos] as number
      if (b & 128) {
        const [name, value] = this.entry(int(7))
        emit(name, value)
      } else if (b & 64) {
        const index = int(6)
        const name = index === 0 ? str() : (this.entry(index)[0] as string)
        const value = str()
        emit(name, value)
        this.dynamic.unshift([name, value])
        this.size += 32 + name.length + value.length
        this.evict()
      } else if (b & 32) {
        this.maxSize = int(5)
        this.evict()
      } else {
        const index = int(4)
        const name = index === 0 ? str() : (this.entry(index)[0] as string)
        emit(name, str())
      }
    }
    return out
  }
}
