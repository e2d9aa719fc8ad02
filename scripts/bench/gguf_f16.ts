// Minimal GGUF v3 writer for benchmark trials only: a Llama-shaped model with random F16 weights and the
// real tokenizer, so llama.cpp loads it like a converted checkpoint. The project's full writer lives at
// scripts/gguf_writer.ts (same CLI); bench_cpu.sh prefers it and falls back to this file. The header bytes go
// through the writer's ByteWriter (scripts/gguf_writer/byte_writer.ts).
//
// deno run -A scripts/bench/gguf_f16.ts --config config.json --tokenizer tokenizer.json --seed 1 --out f.gguf

import { ByteWriter } from "../gguf_writer/byte_writer.ts";
import { parseFlags } from "./args.ts";

const GGUF_ALIGNMENT = 32;

enum ValueType {
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
}

enum TensorType {
  F32 = 0,
  F16 = 1,
}

type MetaValue =
  | { type: ValueType.UINT32 | ValueType.INT32 | ValueType.FLOAT32; value: number }
  | { type: ValueType.BOOL; value: boolean }
  | { type: ValueType.STRING; value: string }
  | { type: ValueType.ARRAY; itemType: ValueType.STRING; value: string[] }
  | { type: ValueType.ARRAY; itemType: ValueType.INT32; value: number[] };

interface TensorSpec {
  name: string;
  /** ggml order: dims[0] is the contiguous (input) dimension. */
  dims: number[];
  type: TensorType;
  fill: "ones" | "random";
}

function writeValue(sink: ByteWriter, meta: MetaValue) {
  sink.u32(meta.type);
  switch (meta.type) {
    case ValueType.UINT32:
      sink.u32(meta.value);
      break;
    case ValueType.INT32:
      sink.i32(meta.value);
      break;
    case ValueType.FLOAT32:
      sink.f32(meta.value);
      break;
    case ValueType.BOOL:
      sink.u8(meta.value ? 1 : 0);
      break;
    case ValueType.STRING:
      sink.str(meta.value);
      break;
    case ValueType.ARRAY:
      sink.u32(meta.itemType);
      sink.u64(meta.value.length);
      for (const item of meta.value) {
        if (meta.itemType === ValueType.STRING) sink.str(item as string);
        else sink.i32(item as number);
      }
      break;
  }
}

function tokenizerMetadata(tokenizer: any, config: any): Record<string, MetaValue> {
  const vocabSize: number = config.vocab_size;
  const tokens = new Array<string>(vocabSize);
  const types = new Array<number>(vocabSize).fill(1); // 1 = normal
  for (const [token, id] of Object.entries<number>(tokenizer.model.vocab)) tokens[id] = token;
  for (const added of tokenizer.added_tokens ?? []) {
    tokens[added.id] = added.content;
    types[added.id] = added.special ? 3 : 4; // 3 = control, 4 = user defined
  }
  for (let id = 0; id < vocabSize; id++) {
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = 5; // unused
    }
  }
  const merges: string[] = tokenizer.model.merges.map((m: string | string[]) =>
    Array.isArray(m) ? m.join(" ") : m
  );
  const eos = Array.isArray(config.eos_token_id) ? config.eos_token_id[0] : config.eos_token_id;
  return {
    "tokenizer.ggml.model": { type: ValueType.STRING, value: "gpt2" },
    "tokenizer.ggml.pre": { type: ValueType.STRING, value: "llama-bpe" },
    "tokenizer.ggml.tokens": { type: ValueType.ARRAY, itemType: ValueType.STRING, value: tokens },
    "tokenizer.ggml.token_type": { type: ValueType.ARRAY, itemType: ValueType.INT32, value: types },
    "tokenizer.ggml.merges": { type: ValueType.ARRAY, itemType: ValueType.STRING, value: merges },
    "tokenizer.ggml.bos_token_id": { type: ValueType.UINT32, value: config.bos_token_id },
    "tokenizer.ggml.eos_token_id": { type: ValueType.UINT32, value: eos },
  };
}

function llamaTensors(config: any): TensorSpec[] {
  const hidden: number = config.hidden_size;
  const heads: number = config.num_attention_heads;
  const kvHeads: number = config.num_key_value_heads ?? heads;
  const headDim: number = config.head_dim ?? hidden / heads;
  const ffn: number = config.intermediate_size;
  const specs: TensorSpec[] = [
    { name: "token_embd.weight", dims: [hidden, config.vocab_size], type: TensorType.F16, fill: "random" },
    { name: "output_norm.weight", dims: [hidden], type: TensorType.F32, fill: "ones" },
  ];
  if (!config.tie_word_embeddings) {
    specs.push({
      name: "output.weight",
      dims: [hidden, config.vocab_size],
      type: TensorType.F16,
      fill: "random",
    });
  }
  for (let layer = 0; layer < config.num_hidden_layers; layer++) {
    const p = `blk.${layer}.`;
    const matrix = (name: string, cols: number, rows: number): TensorSpec => ({
      name: p + name,
      dims: [cols, rows],
      type: TensorType.F16,
      fill: "random",
    });
    specs.push(
      { name: p + "attn_norm.weight", dims: [hidden], type: TensorType.F32, fill: "ones" },
      matrix("attn_q.weight", hidden, heads * headDim),
      matrix("attn_k.weight", hidden, kvHeads * headDim),
      matrix("attn_v.weight", hidden, kvHeads * headDim),
      matrix("attn_output.weight", heads * headDim, hidden),
      { name: p + "ffn_norm.weight", dims: [hidden], type: TensorType.F32, fill: "ones" },
      matrix("ffn_gate.weight", hidden, ffn),
      matrix("ffn_up.weight", hidden, ffn),
      matrix("ffn_down.weight", ffn, hidden),
    );
  }
  return specs;
}

