/** GGUF metadata values: their types, their encoding, and shorthands for building them. */
import type { ByteWriter } from "./byte_writer.ts";

/** Metadata values with their GGUF type, since JS numbers alone do not say u32 vs f32. */
export type Meta =
  | { t: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"; v: number }
  | { t: "u64" | "i64"; v: bigint | number }
  | { t: "bool"; v: boolean }
  | { t: "str"; v: string }
  | { t: "arr"; elem: Meta["t"]; v: Meta[] };

export const TYPE_ID: Record<Meta["t"], number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9, u64: 10, i64: 11, f64: 12,
};

export function writeMeta(w: ByteWriter, m: Meta) {
  switch (m.t) {
    case "u8": return w.u8(m.v);
    case "i8": return w.i8(m.v);
    case "u16": return w.u16(m.v);
    case "i16": return w.i16(m.v);
    case "u32": return w.u32(m.v);
    case "i32": return w.i32(m.v);
    case "f32": return w.f32(m.v);
    case "f64": return w.f64(m.v);
    case "u64": return w.u64(m.v);
    case "i64": return w.i64(m.v);
    case "bool": return w.u8(m.v ? 1 : 0);
    case "str": return w.str(m.v);
    case "arr":
      w.u32(TYPE_ID[m.elem]);
      w.u64(m.v.length);
      for (const x of m.v) writeMeta(w, x);
  }
}

export const u32 = (v: number): Meta => ({ t: "u32", v });
export const f32 = (v: number): Meta => ({ t: "f32", v });
export const str = (v: string): Meta => ({ t: "str", v });
export const bool = (v: boolean): Meta => ({ t: "bool", v });
export const strArr = (v: string[]): Meta => ({ t: "arr", elem: "str", v: v.map(str) });
export const i32Arr = (v: number[]): Meta => ({ t: "arr", elem: "i32", v: v.map((x) => ({ t: "i32", v: x })) });
export const f32Arr = (v: number[]): Meta => ({ t: "arr", elem: "f32", v: v.map(f32) });
