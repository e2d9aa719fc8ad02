/**
 * Logprobs in both formats, batched /generate, tokenize/detokenize, models, metrics and context checks on
 * the real engine (stories260K), with the openai client where it has the call.
 */
import OpenAI from "openai";
import { assert, assertEquals } from "./assert.ts";
import { golden, postJson, STORIES } from "./helpers.ts";
import { expectError, postOk, sharedServer, sseEvents } from "./api_server.ts";

const group = sharedServer(STORIES, [
  "--dtype",
  "float32",
  "--served-model-name",
  "stories",
  "--enable-metrics",
]);
const cases = await golden(STORIES);
const FROM_BOS = cases.find((c) => c.prompt === "");
const ONCE = cases.find((c) => c.prompt === "Once upon a time");
const close = (a: number, b: number, tol: number, what: string) =>
  assert(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tolerance ${tol})`);
const clientFor = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });

/** Checks one top list: sorted, logprobs ≤ 0, total mass ≤ 1. */
function checkTopList(top: [number, number, unknown][], what: string) {
  for (let i = 1; i < top.length; i++) assert(top[i - 1][0] >= top[i][0], `${what} not sorted`);
  assert(top.every((t) => t[0] <= 1e-6), what);
  assert(top.reduce((s, t) => s + Math.exp(t[0]), 0) <= 1 + 1e-4, what);
}

group.test("/generate logprobs: SGLang triples, golden top-5 logits, prompt logprobs equal generated ones", async (s) => {
  const r = await postOk(`${s.url}/generate`, {
    input_ids: ONCE.prompt_ids,
    return_logprob: true,
    top_logprobs_num: 5,
    logprob_start_len: 0,
    return_text_in_logprobs: true,
    sampling_params: { temperature: 0, max_new_tokens: 6 },
  });
  const m = r.meta_info;
  assertEquals(r.output_ids, ONCE.output_ids.slice(0, 6));
  // Input: one triple per prompt token from logprob_start_len; the first token has no logprob.
  assertEquals(m.input_token_logprobs.length, ONCE.prompt_ids.length);
  assertEquals(m.input_token_logprobs[0][0], null);
  assertEquals(m.input_token_logprobs.map((t: any[]) => t[1]), ONCE.prompt_ids);
  assertEquals(m.output_token_logprobs.map((t: any[]) => t[1]), r.output_ids);
  const detok = async (id: number) =>
    (await postOk(`${s.url}/detokenize`, { tokens: [id], skip_special_tokens: false })).text;
  assertEquals(m.output_token_logprobs[0][2], await detok(r.output_ids[0]));
  // Output top lists: sorted, and the chosen (greedy) token is the head with the same logprob.
  m.output_top_logprobs.forEach((top: any[], i: number) => {
    assertEquals(top.length, 5);
    checkTopList(top, `output step ${i}`);
    assertEquals(top[0][1], r.output_ids[i]);
    close(top[0][0], m.output_token_logprobs[i][0], 1e-6, `step ${i} chosen vs top`);
  });
  // Step 0 against HF's logits at the last prompt position: same ids, same gaps (logprob gaps = logit gaps).
  const gold = ONCE.last_prompt_pos_top5 as [number, number][];
  const top0 = m.output_top_logprobs[0] as [number, number, string][];
  assertEquals(top0.map((t) => t[1]), gold.map((g) => g[0]));
  for (let i = 1; i < 5; i++) close(top0[0][0] - top0[i][0], gold[0][1] - gold[i][1], 2e-3, `gap ${i}`);
  // The prompt is BOS + the first 4 tokens greedy generates from BOS: its logprobs are those tokens' logprobs.
  const fromBos = await postOk(`${s.url}/generate`, {
    input_ids: [1],
    return_logprob: true,
    top_logprobs_num: 2,
    sampling_params: { temperature: 0, max_new_tokens: 4 },
  });
  assertEquals(fromBos.output_ids, ONCE.prompt_ids.slice(1));
  for (let i = 1; i < ONCE.prompt_ids.length; i++) {
    close(
      m.input_token_logprobs[i][0],
      fromBos.meta_info.output_token_logprobs[i - 1][0],
      1e-4,
      `prompt pos ${i}`,
    );
    assertEquals(
      m.input_top_logprobs[i].slice(0, 2).map((t: any[]) => t[1]),
      fromBos.meta_info.output_top_logprobs[i - 1].map((t: any[]) => t[1]),
    );
  }
  // BOS-only prompts: the golden logits after BOS.
  const bosGold = FROM_BOS.last_prompt_pos_top5 as [number, number][];
  const bosTop = fromBos.meta_info.output_top_logprobs[0];
  assertEquals(bosTop.map((t: any[]) => t[1]), bosGold.slice(0, 2).map((g) => g[0]));
  close(bosTop[0][0] - bosTop[1][0], bosGold[0][1] - bosGold[1][1], 2e-3, "BOS gap");
  // logprob_start_len moves the start; without return_text_in_logprobs the text slot is null.
  const later = await postOk(`${s.url}/generate`, {
    input_ids: ONCE.prompt_ids,
    return_logprob: true,
    logprob_start_len: 2,
    sampling_params: { temperature: 0, max_new_tokens: 2 },
  });
  assertEquals(later.meta_info.input_token_logprobs.map((t: any[]) => t[1]), ONCE.prompt_ids.slice(2));
  close(later.meta_info.input_token_logprobs[1][0], m.input_token_logprobs[3][0], 1e-4, "start 2");
  assertEquals(later.meta_info.output_token_logprobs[0][2], null);
  assertEquals(later.meta_info.output_top_logprobs, undefined);
  // Sampled tokens carry their own logprob, which appears in the top list when it is in the top N.
  const sampled = await postOk(`${s.url}/generate`, {
    text: ONCE.prompt,
    return_logprob: true,
    top_logprobs_num: 20,
    sampling_params: { temperature: 1.5, max_new_tokens: 12, sampling_seed: 5 },
  });
  sampled.output_ids.forEach((id: number, i: number) => {
    const entry = sampled.meta_info.output_top_logprobs[i].find((t: any[]) => t[1] === id);
    if (entry) close(entry[0], sampled.meta_info.output_token_logprobs[i][0], 1e-6, `sampled ${i}`);
    else {assert(
        sampled.meta_info.output_token_logprobs[i][0] <= sampled.meta_info.output_top_logprobs[i][19][0],
      );}
  });
});

group.test("completions logprobs (openai client): tokens rebuild the text, offsets, top maps, echo", async (s) => {
  const client = clientFor(s.url);
  const r = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: 8,
    temperature: 0,
    logprobs: 3,
  });
  const lp = r.choices[0].logprobs!;
  assertEquals(lp.tokens!.length, 8);
  assertEquals(lp.tokens!.join(""), r.choices[0].text);
  lp.text_offset!.forEach((o, i) => assertEquals(o, lp.tokens!.slice(0, i).join("").length));
  lp.top_logprobs!.forEach((top, i) => {
    const values = Object.values(top!);
    assert(values.length >= 1 && values.length <= 3, JSON.stringify(top));
    close(Math.max(...values), lp.token_logprobs![i]!, 1e-6, `token ${i}`);
    close(top![lp.tokens![i]], lp.token_logprobs![i]!, 1e-6, `token ${i} in its map`);
  });
  const gold = ONCE.last_prompt_pos_top5 as [number, number][];
  const first = Object.values(lp.top_logprobs![0]!).sort((a, b) => b - a);
  close(first[0] - first[1], gold[0][1] - gold[1][1], 2e-3, "gap");
  // echo: prompt tokens first (the first one without a logprob), then the completion's.
  const e = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: 4,
    temperature: 0,
    logprobs: 1,
    echo: true,
  });
  const elp = e.choices[0].logprobs!;
  assertEquals(
    e.choices[0].text,
    ONCE.prompt + r.choices[0].text.slice(0, e.choices[0].text.length - ONCE.prompt.length),
  );
  assertEquals(elp.tokens!.length, ONCE.prompt_ids.length + 4);
  assertEquals(elp.token_logprobs![0], null);
  assert(elp.token_logprobs!.slice(1).every((x) => typeof x === "number" && x <= 0));
  assertEquals(elp.tokens!.join(""), e.choices[0].text);
  // Streamed: per-chunk logprobs add up to the same tokens.
  const streamed: string[] = [];
  for await (
    const c of await client.completions.create({
      model: "stories",
      prompt: ONCE.prompt,
      max_tokens: 8,
      temperature: 0,
      logprobs: 2,
      stream: true,
    })
  ) {
    if (c.choices[0]?.logprobs?.tokens) streamed.push(...c.choices[0].logprobs.tokens);
  }
  assertEquals(streamed, lp.tokens);
  await expectError(
    await postJson(`${s.url}/v1/completions`, { prompt: "a", logprobs: 21 }),
    400,
    "logprobs",
  );
});

group.test("/generate with lists of texts or input_ids returns a list; rid; streamed list items carry index", async (s) => {
  const texts = [ONCE.prompt, "The cat"];
  const sp = { temperature: 0, max_new_tokens: 5 };
  const byText = await postOk(`${s.url}/generate`, { text: texts, sampling_params: sp, rid: ["a-1", "a-2"] });
  assert(Array.isArray(byText) && byText.length === 2);
  assertEquals(byText.map((o: any) => o.meta_info.id), ["a-1", "a-2"]);
  assertEquals(byText[0].output_ids, ONCE.output_ids.slice(0, 5));
  const ids = await Promise.all(
    texts.map(async (t) => (await postOk(`${s.url}/tokenize`, { prompt: t })).tokens),
  );
  const byIds = await postOk(`${s.url}/generate`, { input_ids: ids, sampling_params: sp });
  assertEquals(byIds.map((o: any) => o.text), byText.map((o: any) => o.text));
  const single = await postOk(`${s.url}/generate`, { text: ONCE.prompt, sampling_params: sp, rid: "my-rid" });
  assert(!Array.isArray(single));
  assertEquals(single.meta_info.id, "my-rid");
  const events = await sseEvents(
    await postJson(`${s.url}/generate`, { text: texts, sampling_params: sp, stream: true }),
  );
  assertEquals(events.at(-1), "[DONE]");
  const finals = events.slice(0, -1).filter((e) => e.meta_info.finish_reason !== null);
  assertEquals(finals.map((e) => e.index).sort(), [0, 1]);
  for (const f of finals) assertEquals(f.text, byText[f.index].text);
  await expectError(await postJson(`${s.url}/generate`, { text: texts, rid: ["only-one"] }), 400, "rid");
});

group.test("/tokenize and /detokenize (also under /v1/) round-trip", async (s) => {
  for (const prefix of ["", "/v1"]) {
    const t = await postOk(`${s.url}${prefix}/tokenize`, { prompt: ONCE.prompt });
    assertEquals(t.tokens, ONCE.prompt_ids);
    assertEquals(t.count, ONCE.prompt_ids.length);
    assertEquals(t.max_model_len, 512);
    const bare = await postOk(`${s.url}${prefix}/tokenize`, {
      prompt: ONCE.prompt,
      add_special_tokens: false,
    });
    assertEquals(bare.tokens, ONCE.prompt_ids.slice(1));
    const d = await postOk(`${s.url}${prefix}/detokenize`, { tokens: ONCE.output_ids.slice(0, 10) });
    assertEquals(d.text, (ONCE.output_text as string).slice(0, d.text.length));
    assert(d.text.length > 10);
  }
  await expectError(await postJson(`${s.url}/detokenize`, { tokens: [100000] }), 400, "tokens");
});

group.test("/v1/models and /v1/models/{id}: 404 model_not_found for another id (openai client)", async (s) => {
  const client = clientFor(s.url);
  const list = await client.models.list();
  assertEquals(list.data.map((m) => m.id), ["stories"]);
  const one = await client.models.retrieve("stories");
  assertEquals([one.id, one.object, (one as any).max_model_len], ["stories", "model", 512]);
  try {
    await client.models.retrieve("gpt-4");
    throw new Error("another model id was found");
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, String(e));
    assertEquals(e.status, 404);
    assertEquals(e.code, "model_not_found");
  }
});

group.test("context length: a longer prompt is 400 with SGLang's message, on every endpoint", async (s) => {
  const ids = Array(600).fill(403);
  const message = "The input (600 tokens) is longer than the model's context length (512 tokens).";
  const body = await expectError(await postJson(`${s.url}/generate`, { input_ids: ids }), 400, message);
  assertEquals(body.message, message);
  await expectError(await postJson(`${s.url}/v1/completions`, { prompt: ids, max_tokens: 1 }), 400, message);
  try {
    await clientFor(s.url).completions.create({ model: "stories", prompt: ids, max_tokens: 1 });
    throw new Error("accepted");
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, String(e));
    assert(e.message.includes(message), e.message);
  }
  // A prompt that fits is capped at the context: the output stops at the last position.
  const fits = await postOk(`${s.url}/generate`, {
    input_ids: ids.slice(0, 508),
    sampling_params: { max_new_tokens: 50, temperature: 0, ignore_eos: true },
  });
  assert(fits.meta_info.completion_tokens <= 4, JSON.stringify(fits.meta_info));
  assertEquals(fits.meta_info.finish_reason.type, "length");
});

group.test("/metrics: SGLang names with model_name, counters follow the traffic", async (s) => {
  const scrape = async () => {
    const res = await fetch(`${s.url}/metrics`);
    assertEquals(res.status, 200);
    assert((res.headers.get("content-type") ?? "").startsWith("text/plain"));
    return await res.text();
  };
  const value = (text: string, name: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}{model_name="stories"`));
    assert(line, `${name} missing`);
    return Number(line.split(" ").at(-1));
  };
  const before = await scrape();
  const r = await postOk(`${s.url}/generate`, {
    text: "Tim and Sue",
    sampling_params: { temperature: 0, max_new_tokens: 9, ignore_eos: true },
  });
  const after = await scrape();
  for (
    const name of [
      "sglang:num_running_reqs",
      "sglang:num_queue_reqs",
      "sglang:token_usage",
      "sglang:cache_hit_rate",
    ]
  ) {
    assert(Number.isFinite(value(after, name)), name);
  }
  assertEquals(
    value(after, "sglang:prompt_tokens_total") - value(before, "sglang:prompt_tokens_total"),
    r.meta_info.prompt_tokens,
  );
  assertEquals(
    value(after, "sglang:generation_tokens_total") - value(before, "sglang:generation_tokens_total"),
    9,
  );
  for (
    const h of [
      "sglang:time_to_first_token_seconds",
      "sglang:inter_token_latency_seconds",
      "sglang:e2e_request_latency_seconds",
    ]
  ) {
    assert(after.includes(`# TYPE ${h} histogram`), h);
    assert(value(after, `${h}_count`) > value(before, `${h}_count`), h);
    assert(after.includes(`${h}_bucket{model_name="stories",le="+Inf"}`), h);
  }
  assertEquals(value(after, "sglang:num_running_reqs"), 0);
});
