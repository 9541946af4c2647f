// The protobuf writer under ./otlp-encode.ts: the few wire types OTLP's trace messages use (varint,
// fixed32/64, length-delimited), written into one growable Buffer without a chunk per nested message
// (why a writer of our own: ./otlp-encode.ts's header).
//
// Lengths are minimal: a nested message reserves the length varint its size most likely needs, is written,
// then moved when the real length needs another size (never a padded varint).

export const varintSize = (v: number): number => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5)

/** hex digit → value, 255 for anything else. */
const HEX = new Uint8Array(128).fill(255)
for (let i = 0; i < 16; i++) {
  HEX['0123456789abcdef'.charCodeAt(i)] = i
  HEX['0123456789ABCDEF'.charCodeAt(i)] = i
}

/** Where the encoded spans of a batch accumulate: one Buffer, doubled when full. */
export class ProtoWriter {
  buf: Buffer
  pos = 0

  constructor(initial = 4096) {
    this.buf = Buffer.allocUnsafe(initial)
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    let size = this.buf.length * 2
    while (size < this.pos + n) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  /** An unsigned varint below 2^32 (tags, lengths, enums). */
  uint(v: number): void {
    this.ensure(5)
    const b = this.buf
    let p = this.pos
    while (v > 0x7f) {
      b[p++] = (v & 0x7f) | 0x80
      v >>>= 7
    }
    b[p++] = v
    this.pos = p
  }

  /** An int64 varint from a safe integer; negatives as the 10-byte two's complement. */
  int64(v: number): void {
    if (v >= 0 && v < 0x100000000) return this.uint(v)
    this.ensure(10)
    // Two's complement halves of the 64-bit value (exact: |v| < 2^53).
    let lo = v >>> 0 // ToUint32 is v mod 2^32, also for negatives
    let hi = Math.floor(v / 0x100000000) >>> 0
    const b = this.buf
    let p = this.pos
    while (hi !== 0 || lo > 0x7f) {
      b[p++] = (lo & 0x7f) | 0x80
      lo = ((lo >>> 7) | (hi << 25)) >>> 0
      hi >>>= 7
    }
    b[p++] = lo
    this.pos = p
  }

  fixed32(v: number): void {
    this.ensure(4)
    this.buf.writeUInt32LE(v >>> 0, this.pos)
    this.pos += 4
  }

  double(v: number): void {
    this.ensure(8)
    this.buf.writeDoubleLE(v, this.pos)
    this.pos += 8
  }

  /** fixed64 nanoseconds from fractional epoch milliseconds, without the double's loss above 2^53 ns. */
  epochNanos(ms: number): void {
    const whole = Math.floor(ms)
    const subNs = Math.round((ms - whole) * 1e6) // ms - whole is exact
    // whole·10^6 + subNs in 32-bit halves; every intermediate below 2^53.
    const wh = Math.floor(whole / 0x10000)
    const a = wh * 1e6 // < 2^46
    const aHi = Math.floor(a / 0x10000)
    const c = (a - aHi * 0x10000) * 0x10000 + (whole - wh * 0x10000) * 1e6 + subNs // < 2^38
    const carry = Math.floor(c / 0x100000000)
    this.ensure(8)
    this.buf.writeUInt32LE(c - carry * 0x100000000, this.pos)
    this.buf.writeUInt32LE(aHi + carry, this.pos + 4)
    this.pos += 8
  }

  /** Starts a length-delimited body after `tag`, reserving `guess` bytes for its length; → the mark for end(). */
  begin(tag: number, guess = 1): number {
    this.uint(tag)
    this.ensure(guess)
    const mark = this.pos
    this.pos += guess
    return mark * 8 + guess // guess ≤ 5: three bits
  }

  /** Writes the length of the body started at `mark`, moving the body when the length needs another size. */
  end(mark: number): void {
    const guess = mark & 7
    const at = (mark - guess) / 8
    const start = at + guess
    const len = this.pos - start
    const size = varintSize(len)
    if (size !== guess) {
      this.ensure(size - guess)
      this.buf.copyWithin(at + size, start, this.pos)
      this.pos += size - guess
    }
    const b = this.buf
    let p = at
    let v = len
    while (v > 0x7f) {
      b[p++] = (v & 0x7f) | 0x80
      v >>>= 7
    }
    b[p] = v
  }

  string(tag: number, s: string): void {
    // UTF-8 is at most 3 bytes per UTF-16 unit: reserve that length's varint, fix it after.
    const mark = this.begin(tag, varintSize(s.length * 3))
    this.ensure(s.length * 3)
    const b = this.buf
    let p = this.pos
    let i = 0
    // ASCII by hand (short keys and values: cheaper than a call into the runtime's encoder).
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) break
      b[p++] = c
    }
    if (i < s.length) p += b.write(s.slice(i), p, 'utf8')
    this.pos = p
    this.end(mark)
  }

  /** A bytes field from an id in hex (16 or 32 digits). */
  hexBytes(tag: number, hex: string): void {
    const n = hex.length >>> 1
    this.uint(tag)
    this.uint(n)
    this.ensure(n)
    const b = this.buf
    let p = this.pos
    for (let i = 0; i < hex.length; i += 2) b[p++] = (HEX[hex.charCodeAt(i) & 0x7f]! << 4) | HEX[hex.charCodeAt(i + 1) & 0x7f]!
    this.pos = p
  }

  /** Takes the bytes written so far (a view, valid until the next write), and starts over. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos)
    this.pos = 0
    return out
  }
}
