import type { TextTokenizer } from "./tokenizer.ts";

export interface DetokenizerOptions {
  stop?: string[];
  noStopTrim?: boolean;
  skipSpecialTokens?: boolean;
}

/** What one step added: `delta` is safe to show (no split UTF-8, no partial stop string). */
export interface DetokenizerStep {
  delta: string;
  /** The stop string that ended the text, when one did. */
  matchedStop: string | null;
}

/**
 * Incremental decoding over a sliding window (surr..read) as SGLang's detokenizer does: the window is
 * decoded twice and only the difference is new, so byte-fallback pieces and decoders that strip a
 * leading space stay consistent with decoding the whole sequence at once.
 */
export class Detokenizer {
  private readonly ids: number[] = [];
  private surr = 0;
  private read = 0;
  /** Decoded text, including what is held back for a possible stop string. */
  private decoded = "";
  private emitted = 0;
  private readonly stops: string[];
  private readonly maxStopLen: number;
  private readonly skipSpecial: boolean;
  private readonly noStopTrim: boolean;
  private stopped = false;

  constructor(private readonly tokenizer: TextTokenizer, options: DetokenizerOptions = {}) {
    this.stops = (options.stop ?? []).filter((s) => s.length > 0);
    this.maxStopLen = Math.max(0, ...this.stops.map((s) => s.length));
    this.skipSpecial = options.skipSpecialTokens ?? true;
    this.noStopTrim = options.noStopTrim ?? false;
  }

  /** Text shown so far (cumulative). */
  get text(): string {
    return this.decoded.slice(0, this.emitted);
  }

  get tokenIds(): readonly number[] {
    return this.ids;
  }

  /** Adds tokens; `final` flushes whatever was held back (incomplete UTF-8 at the very end is dropped). */
  push(tokens: number[], final = false): DetokenizerStep {
    if (this.stopped) return { delta: "", matchedStop: null };
    for (const t of tokens) this.ids.push(t);
    const window = this.ids.slice(this.surr);
    const newText = this.tokenizer.decode(window, this.skipSpecial);
    const prefixText = this.tokenizer.decode(this.ids.slice(this.surr, this.read), this.skipSpecial);
    const complete = !newText.endsWith("\uFFFD");
    if ((complete || final) && newText.length >= prefixText.length) {
      // Bytes that never form a valid UTF-8 character (a sampled lone continuation or lead byte) decode to
      // U+FFFD; clients must never see that, streamed or not, so such bytes are dropped.
      this.decoded += newText.slice(prefixText.length).replaceAll("\uFFFD", "");
      this.surr = this.read;
      this.read = this.ids.length;
    }
    return this.release(final);
  }

  /** Emits up to what cannot be the start of a stop string, or ends the text at a stop string. */
  private release(final: boolean): DetokenizerStep {
    if (this.stops.length > 0) {
      const from = Math.max(0, this.emitted - this.maxStopLen + 1);
      let best: { at: number; stop: string } | null = null;
      for (const stop of this.stops) {
        const at = this.decoded.indexOf(stop, from);
        if (at >= 0 && (best === null || at < best.at)) best = { at, stop };
      }
      if (best) {
        const end = this.noStopTrim ? best.at + best.stop.length : best.at;
        const delta = this.decoded.slice(this.emitted, Math.max(end, this.emitted));
        this.decoded = this.decoded.slice(0, Math.max(end, this.emitted));
        this.emitted = this.decoded.length;
        this.stopped = true;
        return { delta, matchedStop: best.stop };
      }
    }
    const limit = final ? this.decoded.length : this.decoded.length - this.heldBack();
    const delta = this.decoded.slice(this.emitted, limit);
    this.emitted = Math.max(this.emitted, limit);
    return { delta, matchedStop: null };
  }

  /** Length of the longest tail of the text that is a proper prefix of some stop string. */
  private heldBack(): number {
    let hold = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.decoded.length); n > hold; n--) {
        if (this.decoded.endsWith(stop.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}

/** GPT-2's byte-level alphabet read backwards: the printable character standing for each byte. */
function byteLevelDecoder(): Map<string, number> {
  const direct: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) direct.push(b);
  for (let b = 0xa1; b <= 0xac; b++) direct.push(b);
  for (let b = 0xae; b <= 0xff; b++) direct.push(b);
  const map = new Map<string, number>();
  for (const b of direct) map.set(String.fromCodePoint(b), b);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    if (!direct.includes(b)) map.set(String.fromCodePoint(256 + shifted++), b);
  }
  return map;
}

const BYTE_LEVEL = byteLevelDecoder();
const utf8 = new TextEncoder();
const byteLevelTokenizers = new WeakMap<TextTokenizer, boolean>();

/**
 * The raw bytes one token stands for (OpenAI's logprobs `bytes`): exact even for a token holding part of a
 * UTF-8 character, where the token's text alone would only be U+FFFD.
 */
export function tokenBytes(tokenizer: TextTokenizer, id: number): number[] {
  const raw = tokenizer.idToToken(id);
  if (raw === undefined) return [...utf8.encode(tokenizer.tokenText(id))];
  if (tokenizer.specialIds.has(id)) return [...utf8.encode(raw)];
  const byteFallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(raw);
  if (byteFallback) return [parseInt(byteFallback[1], 16)];
  let byteLevel = byteLevelTokenizers.get(tokenizer);
  if (byteLevel === undefined) {
    // Byte-level BPE vocabularies (GPT-2, Llama 3) spell the space byte as "Ġ"; SentencePiece ones use "▁".
    byteLevel = tokenizer.tokenToId("Ġ") !== undefined;
    byteLevelTokenizers.set(tokenizer, byteLevel);
  }
  if (byteLevel && [...raw].every((c) => BYTE_LEVEL.has(c))) return [...raw].map((c) => BYTE_LEVEL.get(c)!);
  return [...utf8.encode(raw.replaceAll("\u2581", " "))];
}
