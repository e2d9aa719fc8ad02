import { Tokenizer } from "@huggingface/tokenizers";
import { ModelFolderError } from "../errors.ts";

/** The model's tokenizer plus the facts the server needs around it (special tokens, EOS set). */
export class TextTokenizer {
  readonly eosTokenIds: Set<number>;
  readonly specialIds: Set<number>;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly config: Record<string, unknown>;
  readonly vocabSize: number;

  constructor(
    private readonly inner: Tokenizer,
    config: Record<string, unknown>,
    eosIds: number[],
    specialIds: number[],
    vocabSize: number,
  ) {
    this.config = config;
    this.bosToken = tokenString(config.bos_token);
    this.eosToken = tokenString(config.eos_token);
    this.eosTokenIds = new Set(eosIds);
    this.specialIds = new Set(specialIds);
    this.vocabSize = vocabSize;
  }

  static async load(modelDir: string): Promise<TextTokenizer> {
    const tokenizerJson = await readJson(`${modelDir}/tokenizer.json`, true);
    const config = (await readJson(`${modelDir}/tokenizer_config.json`, false)) ?? {};
    const generation = (await readJson(`${modelDir}/generation_config.json`, false)) ?? {};
    const modelConfig = (await readJson(`${modelDir}/config.json`, false)) ?? {};
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new ModelFolderError(
        `${modelDir}/tokenizer.json: cannot build the tokenizer: ${(e as Error).message}`,
      );
    }
    const eos = new Set<number>();
    for (const source of [modelConfig.eos_token_id, generation.eos_token_id]) {
      for (const id of Array.isArray(source) ? source : [source]) if (Number.isInteger(id)) eos.add(id);
    }
    const eosName = tokenString(config.eos_token);
    if (eos.size === 0 && eosName !== null) {
      const id = inner.token_to_id(eosName);
      if (id !== undefined) eos.add(id);
    }
    const special: number[] = [];
    for (const t of (tokenizerJson.added_tokens ?? []) as { id: number; special: boolean }[]) {
      if (t.special) special.push(t.id);
    }
    const vocabSize = Number(modelConfig.vocab_size ?? inner.get_vocab(true).size);
    return new TextTokenizer(inner, config, [...eos], special, vocabSize);
  }

  /** A tokenizer from in-memory tokenizer.json/tokenizer_config.json objects (the GGUF path); `source` names it in errors. */
  static fromParts(
    tokenizerJson: Record<string, unknown>,
    config: Record<string, unknown>,
    eosIds: number[],
    source: string,
  ): TextTokenizer {
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new ModelFolderError(`${source}: cannot build the tokenizer: ${(e as Error).message}`);
    }
    const added = (tokenizerJson.added_tokens ?? []) as { id: number; special: boolean }[];
    const special = added.filter((t) => t.special).map((t) => t.id);
    return new TextTokenizer(inner, config, eosIds, special, inner.get_vocab(true).size);
  }

  /** Plain text prompts get the post-processor's special tokens (BOS); rendered chat templates carry their own. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    const key = ids.length <= 2 ? this.shortKey(ids, skipSpecialTokens) : -1;
    if (key >= 0) {
      const hit = this.shortDecodes.get(key);
      if (hit !== undefined) return hit;
    }
    const text = this.inner.decode(ids, {
      skip_special_tokens: skipSpecialTokens,
      clean_up_tokenization_spaces: false,
    });
    if (key >= 0) {
      if (this.shortDecodes.size >= SHORT_DECODES_MAX) this.shortDecodes.clear();
      this.shortDecodes.set(key, text);
    }
    return text;
  }

  /**
   * Decodes of one or two tokens, remembered: the streaming detokenizer decodes such windows twice per
   * token of every stream, and the tokenizer's decoder chain costs microseconds each time. Bounded.
   */
  private readonly shortDecodes = new Map<number, string>();

  /** A number naming (ids, skip) for windows of one or two in-vocabulary ids, else -1. */
  private shortKey(ids: number[], skip: boolean): number {
    const v = this.vocabSize;
    const a = ids[0];
    const b = ids.length === 2 ? ids[1] : -1;
    if (!Number.isInteger(a) || a < 0 || a >= v || !Number.isInteger(b) || b < -1 || b >= v) return -1;
    return ((b + 1) * v + a) * 2 + (skip ? 1 : 0);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  /** The text one token stands for on its own, as OpenAI logprobs show it. */
  tokenText(id: number): string {
    return this.inner.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

const SHORT_DECODES_MAX = 1 << 16;

function tokenString(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    return (value as { content: string }).content;
  }
  return null;
}

async function readJson(path: string, required: boolean): Promise<any> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!required && e instanceof Deno.errors.NotFound) return null;
    throw new ModelFolderError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelFolderError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}
