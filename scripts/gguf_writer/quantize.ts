/** The weight types: GGML type ids, llama_ftype ids, block layouts, and ggml's reference quantizers. */
import { f32ToBf16Bits, f32ToF16Bits } from "./numbers.ts";

export type WeightType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_1";

export const GGML_TYPE: Record<WeightType, number> = { f32: 0, f16: 1, bf16: 30, q8_0: 8, q4_0: 2, q4_1: 3 };
/** general.file_type (llama_ftype) per weight type. */
export const FILE_TYPE: Record<WeightType, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_0: 2, q4_1: 3 };
export const BLOCK: Record<WeightType, [number, number]> = {
  f32: [1, 4],
  f16: [1, 2],
  bf16: [1, 2],
  q8_0: [32, 34],
  q4_0: [32, 18],
  q4_1: [32, 20],
};

/** C roundf: halves away from zero (JS Math.round goes toward +∞). */
const roundAway = (x: number) => (x < 0 ? -Math.round(-x) : Math.round(x));

/** Encodes `x` (a whole number of rows of `type`) into GGUF bytes. */
export function encode(type: WeightType, x: Float32Array): Uint8Array {
  const [bl, bb] = BLOCK[type];
  const out = new Uint8Array((x.length / bl) * bb);
  const dv = new DataView(out.buffer);
  switch (type) {
    case "f32":
      for (let i = 0; i < x.length; i++) dv.setFloat32(i * 4, x[i], true);
      break;
    case "f16":
      for (let i = 0; i < x.length; i++) dv.setUint16(i * 2, f32ToF16Bits(x[i]), true);
      break;
    case "bf16":
      for (let i = 0; i < x.length; i++) dv.setUint16(i * 2, f32ToBf16Bits(x[i]), true);
      break;
    case "q8_0":
      for (let b = 0; b < x.length / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
        const d = amax / 127, id = d ? 1 / d : 0;
        dv.setUint16(b * 34, f32ToF16Bits(d), true);
        for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, roundAway(x[b * 32 + j] * id));
      }
      break;
    case "q4_0":
      for (let b = 0; b < x.length / 32; b++) {
        // Scale from the signed value of largest magnitude, so it lands exactly on -8.
        let amax = 0, max = 0;
        for (let j = 0; j < 32; j++) {
          const v = x[b * 32 + j];
          if (Math.abs(v) > amax) (amax = Math.abs(v)), (max = v);
        }
        const d = max / -8, id = d ? 1 / d : 0;
        dv.setUint16(b * 18, f32ToF16Bits(d), true);
        for (let j = 0; j < 16; j++) {
          const lo = Math.min(15, Math.trunc(x[b * 32 + j] * id + 8.5));
          const hi = Math.min(15, Math.trunc(x[b * 32 + j + 16] * id + 8.5));
          out[b * 18 + 2 + j] = lo | (hi << 4);
        }
      }
      break;
    case "q4_1":
      for (let b = 0; b < x.length / 32; b++) {
        let min = Infinity, max = -Infinity;
        for (let j = 0; j < 32; j++) (min = Math.min(min, x[b * 32 + j])), (max = Math.max(max, x[b * 32 + j]));
        const d = (max - min) / 15, id = d ? 1 / d : 0;
        dv.setUint16(b * 20, f32ToF16Bits(d), true);
        dv.setUint16(b * 20 + 2, f32ToF16Bits(min), true);
        for (let j = 0; j < 16; j++) {
          const lo = Math.min(15, Math.trunc((x[b * 32 + j] - min) * id + 0.5));
          const hi = Math.min(15, Math.trunc((x[b * 32 + j + 16] - min) * id + 0.5));
          out[b * 20 + 4 + j] = lo | (hi << 4);
        }
      }
      break;
  }
  return out;
}
