/**
 * --tp-size over HTTP: the model split over CPU ranks serves the same greedy outputs as the golden
 * files (HF transformers), logs each rank's share with SGLang's TP tag, reports tp_size, and a size
 * that does not split the heads stops the start with one clear line.
 */
import { assert, assertEquals } from "./assert.ts";
import { golden, postJson, STORIES, TINY } from "./helpers.ts";
import { HAVE_ENGINE, runServerToExit, startRealServer } from "./real_server.ts";

Deno.test({
  name: "tp 2 on tiny-random-llama-3.1: golden greedy ids (concurrent), TP0/TP1 log lines, server info",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  fn: async () => {
    const server = await startRealServer(TINY, ["--dtype", "float32", "--tp-size", "2", "--threads", "2"]);
    try {
      const cases = await golden(TINY);
      const outs = await Promise.all(cases.map(async (c) =>
        (await postJson(`${server.url}/generate`, {
          input_ids: c.prompt_ids,
          sampling_params: { temperature: 0, max_new_tokens: c.output_ids.length, ignore_eos: true },
        })).json()
      ));
      for (const [i, c] of cases.entries()) assertEquals(outs[i].output_ids, c.output_ids, `case ${i}`);
      const info = await (await fetch(`${server.url}/get_server_info`)).json();
      assertEquals([info.tp_size, info.engine.tp_size], [2, 2]);
    } finally {
      const log = await server.stop();
      for (const rank of [0, 1]) {
        assert(new RegExp(`TP${rank}\\] Load weight end\\..*heads ${rank * 2}\\.\\.${rank * 2 + 2} of 4, KV heads ${rank}\\.\\.${rank + 1} of 2`).test(log), log);
        assert(new RegExp(`TP${rank}\\] KV Cache is allocated\\. #tokens: \\d+`).test(log), log);
      }
    }
  },
});

Deno.test({
  name: "tp 4 on stories260K: greedy 200 tokens from BOS equal the golden text; KV heads one per rank",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  fn: async () => {
    const server = await startRealServer(STORIES, ["--dtype", "float32", "--tp-size", "4"]);
    try {
      const first = (await golden(STORIES))[0];
      const r = await (await postJson(`${server.url}/generate`, {
        input_ids: first.prompt_ids,
        sampling_params: { temperature: 0, max_new_tokens: first.max_new_tokens },
      })).json();
      assertEquals(r.output_ids, first.output_ids);
      assertEquals(r.text, first.output_text);
    } finally {
      const log = await server.stop();
      assert(/TP3\] Load weight end\..*KV heads 3\.\.4 of 4/.test(log), log);
    }
  },
});

Deno.test({
  name: "a tp size that does not divide the attention heads exits 1 with one clear line",
  ignore: !HAVE_ENGINE,
  fn: async () => {
    const { code, output } = await runServerToExit(["--model-path", TINY, "--tp-size", "3"]);
    assertEquals(code, 1, output);
    assert(output.includes("--tp-size 3 does not divide the number of attention heads (4)"), output);
  },
});
