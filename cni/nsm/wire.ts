// The protobuf wire format, as much as the plugin's messages need (messages.ts): varints, 64-bit-free
// integers, length-delimited fields, and skipping whatever a reader does not know. Strings are UTF-8.

export class Writer {
  private readonly parts: number[] = []

  private varint(n: number): void {
    let v = n
    while (v > 127) {
      this.parts.push((v % 128) | 128)
      v = Math.floor(v / 128)
    }
    this.parts.push(v)
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire)
  }

  /** A non-negative integer (uint32, int64 seconds, enum, bool); 0 is the default and not written. */
  uint(field: number, n: number): this {
    if (n !== 0) {
      this.tag(field, 0)
      this.varint(n)
    }
    return this
  }

  bool(field: number, b: boolean): this {
    return this.uint(field, b ? 1 : 0)
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2)
    this.varint(data.length)
    for (const b of data) this.parts.push(b)
    return this
  }

  /** A string; "" is the default and not written (proto3). */
  string(field: number, s: string): this {
    return s === '' ? this : this.bytes(field, Buffer.from(s, 'utf8'))
  }

  strings(field: number, list: readonly string[]): this {
    for (const s of list) this.bytes(field, Buffer.from(s, 'utf8'))
    return this
  }

  message(field: number, m: Writer | undefined): this {
    return m === undefined ? this : this.bytes(field, m.finish())
  }

  /** map<string, string>: one entry message {1: key, 2: value} per pair. */
  stringMap(field: number, map: Readonly<Record<string, string>>): this {
    for (const [k, v] of Object.entries(map)) this.message(field, new Writer().string(1, k).string(2, v))
    return this
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts)
  }
}

/** Reads one message: `fields(fn)` calls fn(field, reader) per field; unknown ones are skipped by `skip`. */
export class Reader {
  private pos = 0
  private wire = 0

  constructor(private readonly buf: Uint8Array) {}

  private varint(): number {
    let v = 0
    let mul = 1
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error('protobuf: truncated varint')
      const b = this.buf[this.pos++] as number
      v += (b & 127) * mul
      if ((b & 128) === 0) return v
      mul *= 128
      if (mul > 2 ** 63) throw new Error('protobuf: varint too long')
    }
  }

  fields(fn: (field: number, r: Reader) => void): void {
    while (this.pos < this.buf.length) {
      const tag = this.varint()
      this.wire = tag % 8
      const before = this.pos
      fn(Math.floor(tag / 8), this)
      if (this.pos === before) this.skip()
    }
  }

  uint(): number {
    return this.varint()
  }

  bool(): boolean {
    return this.varint() !== 0
  }

  /** int32 as the wire carries it (negative numbers are 10-byte varints). */
  int32(): number {
    return this.varint() | 0
  }

  bytes(): Uint8Array {
    const len = this.varint()
    if (this.pos + len > this.buf.length) throw new Error('protobuf: truncated field')
    const out = this.buf.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }

  string(): string {
    return Buffer.from(this.bytes()).toString('utf8')
  }

  /** A nested message, read with its own Reader. */
  message(fn: (field: number, r: Reader) => void): void {
    new Reader(this.bytes()).fields(fn)
  }

  /** One entry of a map<string, V>: calls back with the key and a reader positioned at the value. */
  mapEntry(value: (r: Reader) => void): string {
    let key = ''
    this.message((f, r) => {
      if (f === 1) key = r.string()
      else if (f === 2) value(r)
    })
    return key
  }

  stringMapEntry(into: Record<string, string>): void {
    let v = ''
    const k = this.mapEntry((r) => {
      v = r.string()
    })
    into[k] = v
  }

  skip(): void {
    switch (this.wire) {
      case 0:
        this.varint()
        return
      case 1:
        this.pos += 8
        return
      case 2:
        this.bytes()
        return
      case 5:
        this.pos += 4
        return
      default:
        throw new Error(`protobuf: wire type ${this.wire} is not supported`)
    }
  }
}