function tensorBytes(spec: TensorSpec): number {
  const count = spec.dims.reduce((a, b) => a * b, 1);
  return count * (spec.type === TensorType.F16 ? 2 : 4);
}

/** Small random F16 values (|x| < ~0.03) so activations stay finite through the layers. */
function randomF16Table(seed: number): Uint16Array {
  const table = new Uint16Array(1 << 16);
  const view = new DataView(new ArrayBuffer(4));
  let state = seed >>> 0 || 1;
  for (let i = 0; i < table.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const x = ((state >>> 0) / 0xffffffff - 0.5) * 0.06;
    view.setFloat32(0, x, true);
    const f = view.getUint32(0, true);
    const sign = (f >>> 16) & 0x8000;
    const exp = ((f >>> 23) & 0xff) - 127 + 15;
    table[i] = exp <= 0 ? sign : sign | (exp << 10) | ((f >>> 13) & 0x3ff);
  }
  return table;
}

async function main() {
  const args = parseFlags(Deno.args) as Record<string, string>;
  if (!args.config || !args.tokenizer || !args.out) {
    console.error(
      "usage: gguf_f16.ts --config config.json --tokenizer tokenizer.json [--seed 1] --out f.gguf",
    );
    Deno.exit(2);
  }
  if (args.type && args.type !== "f16") {
    console.error(`only --type f16 is supported here, got ${args.type}`);
    Deno.exit(2);
  }
  const config = JSON.parse(await Deno.readTextFile(args.config));
  const tokenizer = JSON.parse(await Deno.readTextFile(args.tokenizer));
  if (config.model_type !== "llama") throw new Error(`unsupported model_type ${config.model_type}`);
  const seed = Number(args.seed ?? 1);

  const heads = config.num_attention_heads;
  const headDim = config.head_dim ?? config.hidden_size / heads;
  const metadata: Record<string, MetaValue> = {
    "general.architecture": { type: ValueType.STRING, value: "llama" },
    "general.name": { type: ValueType.STRING, value: "random-f16-bench" },
    "general.file_type": { type: ValueType.UINT32, value: 1 }, // MOSTLY_F16
    "general.alignment": { type: ValueType.UINT32, value: GGUF_ALIGNMENT },
    "llama.context_length": { type: ValueType.UINT32, value: config.max_position_embeddings },
    "llama.embedding_length": { type: ValueType.UINT32, value: config.hidden_size },
    "llama.block_count": { type: ValueType.UINT32, value: config.num_hidden_layers },
    "llama.feed_forward_length": { type: ValueType.UINT32, value: config.intermediate_size },
    "llama.attention.head_count": { type: ValueType.UINT32, value: heads },
    "llama.attention.head_count_kv": {
      type: ValueType.UINT32,
      value: config.num_key_value_heads ?? heads,
    },
    "llama.attention.key_length": { type: ValueType.UINT32, value: headDim },
    "llama.attention.value_length": { type: ValueType.UINT32, value: headDim },
    "llama.rope.dimension_count": { type: ValueType.UINT32, value: headDim },
    "llama.rope.freq_base": { type: ValueType.FLOAT32, value: config.rope_theta ?? 10000 },
    "llama.attention.layer_norm_rms_epsilon": { type: ValueType.FLOAT32, value: config.rms_norm_eps },
    "llama.vocab_size": { type: ValueType.UINT32, value: config.vocab_size },
    ...tokenizerMetadata(tokenizer, config),
  };
  const tensors = llamaTensors(config);

  const header = new ByteWriter();
  for (const c of "GGUF") header.u8(c.charCodeAt(0));
  header.u32(3);
  header.u64(tensors.length);
  header.u64(Object.keys(metadata).length);
  for (const [key, value] of Object.entries(metadata)) {
    header.str(key);
    writeValue(header, value);
  }
  let offset = 0;
  for (const spec of tensors) {
    header.str(spec.name);
    header.u32(spec.dims.length);
    for (const d of spec.dims) header.u64(d);
    header.u32(spec.type);
    header.u64(offset);
    offset += Math.ceil(tensorBytes(spec) / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
  }
  header.pad(GGUF_ALIGNMENT);

  const file = await Deno.open(args.out, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, header.done());
    const table = randomF16Table(seed);
    const chunkElems = 1 << 22;
    const chunk = new Uint16Array(chunkElems);
    let state = (seed * 2654435761) >>> 0 || 1;
    for (const spec of tensors) {
      const bytes = tensorBytes(spec);
      if (spec.type === TensorType.F32) {
        const ones = new Float32Array(bytes / 4).fill(1);
        await writeAll(file, new Uint8Array(ones.buffer));
      } else {
        let remaining = bytes / 2;
        while (remaining > 0) {
          const n = Math.min(remaining, chunkElems);
          for (let i = 0; i < n; i++) {
            state ^= state << 13;
            state ^= state >>> 17;
            state ^= state << 5;
            chunk[i] = table[state & 0xffff];
          }
          await writeAll(file, new Uint8Array(chunk.buffer, 0, n * 2));
          remaining -= n;
        }
      }
      const pad = Math.ceil(bytes / GGUF_ALIGNMENT) * GGUF_ALIGNMENT - bytes;
      if (pad) await writeAll(file, new Uint8Array(pad));
    }
  } finally {
    file.close();
  }
  console.log(`wrote ${args.out}: ${tensors.length} tensors, ${(offset / 1e9).toFixed(3)} GB of weights`);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array) {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

if (import.meta.main) await main();
