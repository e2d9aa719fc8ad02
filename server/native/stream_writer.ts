import type { GenerationUpdate } from "../generation.ts";

const encoder = new TextEncoder();
const HEAD = encoder.encode('data: {"text":"');
const MIDDLE = encoder.encode('","output_ids":[');

/** A byte buffer that only grows at its end; text is encoded straight into it. */
class GrowingBytes {
  bytes = new Uint8Array(256);
  length = 0;

  appendText(text: string): void {
    // UTF-16 units encode to at most 3 bytes each.
    const need = this.length + text.length * 3;
    if (need > this.bytes.length) {
      const bigger = new Uint8Array(Math.max(need, this.bytes.length * 2));
      bigger.set(this.bytes.subarray(0, this.length));
      this.bytes = bigger;
    }
    this.length += encoder.encodeInto(text, this.bytes.subarray(this.length)).written;
  }

  reset(): void {
    this.length = 0;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/**
 * The SSE events of one /generate stream (no logprobs), as bytes: `data: {"text", "output_ids", "meta_info"}`.
 * SGLang's format repeats the whole text and output_ids in every event, so building and encoding each
 * event from scratch costs O(output) per token. Here the escaped text and the ids list are kept encoded and
 * extended by what each update added; an event is those bytes copied around its small meta_info.
 */
export class GenerateStreamWriter {
  private readonly text = new GrowingBytes();
  private textLength = 0;
  private readonly ids = new GrowingBytes();
  private idsWritten = 0;
  private readonly rid: string;

  constructor(rid: string) {
    this.rid = JSON.stringify(rid);
  }

  event(u: GenerationUpdate): Uint8Array {
    this.extendText(u.text);
    let newIds = "";
    for (; this.idsWritten < u.outputIds.length; this.idsWritten++) {
      newIds += this.idsWritten === 0
        ? `${u.outputIds[this.idsWritten]}`
        : `,${u.outputIds[this.idsWritten]}`;
    }
    this.ids.appendText(newIds);
    const finish = u.finish ? JSON.stringify(u.finish) : "null";
    const e2e = u.finish ? JSON.stringify(u.e2eLatency) : "null";
    const tail = encoder.encode(
      `],"meta_info":{"id":${this.rid},"finish_reason":${finish},"prompt_tokens":${u.promptTokens},` +
        `"completion_tokens":${u.completionTokens},"cached_tokens":${u.cachedTokens},"e2e_latency":${e2e}}}\n\n`,
    );
    const out = new Uint8Array(
      HEAD.length + this.text.length + MIDDLE.length + this.ids.length + tail.length,
    );
    let at = 0;
    for (
      const part of [
        HEAD,
        this.text.bytes.subarray(0, this.text.length),
        MIDDLE,
        this.ids.bytes.subarray(0, this.ids.length),
        tail,
      ]
    ) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  /** Escapes only the text added since the last event (the text only ever grows at its end). */
  private extendText(text: string): void {
    const splitsPair = this.textLength > 0 && this.textLength < text.length &&
      isHighSurrogate(text.charCodeAt(this.textLength - 1));
    if (text.length < this.textLength || splitsPair) {
      // Escaping halves of a surrogate pair apart would differ from escaping the pair: start over.
      this.text.reset();
      this.textLength = 0;
    }
    if (text.length === this.textLength) return;
    this.text.appendText(JSON.stringify(text.slice(this.textLength)).slice(1, -1));
    this.textLength = text.length;
  }
}
