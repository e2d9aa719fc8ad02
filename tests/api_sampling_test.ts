/**
 * Sampling parameters on the real engine (stories260K: real text, a real EOS), through the official openai
 * client on /v1/completions and raw HTTP on /generate. Every test is built so that ignoring the parameter
 * under test would make it fail.
 */
import OpenAI from "openai";
import { assert, assertEquals } from "./assert.ts";
import { golden, postJson, STORIES } from "./helpers.ts";
import { expectError, postOk, sharedServer, sseEvents } from "./api_server.ts";

const group = sharedServer(STORIES, ["--dtype", "float32", "--served-model-name", "stories"]);
const cases = await golden(STORIES);
/** "Once upon a time" → ", there was a little girl named Lily. She loved to play outside in the park..." */
const ONCE = cases.find((c) => c.prompt === "Once upon a time");
/** A prompt whose greedy continuation repeats itself ("They wanted to play with the box." again and again). */
const REPETITIVE = cases.find((c) => c.prompt === "Lily and Tom went to the park.");
const EOS = 2;

const clientFor = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });

async function gen(url: string, body: Record<string, unknown>): Promise<any> {
  return await postOk(`${url}/generate`, body);
}

const greedyIds = async (url: string, prompt: string, max: number) =>
  (await gen(url, { text: prompt, sampling_params: { temperature: 0, max_new_tokens: max } })).output_ids;

/** The largest number of times one token occurs. */
const maxRepeat = (ids: number[]) =>
  Math.max(...[...new Set(ids)].map((t) => ids.filter((x) => x === t).length));

group.test("completions (openai client): greedy equals the golden text; usage and finish_reason", async (s) => {
  const client = clientFor(s.url);
  const r = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: ONCE.max_new_tokens,
    temperature: 0,
  });
  assertEquals(r.object, "text_completion");
  assertEquals(r.choices[0].text, ONCE.output_text);
  assertEquals(r.choices[0].finish_reason, "length");
  assertEquals(r.usage, {
    prompt_tokens: ONCE.prompt_ids.length,
    completion_tokens: ONCE.max_new_tokens,
    total_tokens: ONCE.prompt_ids.length + ONCE.max_new_tokens,
    prompt_tokens_details: null,
  } as any);
  // max_new_tokens on /generate is the same bound.
  const g = await gen(s.url, { text: ONCE.prompt, sampling_params: { temperature: 0, max_new_tokens: 7 } });
  assertEquals(g.output_ids, ONCE.output_ids.slice(0, 7));
  assertEquals(g.meta_info.finish_reason, { type: "length", length: 7 });
});

group.test("completions prompt forms: string, strings, token ids, lists of token ids; echo", async (s) => {
  const client = clientFor(s.url);
  const base = { model: "stories", max_tokens: 8, temperature: 0 };
  const one = await client.completions.create({ ...base, prompt: ONCE.prompt });
  const expected = one.choices[0].text;
  const ids = await client.completions.create({ ...base, prompt: ONCE.prompt_ids });
  assertEquals(ids.choices.map((c) => c.text), [expected]);
  const cat = cases.find((c) => c.prompt === "The cat");
  const many = await client.completions.create({ ...base, prompt: [ONCE.prompt, cat.prompt] });
  assertEquals(many.choices.map((c) => c.index), [0, 1]);
  assertEquals(many.choices[0].text, expected);
  const catText = (await postOk(`${s.url}/detokenize`, { tokens: cat.output_ids.slice(0, 8) })).text;
  assertEquals(many.choices[1].text, catText);
  const manyIds = await client.completions.create({ ...base, prompt: [ONCE.prompt_ids, cat.prompt_ids] });
  assertEquals(manyIds.choices.map((c) => c.text), many.choices.map((c) => c.text));
  assertEquals(many.usage!.prompt_tokens, ONCE.prompt_ids.length + cat.prompt_ids.length);
  const echoed = await client.completions.create({ ...base, prompt: ONCE.prompt, echo: true });
  assertEquals(echoed.choices[0].text, ONCE.prompt + expected);
  await expectError(await postJson(`${s.url}/v1/completions`, { prompt: [], max_tokens: 2 }), 400, "prompt");
});

