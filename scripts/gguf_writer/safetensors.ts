/** HF weights for the writer: a safetensors file read as float32 tensors by name. */
import { bf16BitsToF32, f16BitsToF32 } from "./numbers.ts";

/** Reads F32/F16/BF16 tensors from a safetensors file as floats. */
export function safetensorsReader(path: string) {
  const bytes = Deno.readFileSync(path);
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return (name: string): Float32Array | undefined => {
    const e = header[name];
    if (!e) return undefined;
    const [s, t] = e.data_offsets as [number, number];
    const raw = bytes.subarray(8 + n + s, 8 + n + t);
    const rdv = new DataView(raw.buffer, raw.byteOffset, raw.length);
    if (e.dtype === "F32") return new Float32Array(raw.slice().buffer);
    const out = new Float32Array(raw.length / 2);
    for (let i = 0; i < out.length; i++) {
      const h = rdv.getUint16(i * 2, true);
      if (e.dtype === "BF16") out[i] = bf16BitsToF32(h);
      else if (e.dtype === "F16") out[i] = f16BitsToF32(h);
      else throw new Error(`${path}: tensor ${name} has dtype ${e.dtype} (F32, F16, BF16 supported)`);
    }
    return out;
  };
}
