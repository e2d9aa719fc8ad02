/**
 * Chat completions on the real engine (tiny-random-llama-3.1 in float32: the real Llama 3.1 template and
 * tokenizer, exact goldens) through the official openai client: logprobs against HF's logits, streaming,
 * n, usage in streams, error classes.
 */
import OpenAI from "openai";
import { assert, assertEquals } from "./assert.ts";
import { golden, postJson, TINY } from "./helpers.ts";
import { expectError, sharedServer, sseEvents } from "./api_server.ts";

const group = sharedServer(TINY, ["--dtype", "float32", "--served-model-name", "tiny"]);
const cases = (await golden(TINY)).filter((c) => c.kind === "chat");
const close = (a: number, b: number, tol: number, what: string) =>
  assert(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tolerance ${tol})`);
const clientFor = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });

group.test("chat logprobs (openai client): OpenAI format, HF's top-5 logits, raw bytes rebuild the text", async (s) => {
  const client = clientFor(s.url);
  for (const c of cases) {
    const r = await client.chat.completions.create({
      model: "tiny",
      messages: c.messages,
      temperature: 0,
      max_completion_tokens: c.output_ids.length,
      logprobs: true,
      top_logprobs: 5,
    });
    assertEquals(r.usage!.prompt_tokens, c.prompt_ids.length);
    const content = r.choices[0].logprobs!.content!;
    assertEquals(content.length, c.output_ids.length);
    const steps = c.top5_per_step as { ids: number[]; logits: number[] }[];
    const bytes: number[] = [];
    content.forEach((entry, i) => {
      const top = entry.top_logprobs;
      assertEquals(top.length, 5);
      for (let k = 1; k < 5; k++) assert(top[k - 1].logprob >= top[k].logprob, `step ${i} not sorted`);
      // Greedy: the chosen token heads the list with the same logprob.
      assertEquals(top[0].token, entry.token);
      assertEquals(top[0].bytes, entry.bytes);
      close(top[0].logprob, entry.logprob, 1e-6, `step ${i}`);
      // Logprob gaps are logit gaps: HF's five logits at this step, to float32 accuracy.
      for (let k = 1; k < 5; k++) {
        close(
          top[0].logprob - top[k].logprob,
          steps[i].logits[0] - steps[i].logits[k],
          2e-3,
          `step ${i} gap ${k}`,
        );
      }
      bytes.push(...entry.bytes!);
    });
    // The tokens' bytes, decoded as HF decodes (invalid UTF-8 → U+FFFD), are HF's golden text.
    assertEquals(new TextDecoder().decode(new Uint8Array(bytes)), c.output_text, JSON.stringify(c.messages));
    assertEquals(r.choices[0].message.content, (c.output_text as string).replaceAll("\uFFFD", ""));
  }
});

group.test("chat streamed (openai client): role first, content deltas, one finish, logprobs per chunk", async (s) => {
  const client = clientFor(s.url);
  const c = cases[0];
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (
    const chunk of await client.chat.completions.create({
      model: "tiny",
      messages: c.messages,
      temperature: 0,
      max_tokens: 10,
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    })
  ) chunks.push(chunk);
  assertEquals(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks.map((k) => k.choices[0]?.delta?.content ?? "").join("");
  assertEquals(text, (c.output_text as string).slice(0, text.length));
  const tokens = chunks.flatMap((k) => k.choices[0]?.logprobs?.content ?? []);
  assertEquals(tokens.length, 10);
  assertEquals(tokens.map((t) => t.token).join(""), text);
  const finishes = chunks.filter((k) => k.choices[0]?.finish_reason);
  assertEquals(finishes.length, 1);
  assertEquals(finishes[0].choices[0].finish_reason, "length");
  assert(chunks.slice(0, -1).every((k) => k.choices[0].finish_reason === null));
  assert(chunks.every((k) => k.usage === undefined || k.usage === null));
});

group.test("chat n + stream_options include_usage / continuous_usage_stats; max_completion_tokens", async (s) => {
  const client = clientFor(s.url);
  const c = cases[1];
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (
    const chunk of await client.chat.completions.create({
      model: "tiny",
      messages: c.messages,
      temperature: 1.0,
      seed: 3,
      n: 2,
      max_completion_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    })
  ) chunks.push(chunk);
  const last = chunks.at(-1)!;
  assertEquals(last.choices, []);
  assertEquals(last.usage!.prompt_tokens, c.prompt_ids.length);
  assertEquals(last.usage!.completion_tokens, 12);
  assertEquals(last.usage!.total_tokens, c.prompt_ids.length + 12);
  const finishes = chunks.flatMap((k) => k.choices.filter((ch) => ch.finish_reason).map((ch) => ch.index));
  assertEquals(finishes.sort(), [0, 1]);
  const texts = [0, 1].map((i) =>
    chunks.flatMap((k) => k.choices.filter((ch) => ch.index === i).map((ch) => ch.delta.content ?? "")).join(
      "",
    )
  );
  assert(texts[0] !== texts[1], "two sampled siblings gave the same text");
  // continuous_usage_stats: usage on content chunks too, growing.
  const events = await sseEvents(
    await postJson(`${s.url}/v1/chat/completions`, {
      messages: c.messages,
      temperature: 0,
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    }),
  );
  const withContent = events.filter((e) => e !== "[DONE]" && e.choices[0]?.delta?.content);
  assert(withContent.length > 0);
  const seen = withContent.map((e) => e.usage?.completion_tokens);
  assert(seen.every((x) => typeof x === "number"), JSON.stringify(seen));
  for (let i = 1; i < seen.length; i++) assert(seen[i] >= seen[i - 1]);
  // Not streamed: max_completion_tokens bounds the answer.
  const plain = await client.chat.completions.create({
    model: "tiny",
    messages: c.messages,
    temperature: 0,
    max_completion_tokens: 3,
  });
  assertEquals(plain.usage!.completion_tokens, 3);
  assertEquals(plain.choices[0].finish_reason, "length");
});

group.test("chat sampling: stop strings, logit_bias and seed reach the engine", async (s) => {
  const client = clientFor(s.url);
  const c = cases[0];
  const full = c.output_text as string; // " silver.matcher fallen.Sc urgent ..."
  const stopped = await client.chat.completions.create({
    model: "tiny",
    messages: c.messages,
    temperature: 0,
    max_tokens: 16,
    stop: ".Sc",
  });
  assertEquals(stopped.choices[0].message.content, full.slice(0, full.indexOf(".Sc")));
  assertEquals(stopped.choices[0].finish_reason, "stop");
  const biased = await client.chat.completions.create({
    model: "tiny",
    messages: c.messages,
    temperature: 0,
    max_tokens: 3,
    logit_bias: { "9906": 100 }, // "Hello"
  });
  assertEquals(biased.choices[0].message.content, "HelloHelloHello");
  const seeded = async () =>
    (await client.chat.completions.create({
      model: "tiny",
      messages: c.messages,
      temperature: 1.0,
      max_tokens: 8,
      seed: 77,
    })).choices[0].message.content;
  assertEquals(await seeded(), await seeded());
});

group.test("chat errors map to the openai client's classes (400, 404 unknown route)", async (s) => {
  const client = clientFor(s.url);
  const c = cases[0];
  const attempts: [Record<string, unknown>, string][] = [
    [{ top_p: 1.5 }, "top_p"],
    [{ presence_penalty: 3 }, "presence_penalty"],
    [{ top_logprobs: 3 }, "top_logprobs"],
    [{ n: 0 }, "n"],
    [{ max_completion_tokens: -5 }, "max_completion_tokens"],
  ];
  for (const [extra, name] of attempts) {
    try {
      await client.chat.completions.create({ model: "tiny", messages: c.messages, ...extra } as any);
      throw new Error(`${JSON.stringify(extra)} accepted`);
    } catch (e) {
      assert(e instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${e}`);
      assert(e.message.includes(name), e.message);
    }
  }
  await expectError(
    await postJson(`${s.url}/v1/chat/completions`, {
      messages: c.messages,
      stream_options: { include_usage: true },
    }),
    400,
    "stream_options",
  );
  await expectError(await postJson(`${s.url}/v1/chat/completions`, { messages: [] }), 400, "messages");
  try {
    await client.get("/no/such/route");
    throw new Error("found");
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, String(e));
  }
});