group.test("logit_bias forces a token (both APIs); bad keys are 400", async (s) => {
  const client = clientFor(s.url);
  const target = 300;
  assert(!ONCE.output_ids.slice(0, 6).includes(target));
  const r = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: 6,
    temperature: 0,
    logit_bias: { [target]: 100 },
  });
  const forced = await postOk(`${s.url}/detokenize`, { tokens: Array(6).fill(target) });
  assertEquals(r.choices[0].text, forced.text);
  assertEquals(r.usage!.completion_tokens, 6);
  const g = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { temperature: 0.8, max_new_tokens: 6, logit_bias: { [target]: 100 } },
  });
  assertEquals(g.output_ids, Array(6).fill(target));
  // A strong negative bias removes the greedy choice.
  const ban = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { temperature: 0, max_new_tokens: 1, logit_bias: { [ONCE.output_ids[0]]: -100 } },
  });
  assert(ban.output_ids[0] !== ONCE.output_ids[0]);
  await expectError(
    await postJson(`${s.url}/generate`, { text: "a", sampling_params: { logit_bias: { "99999": 1 } } }),
    400,
    "logit_bias",
  );
  await expectError(
    await postJson(`${s.url}/v1/completions`, { prompt: "a", logit_bias: { abc: 1 } }),
    400,
    "logit_bias",
  );
});

group.test("stop strings: cut the text, multi-token, no_stop_trim, never leaked into a stream", async (s) => {
  const client = clientFor(s.url);
  const full = ONCE.output_text as string; // ", there was a little girl named Lily. She loved..."
  const base = { model: "stories", prompt: ONCE.prompt, max_tokens: 40, temperature: 0 };
  const cut = await client.completions.create({ ...base, stop: ["girl named"] });
  assertEquals(cut.choices[0].text, full.slice(0, full.indexOf("girl named")));
  assertEquals(cut.choices[0].finish_reason, "stop");
  assertEquals((cut.choices[0] as any).matched_stop, "girl named");
  // The earliest match wins whatever the order in the list.
  const two = await client.completions.create({ ...base, stop: ["park", "little"] });
  assertEquals(two.choices[0].text, full.slice(0, full.indexOf("little")));
  const kept = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { temperature: 0, max_new_tokens: 40, stop: "girl named", no_stop_trim: true },
  });
  assertEquals(kept.text, full.slice(0, full.indexOf("girl named") + "girl named".length));
  assertEquals(kept.meta_info.finish_reason, { type: "stop", matched: "girl named" });
  // Streamed: no chunk may carry any part of the stop string, even a prefix that later matched.
  const chunks: string[] = [];
  let finish: string | null = null;
  for await (const c of await client.completions.create({ ...base, stop: "girl named Lily", stream: true })) {
    if (c.choices[0]?.text) chunks.push(c.choices[0].text);
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assertEquals(chunks.join(""), full.slice(0, full.indexOf("girl named Lily")));
  assert(chunks.every((c) => !c.includes("gir")), JSON.stringify(chunks));
  assertEquals(finish, "stop");
  const events = await sseEvents(
    await postJson(`${s.url}/generate`, {
      text: ONCE.prompt,
      stream: true,
      sampling_params: { temperature: 0, max_new_tokens: 40, stop: ["girl named Lily"] },
    }),
  );
  for (const e of events.slice(0, -1)) assert(!e.text.includes("g"), e.text);
});

