import { assertEquals } from "./assert.ts";
import { GenerateStreamWriter } from "../server/native/stream_writer.ts";
import type { GenerationUpdate } from "../server/generation.ts";

function update(
  text: string,
  outputIds: number[],
  finish: GenerationUpdate["finish"] = null,
): GenerationUpdate {
  return {
    delta: "",
    text,
    outputIds,
    newTokens: 1,
    finish,
    promptTokens: 5,
    completionTokens: outputIds.length,
    cachedTokens: 2,
    outputLogprobs: [],
    outputTopLogprobs: [],
    inputLogprobs: [],
    inputTopLogprobs: [],
    e2eLatency: 0.25,
  };
}

Deno.test("/generate stream writer: every event is byte for byte the JSON of the cumulative state", () => {
  const steps: [string, number[], GenerationUpdate["finish"]][] = [
    ["", [7], null],
    ["Once", [7, 300], null],
    ['Once "upon"\n\ta', [7, 300, 12, 13], null],
    // A surrogate pair arriving in two halves, then text after it; a step that adds no text.
    ['Once "upon"\n\ta \ud83d', [7, 300, 12, 13, 500], null],
    ['Once "upon"\n\ta \ud83d\ude42 \\ é', [7, 300, 12, 13, 500, 501], null],
    ['Once "upon"\n\ta \ud83d\ude42 \\ é', [7, 300, 12, 13, 500, 501, 2], { type: "stop", matched: 2 }],
  ];
  const writer = new GenerateStreamWriter("rid-1");
  const decoder = new TextDecoder();
  for (const [text, ids, finish] of steps) {
    const u = update(text, [...ids], finish);
    const want = {
      text,
      output_ids: ids,
      meta_info: {
        id: "rid-1",
        finish_reason: finish,
        prompt_tokens: 5,
        completion_tokens: ids.length,
        cached_tokens: 2,
        e2e_latency: finish ? 0.25 : null,
      },
    };
    assertEquals(decoder.decode(writer.event(u)), `data: ${JSON.stringify(want)}\n\n`);
  }
});
