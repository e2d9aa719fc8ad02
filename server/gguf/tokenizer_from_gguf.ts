/**
 * Tokenizer, chat template and special ids from GGUF metadata, as the tokenizer.json /
 * tokenizer_config.json pair that @huggingface/tokenizers takes, so GGUF models tokenize through
 * the same code path as HF folders.
 *
 * - `tokenizer.ggml.model = "gpt2"`: byte-level BPE; the pre-tokenizer regexes follow llama.cpp's
 *   choice per `tokenizer.ggml.pre` (what its converter recorded from the HF tokenizer).
 * - `tokenizer.ggml.model = "llama"`: SentencePiece BPE with byte fallback. GGUF stores scores
 *   instead of merges; merges are rebuilt by ranking every split of a piece by the piece's score,
 *   which reproduces SentencePiece's "merge the highest-scoring pair" order.
 */
import { GgufFormatError, type GgufValue, metaArray, metaBool, metaNumber, metaString } from "./reader.ts";

/** llama.cpp token types (tokenizer.ggml.token_type). */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function splitThenBytes(regex: string) {
  return {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
}

/** The HF pre-tokenizer equivalent to llama.cpp's regexes for a `tokenizer.ggml.pre` value. */
export function preTokenizerFor(pre: string): object {
  switch (pre) {
    case "default":
    case "gpt-2":
    case "gpt2":
    case "mpt":
    case "olmo":
    case "jais":
      return { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
    case "smollm":
    case "starcoder":
    case "refact":
    case "command-r":
    case "codeshell":
    case "exaone":
    case "minerva-7b":
      // llama.cpp isolates every \p{N} character first, then applies the GPT-2 regex. (HF's Digits
      // pre-tokenizer means the same, but tokenizers.js implements it for fewer characters than \p{N}.)
      return {
        type: "Sequence",
        pretokenizers: [
          { type: "Split", pattern: { Regex: "\\p{N}" }, behavior: "Isolated", invert: false },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        ],
      };
    case "llama-bpe":
    case "llama3":
    case "falcon3":
    case "pixtral":
      return splitThenBytes(LLAMA3_REGEX);
    case "qwen2":
    case "stablelm2":
    case "deepseek-r1-qwen":
      return splitThenBytes(QWEN2_REGEX);
    default:
      throw new GgufFormatError(
        `tokenizer.ggml.pre '${pre}' is not supported (supported: default, gpt-2, smollm, starcoder, llama-bpe, qwen2 and their aliases)`,
      );
  }
}

export interface GgufTokenizer {
  /** tokenizer.json equivalent. */
  tokenizerJson: Record<string, unknown>;
  /** tokenizer_config.json equivalent (special token strings, chat template, add_bos_token). */
  tokenizerConfig: Record<string, unknown>;
  chatTemplate: string | null;
  bosTokenId: number | null;
  /** EOS, EOT and EOM ids: generation stops on any of them (as llama.cpp's end-of-generation set). */
  eosTokenIds: number[];
  addBos: boolean;
}

function strings(m: Map<string, GgufValue>, key: string): string[] {
  const a = metaArray(m, key);
  if (!a) throw new GgufFormatError(`metadata '${key}' is missing`);
  return a.map((v, i) => {
    if (typeof v !== "string") throw new GgufFormatError(`metadata '${key}'[${i}] is not a string`);
    return v;
  });
}

function numbers(m: Map<string, GgufValue>, key: string, n: number, fill: number): number[] {
  const a = metaArray(m, key);
  if (!a) return new Array(n).fill(fill);
  if (a.length !== n) throw new GgufFormatError(`metadata '${key}' has ${a.length} entries, tokens has ${n}`);
  return a.map((v) => Number(v));
}

export function tokenizerFromGguf(m: Map<string, GgufValue>): GgufTokenizer {
  const kind = metaString(m, "tokenizer.ggml.model");
  if (kind === undefined) throw new GgufFormatError("metadata 'tokenizer.ggml.model' is missing: the file carries no tokenizer");
  const tokens = strings(m, "tokenizer.ggml.tokens");
  const types = numbers(m, "tokenizer.ggml.token_type", tokens.length, TokenType.NORMAL);
  const id = (key: string) => {
    const v = metaNumber(m, key);
    if (v === undefined || v < 0 || v >= tokens.length) return null;
    return v;
  };
  const bos = id("tokenizer.ggml.bos_token_id");
  const eos = id("tokenizer.ggml.eos_token_id");
  const unk = id("tokenizer.ggml.unknown_token_id");
  const eosTokenIds = [eos, id("tokenizer.ggml.eot_token_id"), id("tokenizer.ggml.eom_token_id")]
    .filter((v, i, a): v is number => v !== null && a.indexOf(v) === i);
  const addBos = metaBool(m, "tokenizer.ggml.add_bos_token") ?? kind === "llama";
  const addEos = metaBool(m, "tokenizer.ggml.add_eos_token") ?? false;

  // Control, user-defined and unknown tokens are matched whole in the input (llama.cpp's special
  // token partitioning); HF expresses that as added tokens.
  const added = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = types[i];
    if (t === TokenType.CONTROL || t === TokenType.USER_DEFINED || t === TokenType.UNKNOWN) {
      added.push({
        id: i,
        content: tokens[i],
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: t === TokenType.USER_DEFINED,
        special: t !== TokenType.USER_DEFINED,
      });
    }
  }

  const vocab: Record<string, number> = {};
  for (let i = 0; i < tokens.length; i++) if (!(tokens[i] in vocab)) vocab[tokens[i]] = i;

  let model: Record<string, unknown>;
  let normalizer: unknown = null;
  let preTokenizer: unknown = null;
  let decoder: unknown;
  if (kind === "gpt2") {
    const merges = strings(m, "tokenizer.ggml.merges");
    model = {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    };
    preTokenizer = preTokenizerFor(metaString(m, "tokenizer.ggml.pre") ?? "default");
    decoder = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
  } else if (kind === "llama") {
    const scores = numbers(m, "tokenizer.ggml.scores", tokens.length, 0);
    model = {
      type: "BPE",
      dropout: null,
      unk_token: unk !== null ? tokens[unk] : null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: mergesFromScores(tokens, scores, types),
    };
    const addSpacePrefix = metaBool(m, "tokenizer.ggml.add_space_prefix") ?? true;
    const replace = { type: "Replace", pattern: { String: " " }, content: "▁" };
    normalizer = addSpacePrefix
      ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, replace] }
      : replace;
    const decoders: unknown[] = [
      { type: "Replace", pattern: { String: "▁" }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
    ];
    if (addSpacePrefix) decoders.push({ type: "Strip", content: " ", start: 1, stop: 0 });
    decoder = { type: "Sequence", decoders };
  } else {
    throw new GgufFormatError(`tokenizer.ggml.model '${kind}' is not supported (only gpt2 and llama)`);
  }

  const postProcessor = templateProcessing(tokens, addBos ? bos : null, addEos ? eos : null);
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer,
    pre_tokenizer: preTokenizer,
    post_processor: postProcessor,
    decoder,
    model,
  };
  const chatTemplate = metaString(m, "tokenizer.chat_template") ?? null;
  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: addBos,
    add_eos_token: addEos,
    bos_token: bos !== null ? tokens[bos] : null,
    eos_token: eos !== null ? tokens[eos] : null,
    unk_token: unk !== null ? tokens[unk] : null,
    clean_up_tokenization_spaces: false,
    chat_template: chatTemplate,
  };
  const pad = id("tokenizer.ggml.padding_token_id");
  if (pad !== null) tokenizerConfig.pad_token = tokens[pad];
  return { tokenizerJson, tokenizerConfig, chatTemplate, bosTokenId: bos, eosTokenIds, addBos };
}