group.test("stop_token_ids end at that token (trimmed from the text unless no_stop_trim)", async (s) => {
  const ids = ONCE.output_ids as number[];
  const at = ids.findIndex((t, i) => i >= 3 && ids.indexOf(t) === i);
  const stopId = ids[at];
  const r = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { temperature: 0, max_new_tokens: 40, stop_token_ids: [stopId] },
  });
  assertEquals(r.output_ids, ids.slice(0, at + 1));
  assertEquals(r.meta_info.finish_reason, { type: "stop", matched: stopId });
  const detok = await postOk(`${s.url}/detokenize`, { tokens: ids.slice(0, at) });
  assertEquals(r.text, detok.text);
  const kept = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { temperature: 0, max_new_tokens: 40, stop_token_ids: [stopId], no_stop_trim: true },
  });
  assertEquals(kept.text, (await postOk(`${s.url}/detokenize`, { tokens: ids.slice(0, at + 1) })).text);
  assert(kept.text.length > r.text.length);
  const client = clientFor(s.url);
  const c = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: 40,
    temperature: 0,
    stop_token_ids: [stopId],
  } as any);
  assertEquals(c.choices[0].finish_reason, "stop");
  assertEquals((c.choices[0] as any).matched_stop, stopId);
  assertEquals(c.usage!.completion_tokens, at + 1);
});

group.test("EOS, min_tokens / min_new_tokens, ignore_eos, skip_special_tokens", async (s) => {
  const eosFirst = { temperature: 0, max_new_tokens: 10, logit_bias: { [EOS]: 50 } };
  const plain = await gen(s.url, { text: ONCE.prompt, sampling_params: eosFirst });
  assertEquals(plain.output_ids, [EOS]);
  assertEquals(plain.meta_info.finish_reason, { type: "stop", matched: EOS });
  assertEquals(plain.text, "");
  const held = await gen(s.url, { text: ONCE.prompt, sampling_params: { ...eosFirst, min_new_tokens: 4 } });
  assertEquals(held.output_ids.length, 5);
  assert(!held.output_ids.slice(0, 4).includes(EOS));
  assertEquals(held.output_ids[4], EOS);
  const client = clientFor(s.url);
  const c = await client.completions.create({
    model: "stories",
    prompt: ONCE.prompt,
    max_tokens: 10,
    temperature: 0,
    logit_bias: { [EOS]: 50 },
    min_tokens: 3,
  } as any);
  assertEquals(c.usage!.completion_tokens, 4);
  assertEquals(c.choices[0].finish_reason, "stop");
  const ignored = await gen(s.url, { text: ONCE.prompt, sampling_params: { ...eosFirst, ignore_eos: true } });
  assertEquals(ignored.output_ids, Array(10).fill(EOS));
  assertEquals(ignored.meta_info.finish_reason, { type: "length", length: 10 });
  assertEquals(ignored.text, "");
  const shown = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: { ...eosFirst, max_new_tokens: 3, ignore_eos: true, skip_special_tokens: false },
  });
  assertEquals(shown.text.split("</s>").length - 1, 3, shown.text);
  // SGLang passes spaces_between_special_tokens to the tokenizer; accepted and type-checked here.
  const spaced = await gen(s.url, {
    text: ONCE.prompt,
    sampling_params: {
      ...eosFirst,
      max_new_tokens: 2,
      ignore_eos: true,
      skip_special_tokens: false,
      spaces_between_special_tokens: false,
    },
  });
  assert(spaced.text.includes("</s>"));
  await expectError(
    await postJson(`${s.url}/generate`, { text: "a", sampling_params: { spaces_between_special_tokens: 1 } }),
    400,
    "spaces_between_special_tokens",
  );
});

group.test("penalties change a repetitive greedy output (frequency, presence, repetition)", async (s) => {
  const n = 40;
  const greedy = await greedyIds(s.url, REPETITIVE.prompt, n);
  assertEquals(greedy, REPETITIVE.output_ids.slice(0, n));
  const withParam = async (extra: Record<string, number>) =>
    (await gen(s.url, {
      text: REPETITIVE.prompt,
      sampling_params: { temperature: 0, max_new_tokens: n, ...extra },
    })).output_ids as number[];
  const penalties: Record<string, number>[] = [
    { frequency_penalty: 1.5 },
    { presence_penalty: 1.5 },
    { repetition_penalty: 1.8 },
  ];
  for (const extra of penalties) {
    const ids = await withParam(extra);
    assert(JSON.stringify(ids) !== JSON.stringify(greedy), JSON.stringify(extra));
    assert(
      maxRepeat(ids) < maxRepeat(greedy),
      `${JSON.stringify(extra)}: ${maxRepeat(ids)} vs ${maxRepeat(greedy)}`,
    );
  }
  // A negative frequency penalty rewards repeats: the most repeated token occurs more often.
  const rewarded = await withParam({ frequency_penalty: -1.5 });
  assert(maxRepeat(rewarded) > maxRepeat(greedy), `${maxRepeat(rewarded)} vs ${maxRepeat(greedy)}`);
  // Through the openai client too.
  const client = clientFor(s.url);
  const c = await client.completions.create({
    model: "stories",
    prompt: REPETITIVE.prompt,
    max_tokens: n,
    temperature: 0,
    presence_penalty: 1.5,
  });
  const plain = await client.completions.create({
    model: "stories",
    prompt: REPETITIVE.prompt,
    max_tokens: n,
    temperature: 0,
  });
  assert(c.choices[0].text !== plain.choices[0].text);
});

