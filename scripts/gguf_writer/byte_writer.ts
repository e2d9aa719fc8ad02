/** A growable little-endian byte buffer for the GGUF header (GGUF strings: u64 length, then UTF-8). */
export class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private dv = new DataView(this.buf.buffer);
  len = 0;
  private grow(n: number) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }
  u8(v: number) { this.grow(1); this.dv.setUint8(this.len, v); this.len += 1; }
  i8(v: number) { this.grow(1); this.dv.setInt8(this.len, v); this.len += 1; }
  u16(v: number) { this.grow(2); this.dv.setUint16(this.len, v, true); this.len += 2; }
  i16(v: number) { this.grow(2); this.dv.setInt16(this.len, v, true); this.len += 2; }
  u32(v: number) { this.grow(4); this.dv.setUint32(this.len, v, true); this.len += 4; }
  i32(v: number) { this.grow(4); this.dv.setInt32(this.len, v, true); this.len += 4; }
  f32(v: number) { this.grow(4); this.dv.setFloat32(this.len, v, true); this.len += 4; }
  f64(v: number) { this.grow(8); this.dv.setFloat64(this.len, v, true); this.len += 8; }
  u64(v: bigint | number) { this.grow(8); this.dv.setBigUint64(this.len, BigInt(v), true); this.len += 8; }
  i64(v: bigint | number) { this.grow(8); this.dv.setBigInt64(this.len, BigInt(v), true); this.len += 8; }
  bytes(b: Uint8Array) { this.grow(b.length); this.buf.set(b, this.len); this.len += b.length; }
  str(s: string) { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  pad(align: number) { while (this.len % align) this.u8(0); }
  done() { return this.buf.subarray(0, this.len); }
}
