/** A Llama checkpoint as GGUF: llama.* metadata from config.json, tensors in llama.cpp's names and layout
 * (Q/K rows permuted for its RoPE, rope_freqs for llama3 scaling), weights from HF or seeded random. */
import { seededRandom } from "../lib/seeded_random.ts";
import type { TensorSpec } from "./file.ts";
import { f32, type Meta, str, u32 } from "./metadata.ts";
import { BLOCK, FILE_TYPE, type WeightType } from "./quantize.ts";
import { tokenizerMeta } from "./tokenizer.ts";

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
  const next = seededRandom(o.seed);
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