function templateProcessing(tokens: string[], bos: number | null, eos: number | null): unknown {
  if (bos === null && eos === null) return null;
  const single: unknown[] = [];
  const special: Record<string, unknown> = {};
  if (bos !== null) {
    single.push({ SpecialToken: { id: tokens[bos], type_id: 0 } });
    special[tokens[bos]] = { id: tokens[bos], ids: [bos], tokens: [tokens[bos]] };
  }
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (eos !== null) {
    single.push({ SpecialToken: { id: tokens[eos], type_id: 0 } });
    special[tokens[eos]] = { id: tokens[eos], ids: [eos], tokens: [tokens[eos]] };
  }
  const pair = [...single, ...single.map((p: any) => (p.Sequence ? { Sequence: { id: "B", type_id: 1 } } : p))];
  return { type: "TemplateProcessing", single, pair, special_tokens: special };
}

/**
 * SentencePiece BPE merges from piece scores: every way to split a normal piece into two pieces of
 * the vocabulary is a merge, ranked by the merged piece's score (higher first), ties by id.
 */
export function mergesFromScores(tokens: string[], scores: number[], types: number[]): string[][] {
  const index = new Map<string, number>();
  for (let i = 0; i < tokens.length; i++) {
    if (types[i] === TokenType.NORMAL || types[i] === TokenType.USER_DEFINED) {
      if (!index.has(tokens[i])) index.set(tokens[i], i);
    }
  }
  const merges: { left: string; right: string; score: number; id: number; leftId: number }[] = [];
  for (const [piece, pid] of index) {
    const chars = Array.from(piece);
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join(""), right = chars.slice(k).join("");
      const l = index.get(left), r = index.get(right);
      if (l !== undefined && r !== undefined) merges.push({ left, right, score: scores[pid], id: pid, leftId: l });
    }
  }
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.leftId - b.leftId);
  return merges.map((x) => [x.left, x.right]);
}