group.test("top_k=1, tiny top_p and min_p=1 each equal greedy at a high temperature", async (s) => {
  const n = 32;
  const greedy = await greedyIds(s.url, ONCE.prompt, n);
  const sampled = async (extra: Record<string, number>) =>
    (await gen(s.url, {
      text: ONCE.prompt,
      sampling_params: { temperature: 2.0, max_new_tokens: n, sampling_seed: 7, ...extra },
    })).output_ids;
  // Without the filter, this temperature and seed leave the greedy path, so each check below can fail.
  assert(JSON.stringify(await sampled({})) !== JSON.stringify(greedy));
  assertEquals(await sampled({ top_k: 1 }), greedy);
  assertEquals(await sampled({ top_p: 1e-6 }), greedy);
  assertEquals(await sampled({ min_p: 1 }), greedy);
  // temperature 0 (and below SGLang's 1e-6) is greedy whatever the seed.
  assertEquals(await sampled({ temperature: 1e-7, sampling_seed: 99 }), greedy);
  // top_k=3 keeps every token within the 3 most likely of its step: check against the logprob top lists.
  const r = await gen(s.url, {
    text: ONCE.prompt,
    return_logprob: true,
    top_logprobs_num: 3,
    sampling_params: { temperature: 5.0, max_new_tokens: n, top_k: 3, sampling_seed: 3 },
  });
  const tops = r.meta_info.output_top_logprobs as [number, number, null][][];
  r.output_ids.forEach((id: number, i: number) => assert(tops[i].some((t) => t[1] === id), `step ${i}`));
  const unfiltered = await gen(s.url, {
    text: ONCE.prompt,
    return_logprob: true,
    top_logprobs_num: 3,
    sampling_params: { temperature: 5.0, max_new_tokens: n, sampling_seed: 3 },
  });
  const outside = unfiltered.output_ids.filter((id: number, i: number) =>
    !unfiltered.meta_info.output_top_logprobs[i].some((t: number[]) => t[1] === id)
  );
  assert(outside.length > 0, "temperature 5 should leave the top 3 somewhere in 32 steps");
});

group.test("seed: same seed and prompt give the same output whatever else is in the batch", async (s) => {
  const body = (seed: number) => ({
    text: ONCE.prompt,
    sampling_params: { temperature: 1.2, max_new_tokens: 24, sampling_seed: seed },
  });
  const alone = await gen(s.url, body(1234));
  // The same request again, now alongside other requests with other prompts and parameters.
  const noise = [
    gen(s.url, { text: "The cat", sampling_params: { temperature: 1.0, max_new_tokens: 30 } }),
    gen(s.url, { text: "Lily", sampling_params: { temperature: 0.7, max_new_tokens: 20, top_k: 5 } }),
  ];
  const [crowded] = await Promise.all([gen(s.url, body(1234)), ...noise]);
  assertEquals(crowded.output_ids, alone.output_ids);
  const others = await Promise.all([5, 6, 7].map((seed) => gen(s.url, body(seed))));
  assert(others.some((o) => JSON.stringify(o.output_ids) !== JSON.stringify(alone.output_ids)));
  // OpenAI's `seed` is the same parameter.
  const client = clientFor(s.url);
  const args = { model: "stories", prompt: ONCE.prompt, max_tokens: 24, temperature: 1.2, seed: 1234 };
  const a = await client.completions.create(args);
  assertEquals(a.choices[0].text, alone.text);
});

