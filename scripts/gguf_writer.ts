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
 *
 * This file is the CLI and the writer's public face; the parts are in gguf_writer/: numbers.ts (f16/bf16),
 * quantize.ts (weight types, ggml's quantizers), byte_writer.ts, metadata.ts, file.ts (the GGUF layout),
 * safetensors.ts (HF weights), tokenizer.ts (tokenizer.ggml.*), llama.ts (metadata and tensors of a Llama).
 */
import { writeGguf } from "./gguf_writer/file.ts";
import { llamaGguf } from "./gguf_writer/llama.ts";
import { BLOCK, type WeightType } from "./gguf_writer/quantize.ts";
import { safetensorsReader } from "./gguf_writer/safetensors.ts";

export { type TensorSpec, writeGguf } from "./gguf_writer/file.ts";
export { type LlamaGgufOptions, llamaGguf, permuteQK } from "./gguf_writer/llama.ts";
export { bool, f32, f32Arr, i32Arr, type Meta, str, strArr, u32 } from "./gguf_writer/metadata.ts";
export { f16BitsToF32, f32ToF16Bits } from "./gguf_writer/numbers.ts";
export { encode, type WeightType } from "./gguf_writer/quantize.ts";
export { safetensorsReader } from "./gguf_writer/safetensors.ts";
export { tokenizerMeta } from "./gguf_writer/tokenizer.ts";

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
