/** tokenizer.ggml.* metadata the way llama.cpp's converter writes it, from an HF tokenizer.json. */
import { bool, f32Arr, i32Arr, type Meta, str, strArr, u32 } from "./metadata.ts";

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