group.test("n: siblings differ when sampled, share the prompt in usage and its cache", async (s) => {
  const client = clientFor(s.url);
  const prompt = "Tom had a red ball and a blue kite. One day";
  const r = await client.completions.create({
    model: "stories",
    prompt,
    max_tokens: 16,
    temperature: 1.0,
    n: 3,
    seed: 11,
  });
  assertEquals(r.choices.map((c) => c.index), [0, 1, 2]);
  assert(new Set(r.choices.map((c) => c.text)).size > 1, JSON.stringify(r.choices));
  const promptLen = (await postOk(`${s.url}/tokenize`, { prompt })).count;
  assertEquals(r.usage!.prompt_tokens, promptLen);
  assertEquals(r.usage!.completion_tokens, 48);
  // Seeded n is reproducible as a whole.
  const again = await client.completions.create({
    model: "stories",
    prompt,
    max_tokens: 16,
    temperature: 1.0,
    n: 3,
    seed: 11,
  });
  assertEquals(again.choices.map((c) => c.text), r.choices.map((c) => c.text));
  // Native n: a list, and at most one sibling pays for the prompt's prefill.
  const fresh = "A little bird sat on a big tree and sang a song";
  const list = await gen(s.url, {
    text: fresh,
    sampling_params: { n: 3, temperature: 1.0, max_new_tokens: 4 },
  });
  assertEquals(list.length, 3);
  const cached = list.map((o: any) => o.meta_info.cached_tokens);
  assert(
    cached.filter((c: number) => c >= list[0].meta_info.prompt_tokens - 1).length >= 2,
    JSON.stringify(cached),
  );
});

group.test("validation: out-of-range sampling values are 400 naming the parameter", async (s) => {
  const client = clientFor(s.url);
  const bad: [string, unknown][] = [
    ["top_p", 0],
    ["top_p", 1.5],
    ["temperature", -0.5],
    ["frequency_penalty", 2.5],
    ["presence_penalty", -2.1],
    ["min_p", 1.5],
  ];
  for (const [key, value] of bad) {
    try {
      await client.completions.create({ model: "stories", prompt: "a", max_tokens: 2, [key]: value } as any);
      throw new Error(`${key}=${value} was accepted`);
    } catch (e) {
      assert(e instanceof OpenAI.BadRequestError, `${key}: ${e}`);
      assertEquals(e.status, 400);
      assert(e.message.includes(key), e.message);
    }
  }
  const nativeBad: [string, unknown][] = [
    ["repetition_penalty", 0],
    ["repetition_penalty", 2.5],
    ["top_k", 0],
    ["top_k", -2],
    ["max_new_tokens", -1],
    ["min_new_tokens", -1],
    ["n", 0],
    ["temperature", "hot"],
    ["stop", 5],
    ["stop_token_ids", [-1]],
    ["ignore_eos", "yes"],
  ];
  for (const [key, value] of nativeBad) {
    const body = await expectError(
      await postJson(`${s.url}/generate`, { text: "a", sampling_params: { [key]: value } }),
      400,
      key,
    );
    assertEquals(body.type, "BadRequestError");
  }
  // Boundary values are valid.
  for (
    const sp of [
      { top_p: 1 },
      { repetition_penalty: 2 },
      { frequency_penalty: -2 },
      { presence_penalty: 2 },
      { min_p: 0 },
    ]
  ) {
    const r = await postJson(`${s.url}/generate`, {
      text: "a",
      sampling_params: { ...sp, max_new_tokens: 1 },
    });
    assertEquals(r.status, 200, JSON.stringify(sp));
    await r.body?.cancel();
  }
  // max_completion_tokens is not a completions field; max_tokens is, and it is named in its error.
  await expectError(
    await postJson(`${s.url}/v1/completions`, { prompt: "a", max_tokens: -1 }),
    400,
    "max_tokens",
  );
});
