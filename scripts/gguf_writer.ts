/**
 * Writes GGUF v3 Llama checkpoints the way llama.cpp's converter lays them out: llama.* metadata
 * from an HF config.json, the tokenizer from an HF tokenizer.json (byte-level BPE → "gpt2",
 * SentencePiece-style BPE with byte fallback → "llama"), Q/K rows permuted for llama.cpp's RoPE,
 * 1-D tensors in F32, weights in F32/F16/BF16/Q8_0/Q4_0/Q4_1 quantized with ggml's reference
 * rounding. Weights come from a safetensors file, or are random (seeded) for fixtures/benchmarks.
 *
 *   deno run -A scripts/gguf_writer.ts --config config.json --tokenizer tokenizer.json \
 *     --type f16 --seed 1 --out model.gguf [--weights model.safetensors] [--tokenizer-config tokenizer_config.json]
 *
 * Tensors are generated and written one at a time, so a 1B-parameter file never sits in memory.
 */

export type WeightType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_1";

const GGML_TYPE: Record<WeightType, number> = { f32: 0, f16: 1, bf16: 30, q8_0: 8, q4_0: 2, q4_1: 3 };
/** general.file_type (llama_ftype) per weight type. */
const FILE_TYPE: Record<WeightType, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_0: 2, q4_1: 3 };
const BLOCK: Record<WeightType, [number, number]> = {
  f32: [1, 4],
  f16: [1, 2],
  bf16: [1, 2],
  q8_0: [32, 34],
  q4_0: [32, 18],
  q4_1: [32, 20],
};

