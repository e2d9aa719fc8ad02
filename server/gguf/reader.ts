/**
 * GGUF metadata reader: the header and key/value section only (tensor infos and data are the
 * engine's business). Reads the file incrementally, so a 5 GB model costs only its metadata.
 */

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufMetadata {
  version: number;
  tensorCount: number;
  metadata: Map<string, GgufValue>;
}

export class GgufFormatError extends Error {}

/** Pulls bytes on demand from a source (a file, or a buffer in tests). */
interface ByteSource {
  /** Fills `into` from absolute offset `at`; returns the bytes read (0 at end of file). */
  read(at: number, into: Uint8Array): number;
}

class Cursor {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  pos = 0;
  private readonly decoder = new TextDecoder("utf-8", { fatal: false });

  constructor(private readonly src: ByteSource, private readonly name: string) {}

  private ensure(n: number): DataView {
    const end = this.pos + n;
    if (end > this.bufStart + this.buf.length) {
      const want = Math.max(n, 1 << 20);
      const next = new Uint8Array(want);
      const got = this.src.read(this.pos, next);
      if (got < n) {
        throw new GgufFormatError(`${this.name}: file is truncated: needed ${n} bytes at offset ${this.pos}, ${got} left`);
      }
      this.buf = next.subarray(0, got);
      this.bufStart = this.pos;
    }
    const off = this.pos - this.bufStart;
    this.pos = end;
    return new DataView(this.buf.buffer, this.buf.byteOffset + off, n);
  }

  u8() { return this.ensure(1).getUint8(0); }
  i8() { return this.ensure(1).getInt8(0); }
  u16() { return this.ensure(2).getUint16(0, true); }
  i16() { return this.ensure(2).getInt16(0, true); }
  u32() { return this.ensure(4).getUint32(0, true); }
  i32() { return this.ensure(4).getInt32(0, true); }
  f32() { return this.ensure(4).getFloat32(0, true); }
  f64() { return this.ensure(8).getFloat64(0, true); }
  u64(): number | bigint { return small(this.ensure(8).getBigUint64(0, true)); }
  i64(): number | bigint { return small(this.ensure(8).getBigInt64(0, true)); }

  count(what: string): number {
    const n = this.u64();
    if (typeof n === "bigint") throw new GgufFormatError(`${this.name}: ${what} ${n} is absurdly large`);
    return n;
  }

  string(): string {
    const len = this.count("string length");
    if (len > 1 << 30) throw new GgufFormatError(`${this.name}: string of ${len} bytes at offset ${this.pos}`);
    const v = this.ensure(len);
    return this.decoder.decode(new Uint8Array(v.buffer, v.byteOffset, len));
  }
}

/** u64/i64 as number when exact, else bigint. */
function small(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
}

function readValue(c: Cursor, type: number, key: string, name: string, depth = 0): GgufValue {
  switch (type) {
    case 0: return c.u8();
    case 1: return c.i8();
    case 2: return c.u16();
    case 3: return c.i16();
    case 4: return c.u32();
    case 5: return c.i32();
    case 6: return c.f32();
    case 7: {
      const b = c.u8();
      if (b > 1) throw new GgufFormatError(`${name}: metadata '${key}': bool value ${b}`);
      return b === 1;
    }
    case 8: return c.string();
    case 9: {
      if (depth > 3) throw new GgufFormatError(`${name}: metadata '${key}': arrays nested too deeply`);
      const elemType = c.u32();
      const n = c.count("array length");
      if (n > 1 << 28) throw new GgufFormatError(`${name}: metadata '${key}': array of ${n} elements`);
      const out: GgufValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(c, elemType, key, name, depth + 1);
      return out;
    }
    case 10: return c.u64();
    case 11: return c.i64();
    case 12: return c.f64();
    default:
      throw new GgufFormatError(`${name}: metadata '${key}': unknown value type ${type}`);
  }
}

function parse(src: ByteSource, name: string): GgufMetadata {
  const c = new Cursor(src, name);
  const magic = String.fromCharCode(c.u8(), c.u8(), c.u8(), c.u8());
  if (magic !== "GGUF") throw new GgufFormatError(`${name}: not a GGUF file (magic ${JSON.stringify(magic)})`);
  const version = c.u32();
  if (version !== 2 && version !== 3) {
    throw new GgufFormatError(`${name}: GGUF version ${version} is not supported (only 2 and 3)`);
  }
  const tensorCount = c.count("tensor count");
  const kvCount = c.count("metadata count");
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string();
    const type = c.u32();
    if (metadata.has(key)) throw new GgufFormatError(`${name}: metadata key '${key}' appears twice`);
    metadata.set(key, readValue(c, type, key, name));
  }
  return { version, tensorCount, metadata };
}

export function readGgufMetadataFromBytes(bytes: Uint8Array, name = "<memory>"): GgufMetadata {
  return parse({
    read(at, into) {
      const part = bytes.subarray(at, at + into.length);
      into.set(part);
      return part.length;
    },
  }, name);
}

export function readGgufMetadata(path: string): GgufMetadata {
  const file = Deno.openSync(path, { read: true });
  try {
    return parse({
      read(at, into) {
        file.seekSync(at, Deno.SeekMode.Start);
        let got = 0;
        while (got < into.length) {
          const n = file.readSync(into.subarray(got));
          if (n === null || n === 0) break;
          got += n;
        }
        return got;
      },
    }, path);
  } finally {
    file.close();
  }
}

/** Typed accessors that fail with the key's name rather than returning undefined silently. */
export function metaNumber(m: Map<string, GgufValue>, key: string): number | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  throw new GgufFormatError(`metadata '${key}' is ${typeof v}, expected a number`);
}

export function metaString(m: Map<string, GgufValue>, key: string): string | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new GgufFormatError(`metadata '${key}' is ${typeof v}, expected a string`);
  return v;
}

export function metaBool(m: Map<string, GgufValue>, key: string): boolean | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new GgufFormatError(`metadata '${key}' is ${typeof v}, expected a bool`);
  return v;
}

export function metaArray(m: Map<string, GgufValue>, key: string): GgufValue[] | undefined {
  const v = m.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new GgufFormatError(`metadata '${key}' is ${typeof v}, expected an array`);
  return v;
}
