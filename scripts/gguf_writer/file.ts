/** The GGUF v3 file: header (metadata, tensor infos), then each tensor's data, 32-byte aligned. */
import { ByteWriter } from "./byte_writer.ts";
import { type Meta, TYPE_ID, writeMeta } from "./metadata.ts";
import { BLOCK, encode, GGML_TYPE, type WeightType } from "./quantize.ts";

export interface TensorSpec {
  name: string;
  /** ggml order: dims[0] is the row length. */
  dims: number[];
  type: WeightType;
  /** Produces the tensor's float values (row-major, rows of dims[0]) when it is written. */
  values: () => Float32Array;
}

const ALIGN = 32;

/** Writes a GGUF v3 file; tensors are produced and written one at a time. */
export function writeGguf(path: string, metadata: [string, Meta][], tensors: TensorSpec[]) {
  const head = new ByteWriter();
  head.bytes(new TextEncoder().encode("GGUF"));
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.length);
  for (const [k, v] of metadata) {
    head.str(k);
    head.u32(TYPE_ID[v.t]);
    writeMeta(head, v);
  }
  let offset = 0;
  const sizes = tensors.map((t) => {
    const [bl, bb] = BLOCK[t.type];
    if (t.dims[0] % bl) throw new Error(`${t.name}: row length ${t.dims[0]} is not a multiple of ${bl} for ${t.type}`);
    return (t.dims.reduce((a, b) => a * b, 1) / bl) * bb;
  });
  tensors.forEach((t, i) => {
    head.str(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset += Math.ceil(sizes[i] / ALIGN) * ALIGN;
  });
  head.pad(ALIGN);
  const file = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    writeAll(file, head.done());
    tensors.forEach((t, i) => {
      const data = encode(t.type, t.values());
      if (data.length !== sizes[i]) throw new Error(`${t.name}: produced ${data.length} bytes, expected ${sizes[i]}`);
      writeAll(file, data);
      writeAll(file, new Uint8Array(Math.ceil(sizes[i] / ALIGN) * ALIGN - sizes[i]));
    });
  } finally {
    file.close();
  }
}

function writeAll(file: Deno.FsFile, b: Uint8Array) {
  let done = 0;
  while (done < b.length) done += file.writeSync(b.subarray(done));
}