// ---------- number encodings ----------

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** IEEE half with round-to-nearest-even (what numpy/torch produce). */
export function f32ToF16Bits(x: number): number {
  f32buf[0] = x;
  const b = u32buf[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function f32ToBf16Bits(x: number): number {
  f32buf[0] = x;
  const b = u32buf[0];
  if ((b & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** C roundf: halves away from zero (JS Math.round goes toward +∞). */
const roundAway = (x: number) => (x < 0 ? -Math.round(-x) : Math.round(x));

// ---------- ggml reference quantizers ----------

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

// ---------- metadata ----------

/** Metadata values with their GGUF type, since JS numbers alone do not say u32 vs f32. */
export type Meta =
  | { t: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"; v: number }
  | { t: "u64" | "i64"; v: bigint | number }
  | { t: "bool"; v: boolean }
  | { t: "str"; v: string }
  | { t: "arr"; elem: Meta["t"]; v: Meta[] };

const TYPE_ID: Record<Meta["t"], number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9, u64: 10, i64: 11, f64: 12,
};

class ByteWriter {
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

function writeMeta(w: ByteWriter, m: Meta) {
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

// ---------- the file ----------

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

// ---------- Llama from HF config + tokenizer ----------

/** Seeded PRNG (mulberry32): fixtures are reproducible from --seed. */
export function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** llama.cpp's Q/K row order: per head, interleave the two rotate-half halves. */
export function permuteQK(w: Float32Array, rows: number, cols: number, nHeads: number): Float32Array {
  const hd = rows / nHeads, half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = h * hd + j * half + i, dst = h * hd + 2 * i + j;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

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
      if (e.dtype === "BF16") {
        u32buf[0] = h << 16;
        out[i] = f32buf[0];
      } else if (e.dtype === "F16") out[i] = f16BitsToF32(h);
      else throw new Error(`${path}: tensor ${name} has dtype ${e.dtype} (F32, F16, BF16 supported)`);
    }
    return out;
  };
}

/** tokenizer.ggml.* metadata from an HF tokenizer.json (+ tokenizer_config.json). */
export function tokenizerMeta(tok: any, cfg: any, vocabSize: number): [string, Meta][] {
  const model = tok.model;
  if (model?.type !== "BPE") throw new Error(`tokenizer model ${model?.type} is not supported (BPE only)`);
  const tokens: string[] = new Array(vocabSize);
  for (const [t, id] of Object.entries(model.vocab as Record<string, number>)) if (id < vocabSize) tokens[id] = t;
  const types = new Array(vocabSize).fill(1);
  for (const a of tok.added_tokens ?? []) {
    if (a.id >= vocabSize) continue;
    tokens[a.id] = a.content;
    types[a.id] = a.special ? 3 : 4;
  }
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) (tokens[i] = `[PAD${i}]`), (types[i] = 5);
  }
  const merges: string[] = (model.merges ?? []).map((m: string | string[]) => (Array.isArray(m) ? m.join(" ") : m));
  const idOf = (s: string | undefined | null | { content: string }) => {
    const name = typeof s === "object" && s ? s.content : s;
    if (!name) return undefined;
    const i = tokens.indexOf(name);
    return i >= 0 ? i : undefined;
  };
  const meta: [string, Meta][] = [];
  const byteLevel = JSON.stringify(tok.pre_tokenizer ?? {}).includes("ByteLevel");
  if (model.byte_fallback && !byteLevel) {
    // SentencePiece-style: GGUF carries scores, not merges. A piece made by merge rank r scores -r,
    // so ranking splits by score (what readers do) gives back the merge order.
    const scores = new Array(vocabSize).fill(0);
    merges.forEach((m, r) => {
      const id = idOf(m.split(" ").join(""));
      if (id !== undefined && scores[id] === 0) scores[id] = -(r + 1);
    });
    tokens.forEach((t, i) => {
      if (/^<0x[0-9A-F]{2}>$/.test(t)) types[i] = 6;
    });
    const unk = idOf(model.unk_token);
    if (unk !== undefined) types[unk] = 2;
    meta.push(["tokenizer.ggml.model", str("llama")], ["tokenizer.ggml.pre", str("default")]);
    meta.push(["tokenizer.ggml.tokens", strArr(tokens)], ["tokenizer.ggml.scores", f32Arr(scores)]);
    meta.push(["tokenizer.ggml.token_type", i32Arr(types)]);
    if (unk !== undefined) meta.push(["tokenizer.ggml.unknown_token_id", u32(unk)]);
    meta.push(["tokenizer.ggml.add_space_prefix", bool(JSON.stringify(tok.normalizer ?? {}).includes("Prepend"))]);
  } else {
    const pre = JSON.stringify(tok.pre_tokenizer ?? {});
    const preName = pre.includes("\\\\p{N}{1,3}") || pre.includes("\\p{N}{1,3}")
      ? "llama-bpe"
      : pre.includes("Digits")
      ? "smollm"
      : "gpt-2";
    meta.push(["tokenizer.ggml.model", str("gpt2")], ["tokenizer.ggml.pre", str(preName)]);
    meta.push(["tokenizer.ggml.tokens", strArr(tokens)], ["tokenizer.ggml.token_type", i32Arr(types)]);
    meta.push(["tokenizer.ggml.merges", strArr(merges)]);
  }
  const bos = idOf(cfg.bos_token), eos = idOf(cfg.eos_token), pad = idOf(cfg.pad_token);
  if (bos !== undefined) meta.push(["tokenizer.ggml.bos_token_id", u32(bos)]);
  if (eos !== undefined) meta.push(["tokenizer.ggml.eos_token_id", u32(eos)]);
  const eot = idOf("<|eot_id|>") ?? idOf("<|im_end|>");
  if (eot !== undefined && eot !== eos) meta.push(["tokenizer.ggml.eot_token_id", u32(eot)]);
  if (pad !== undefined) meta.push(["tokenizer.ggml.padding_token_id", u32(pad)]);
  const addBos = cfg.add_bos_token ?? JSON.stringify(tok.post_processor ?? {}).includes("SpecialToken");
  meta.push(["tokenizer.ggml.add_bos_token", bool(addBos)]);
  if (typeof cfg.chat_template === "string") meta.push(["tokenizer.chat_template", str(cfg.chat_template)]);
  return meta;
}

/** Llama 3 RoPE frequency factors (llama.cpp stores them as rope_freqs.weight). */
function llama3RopeFactors(c: any, headDim: number): Float32Array {
  const s = c.rope_scaling, base = c.rope_theta ?? 10000;
  const lowWl = s.original_max_position_embeddings / (s.low_freq_factor ?? 1);
  const highWl = s.original_max_position_embeddings / (s.high_freq_factor ?? 4);
  const out = new Float32Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) {
    const freq = 1 / base ** ((2 * i) / headDim), wl = (2 * Math.PI) / freq;
    if (wl < highWl) out[i] = 1;
    else if (wl > lowWl) out[i] = s.factor;
    else {
      const smooth = (s.original_max_position_embeddings / wl - (s.low_freq_factor ?? 1)) /
        ((s.high_freq_factor ?? 4) - (s.low_freq_factor ?? 1));
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

export interface LlamaGgufOptions {
  config: any;
  tokenizer: any;
  tokenizerConfig?: any;
  type: WeightType;
  seed: number;
  /** Reads an HF tensor by name; absent → random weights. */
  weights?: (name: string) => Float32Array | undefined;
  name?: string;
}

export function llamaGguf(o: LlamaGgufOptions): { metadata: [string, Meta][]; tensors: TensorSpec[] } {
  const c = o.config;
  const hidden = c.hidden_size, nHead = c.num_attention_heads, nKv = c.num_key_value_heads ?? nHead;
  const headDim = c.head_dim ?? hidden / nHead, ffn = c.intermediate_size, nLayer = c.num_hidden_layers;
  const vocab = c.vocab_size;
  const tied = c.tie_word_embeddings ?? false;
  const metadata: [string, Meta][] = [
    ["general.architecture", str("llama")],
    ["general.name", str(o.name ?? "llm-server fixture")],
    ["general.file_type", u32(FILE_TYPE[o.type])],
    ["general.quantization_version", u32(2)],
    ["llama.block_count", u32(nLayer)],
    ["llama.context_length", u32(c.max_position_embeddings ?? 2048)],
    ["llama.embedding_length", u32(hidden)],
    ["llama.feed_forward_length", u32(ffn)],
    ["llama.attention.head_count", u32(nHead)],
    ["llama.attention.head_count_kv", u32(nKv)],
    ["llama.attention.key_length", u32(headDim)],
    ["llama.attention.value_length", u32(headDim)],
    ["llama.rope.dimension_count", u32(headDim)],
    ["llama.rope.freq_base", f32(c.rope_theta ?? 10000)],
    ["llama.attention.layer_norm_rms_epsilon", f32(c.rms_norm_eps ?? 1e-5)],
    ["llama.vocab_size", u32(vocab)],
    ...tokenizerMeta(o.tokenizer, o.tokenizerConfig ?? {}, vocab),
  ];
  const next = rng(o.seed);
  const random = (n: number, scale: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (next() * 2 - 1) * scale;
    return a;
  };
  const get = (hf: string, n: number, fill: "ones" | "random") => {
    const w = o.weights?.(hf);
    if (w) {
      if (w.length !== n) throw new Error(`${hf}: ${w.length} values, expected ${n}`);
      return w;
    }
    if (o.weights) throw new Error(`tensor ${hf} is missing from the weights`);
    return fill === "ones" ? new Float32Array(n).fill(1) : random(n, 0.05);
  };
  // llama.cpp falls back to a float type when a row is not a whole number of quant blocks.
  const typeFor = (cols: number): WeightType => (cols % BLOCK[o.type][0] === 0 ? o.type : "f16");
  const mat = (name: string, hf: string, rows: number, cols: number, permuteHeads = 0): TensorSpec => ({
    name,
    dims: [cols, rows],
    type: typeFor(cols),
    values: () => {
      const w = get(hf, rows * cols, "random");
      return permuteHeads ? permuteQK(w, rows, cols, permuteHeads) : w;
    },
  });
  const norm = (name: string, hf: string): TensorSpec => ({
    name,
    dims: [hidden],
    type: "f32",
    values: () => get(hf, hidden, "ones"),
  });
  const tensors: TensorSpec[] = [mat("token_embd.weight", "model.embed_tokens.weight", vocab, hidden)];
  if (c.rope_scaling?.rope_type === "llama3") {
    tensors.push({ name: "rope_freqs.weight", dims: [headDim / 2], type: "f32", values: () => llama3RopeFactors(c, headDim) });
  }
  for (let l = 0; l < nLayer; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      norm(`blk.${l}.attn_norm.weight`, `${p}input_layernorm.weight`),
      mat(`blk.${l}.attn_q.weight`, `${p}self_attn.q_proj.weight`, nHead * headDim, hidden, nHead),
      mat(`blk.${l}.attn_k.weight`, `${p}self_attn.k_proj.weight`, nKv * headDim, hidden, nKv),
      mat(`blk.${l}.attn_v.weight`, `${p}self_attn.v_proj.weight`, nKv * headDim, hidden),
      mat(`blk.${l}.attn_output.weight`, `${p}self_attn.o_proj.weight`, hidden, nHead * headDim),
      norm(`blk.${l}.ffn_norm.weight`, `${p}post_attention_layernorm.weight`),
      mat(`blk.${l}.ffn_gate.weight`, `${p}mlp.gate_proj.weight`, ffn, hidden),
      mat(`blk.${l}.ffn_up.weight`, `${p}mlp.up_proj.weight`, ffn, hidden),
      mat(`blk.${l}.ffn_down.weight`, `${p}mlp.down_proj.weight`, hidden, ffn),
    );
  }
  tensors.push(norm("output_norm.weight", "model.norm.weight"));
  if (!tied) tensors.push(mat("output.weight", "lm_head.weight", vocab, hidden));
  return { metadata, tensors };
}

function parseArgs(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    if (!args[i].startsWith("--")) throw new Error(`unexpected argument ${args[i]}`);
    out[args[i].slice(2)] = args[i + 1];
    i++;
  }
  return out;
}

if (import.meta.main) {
  const a = parseArgs(Deno.args);
  const usage = "usage: gguf_writer.ts --config config.json --tokenizer tokenizer.json --type f32|f16|bf16|q8_0|q4_0|q4_1 " +
    "--out file.gguf [--seed 1] [--weights model.safetensors] [--tokenizer-config tokenizer_config.json]";
  if (!a.config || !a.tokenizer || !a.out) {
    console.error(usage);
    Deno.exit(2);
  }
  const type = (a.type ?? "f16") as WeightType;
  if (!(type in BLOCK)) {
    console.error(`unknown --type ${type}\n${usage}`);
    Deno.exit(2);
  }
  const readJson = (p: string) => JSON.parse(Deno.readTextFileSync(p));
  const tokCfgPath = a["tokenizer-config"] ?? a.tokenizer.replace(/tokenizer\.json$/, "tokenizer_config.json");
  let tokenizerConfig = {};
  try {
    tokenizerConfig = readJson(tokCfgPath);
  } catch { /* tokenizer_config.json is optional */ }
  const t0 = performance.now();
  const { metadata, tensors } = llamaGguf({
    config: readJson(a.config),
    tokenizer: readJson(a.tokenizer),
    tokenizerConfig,
    type,
    seed: Number(a.seed ?? 1),
    weights: a.weights ? safetensorsReader(a.weights) : undefined,
  });
  writeGguf(a.out, metadata, tensors);
  const size = Deno.statSync(a.out).size;
  console.error(`gguf_writer: ${a.out} (${tensors.length} tensors, ${(size / 1e6).toFixed(1)} MB, ${type}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
