import OpenAI from "openai";
import { assert, assertEquals } from "./assert.ts";
import { FakeEngine } from "./fake_engine.ts";
import { loadTokenizer, postJson, readSse, startTestServer, TINY } from "./helpers.ts";

const tok = await loadTokenizer(TINY);
const ANSWER = " Paris is the capital. It is 🙂 big.";
const SCRIPT = [...tok.encode(ANSWER, false), 128009];

async function withServer(
  fn: (s: Awaited<ReturnType<typeof startTestServer>>, e: FakeEngine) => Promise<void>,
  extra: string[] = [],
  info = {},
) {
  const engine = new FakeEngine(SCRIPT, info);
  const s = await startTestServer(engine, TINY, extra);
  try {
    await fn(s, engine);
  } finally {
    await s.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("/generate: plain and streamed (cumulative text, finish_reason null until the end, [DONE])", () =>
  withServer(async ({ url }, engine) => {
    const body = {
      text: "The capital of France is",
      sampling_params: { temperature: 0, max_new_tokens: 32 },
    };
    const r = await (await postJson(`${url}/generate`, body)).json();
    assertEquals(r.text, ANSWER);
    assertEquals(r.output_ids, SCRIPT);
    assertEquals(r.meta_info.finish_reason, { type: "stop", matched: 128009 });
    assertEquals(r.meta_info.prompt_tokens, 6);
    assertEquals(r.meta_info.completion_tokens, SCRIPT.length);
    assertEquals(r.meta_info.id.length, 32);
    assertEquals(engine.submitted[0].input_ids, [128000, 791, 6864, 315, 9822, 374]);
    assertEquals([engine.submitted[0].sampling.temperature, engine.submitted[0].sampling.top_k], [0, 1]);

    const events = await readSse(await postJson(`${url}/generate`, { ...body, stream: true }));
    assertEquals(events.at(-1), "[DONE]");
    const objs = events.slice(0, -1) as any[];
    let printed = "";
    for (const [i, e] of objs.entries()) {
      assert(e.text.startsWith(printed.slice(0, 0)));
      printed += e.text.slice(printed.length);
      assert(!e.text.includes("\uFFFD"));
      assertEquals(e.meta_info.finish_reason === null, i < objs.length - 1);
    }
    assertEquals(printed, ANSWER);
    assertEquals(objs.at(-1).meta_info.cached_tokens > 0, true);
    // The stream's last event is the plain answer's object: same fields in the same order, same values
    // (apart from the request's own id, latency and cache hits).
    const last = objs.at(-1);
    assertEquals(Object.keys(last), Object.keys(r));
    assertEquals(Object.keys(last.meta_info), Object.keys(r.meta_info));
    assertEquals([last.text, last.output_ids], [r.text, r.output_ids]);
    for (const k of ["finish_reason", "prompt_tokens", "completion_tokens"]) {
      assertEquals(last.meta_info[k], r.meta_info[k]);
    }
    assertEquals(typeof last.meta_info.e2e_latency, "number");
    assertEquals(last.meta_info.id.length, 32);
    for (const e of objs.slice(0, -1)) {
      assertEquals(e.meta_info.e2e_latency, null);
      assertEquals(e.output_ids, r.output_ids.slice(0, e.output_ids.length));
      assertEquals(e.meta_info.completion_tokens, e.output_ids.length);
    }

    const len = await (await postJson(`${url}/generate`, {
      input_ids: [1, 2, 3],
      sampling_params: { max_new_tokens: 3 },
    })).json();
    assertEquals(len.meta_info.finish_reason, { type: "length", length: 3 });
    const batch =
      await (await postJson(`${url}/generate`, { text: ["a", "b"], sampling_params: { max_new_tokens: 2 } }))
        .json();
    assertEquals(batch.length, 2);
  }));

Deno.test("/generate: stop string ends the text, aborts the engine request, never leaks in the stream", () =>
  withServer(async ({ url }, engine) => {
    const body = { text: "x", sampling_params: { max_new_tokens: 64, stop: ["capital"] }, stream: true };
    const events = (await readSse(await postJson(`${url}/generate`, body))).slice(0, -1) as any[];
    for (const e of events) assert(!e.text.includes("capit"), e.text);
    assertEquals(events.at(-1).text, " Paris is the ");
    assertEquals(events.at(-1).meta_info.finish_reason, { type: "stop", matched: "capital" });
    assertEquals(engine.aborted.length, 1);
    const kept = await (await postJson(`${url}/generate`, {
      text: "x",
      sampling_params: { stop: "capital", no_stop_trim: true },
    })).json();
    assertEquals(kept.text, " Paris is the capital");
  }));

Deno.test("/v1/chat/completions: plain, streamed chunk order, usage, logprobs", () =>
  withServer(async ({ url }) => {
    const messages = [{ role: "user", content: "What is the capital of France?" }];
    const r = await (await postJson(`${url}/v1/chat/completions`, { messages, max_tokens: 64 })).json();
    assertEquals(r.object, "chat.completion");
    assertEquals(r.choices[0].message, {
      role: "assistant",
      content: ANSWER,
      reasoning_content: null,
      tool_calls: null,
    });
    assertEquals([r.choices[0].finish_reason, r.choices[0].matched_stop], ["stop", 128009]);
    assertEquals(r.usage.prompt_tokens, 42);
    assertEquals(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assertEquals(r.usage.prompt_tokens_details, null);

    const body = {
      messages,
      max_tokens: 64,
      stream: true,
      stream_options: { include_usage: true },
      logprobs: true,
      top_logprobs: 2,
    };
    const events = await readSse(await postJson(`${url}/v1/chat/completions`, body));
    assertEquals(events.at(-1), "[DONE]");
    const chunks = events.slice(0, -1) as any[];
    assertEquals(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason != null);
    assertEquals(finishes.length, 1);
    assertEquals(finishes[0].choices[0].delta, {});
    assertEquals(finishes[0].choices[0].matched_stop, 128009);
    for (const c of chunks) if (c.choices.length) assert(c.choices[0].finish_reason !== "");
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assertEquals(content, ANSWER);
    const usage = chunks.at(-1);
    assertEquals(usage.choices, []);
    assertEquals(usage.usage.completion_tokens, SCRIPT.length);
    const lps = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    assertEquals(lps.length, SCRIPT.length);
    assertEquals(lps[0].top_logprobs.length, 2);
    assert(Array.isArray(lps[0].bytes));
  }));

Deno.test("official openai client: chat plain and streamed give the same text", () =>
  withServer(async ({ url }) => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "None" });
    const messages = [{ role: "user" as const, content: "List 3 countries and their capitals." }];
    const models = await client.models.list();
    assertEquals(models.data[0].id, TINY);
    const plain = await client.chat.completions.create({
      model: TINY,
      messages,
      temperature: 0,
      max_tokens: 64,
    });
    const parts: string[] = [];
    const finishes: string[] = [];
    for await (
      const chunk of await client.chat.completions.create({
        model: TINY,
        messages,
        temperature: 0,
        max_tokens: 64,
        stream: true,
      })
    ) {
      if (chunk.choices[0]?.delta?.content) parts.push(chunk.choices[0].delta.content);
      if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason);
    }
    assertEquals(parts.join(""), plain.choices[0].message.content);
    assertEquals(finishes, ["stop"]);
    const comp = await client.completions.create({
      model: TINY,
      prompt: "Hello",
      max_tokens: 5,
      echo: true,
      logprobs: 1,
    });
    // As SGLang: a text prompt is echoed as sent (no BOS text).
    assertEquals(comp.choices[0].text.startsWith("Hello"), true);
    assertEquals(comp.choices[0].finish_reason, "length");
  }));

Deno.test("errors: SGLang bodies, 400 on bad JSON/types/ranges, 404, context overflow", () =>
  withServer(async ({ url }) => {
    const bad = await fetch(`${url}/generate`, { method: "POST", body: "{not json" });
    assertEquals(bad.status, 400);
    const e = await bad.json();
    assertEquals([e.object, e.type, e.param, e.code], ["error", "BadRequestError", null, 400]);
    for (
      const [path, body, needle] of [
        ["/generate", { text: "x", sampling_params: { temperature: "hot" } }, "temperature"],
        ["/generate", { text: "x", sampling_params: { top_p: 0 } }, "top_p"],
        ["/generate", { text: "x", sampling_params: { repetition_penalty: 3 } }, "repetition_penalty"],
        ["/generate", { text: 5 }, "text"],
        ["/v1/chat/completions", { messages: [] }, "messages"],
        [
          "/v1/chat/completions",
          { messages: [{ role: "user", content: "x" }], max_tokens: -1 },
          "max_tokens",
        ],
        ["/v1/completions", { prompt: {} }, "prompt"],
        [
          "/generate",
          { input_ids: Array(300).fill(5) },
          "The input (300 tokens) is longer than the model's context length (256 tokens).",
        ],
      ] as [string, unknown, string][]
    ) {
      const r = await postJson(`${url}${path}`, body);
      const j = await r.json();
      assertEquals(r.status, 400, `${path} ${JSON.stringify(body)}`);
      assert(j.message.includes(needle), j.message);
    }
    const nf = await fetch(`${url}/nope`);
    assertEquals(nf.status, 404);
    await nf.body?.cancel();
    const m = await fetch(`${url}/v1/models/other`);
    assertEquals(m.status, 404);
    assertEquals((await m.json()).code, "model_not_found");
  }));

Deno.test("client disconnect aborts the engine request (stream and non-stream)", () =>
  withServer(
    async ({ url }, engine) => {
      for (const stream of [true, false]) {
        const before = engine.aborted.length;
        const ac = new AbortController();
        const body = JSON.stringify({
          text: "y",
          sampling_params: { max_new_tokens: 100000, ignore_eos: true },
          stream,
        });
        const pending = fetch(`${url}/generate`, { method: "POST", body, signal: ac.signal }).catch(() =>
          null
        );
        if (stream) {
          const res = await pending;
          await res!.body!.getReader().read();
        } else {
          while (engine.runningCount === 0) await sleep(5);
        }
        assertEquals(engine.runningCount, 1);
        ac.abort();
        await pending;
        for (let i = 0; i < 200 && engine.aborted.length === before; i++) await sleep(10);
        assertEquals(engine.aborted.length, before + 1, `stream=${stream}: no abort reached the engine`);
        assertEquals(engine.runningCount, 0);
      }
    },
    [],
    { context_len: 1 << 20 },
  ));

Deno.test("admin: api key, health, model info, server info, flush, metrics, tokenize, CORS", () =>
  withServer(async ({ url, ctx }) => {
    const unauth = await postJson(`${url}/generate`, { text: "x" });
    assertEquals(unauth.status, 401);
    await unauth.body?.cancel();
    const auth = { authorization: "Bearer sekret" };
    const ok = await postJson(`${url}/generate`, { text: "x", sampling_params: { max_new_tokens: 1 } }, auth);
    assertEquals(ok.status, 200);
    await ok.body?.cancel();
    assertEquals((await fetch(`${url}/health`)).status, 200);
    ctx.ready = false;
    assertEquals(
      await fetch(`${url}/health_generate`).then(async (r) => (await r.body?.cancel(), r.status)),
      503,
    );
    ctx.ready = true;
    const opt = await fetch(`${url}/v1/models`, { method: "OPTIONS" });
    assertEquals(opt.headers.get("access-control-allow-origin"), "*");
    await opt.body?.cancel();
    const info = await (await fetch(`${url}/get_model_info`, { headers: auth })).json();
    assertEquals(info.is_generation, true);
    const si = await (await fetch(`${url}/get_server_info`, { headers: auth })).json();
    assertEquals(si.max_total_num_tokens, 4096);
    assertEquals(si.api_key, undefined);
    assert(typeof si.internal_states[0].last_gen_throughput === "number");
    const flush = await fetch(`${url}/flush_cache`, { method: "POST", headers: auth });
    assertEquals([flush.status, (await flush.text()).startsWith("Cache flushed.")], [200, true]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert(metrics.includes(`sglang:prompt_tokens_total{model_name="${TINY}"}`), metrics);
    assert(metrics.includes("sglang:e2e_request_latency_seconds_count"));
    const t = await (await postJson(`${url}/tokenize`, { prompt: "The capital of France is" }, auth)).json();
    assertEquals(t.tokens, [128000, 791, 6864, 315, 9822, 374]);
    const d = await (await postJson(`${url}/v1/detokenize`, { tokens: t.tokens }, auth)).json();
    assertEquals(d.text, "The capital of France is");
    const big = await postJson(`${url}/generate`, { text: "x".repeat(70 << 20) }, auth);
    assertEquals(big.status, 413);
    await big.body?.cancel();
  }, ["--api-key", "sekret", "--enable-metrics"]));

Deno.test("n siblings, --enable-cache-report, completions list prompt", () =>
  withServer(async ({ url }) => {
    const r = await (await postJson(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "hi" }],
      n: 2,
      max_tokens: 3,
    })).json();
    assertEquals(r.choices.map((c: any) => c.index), [0, 1]);
    assertEquals(r.usage.completion_tokens, 6);
    assertEquals(typeof r.usage.prompt_tokens_details.cached_tokens, "number");
    const c = await (await postJson(`${url}/v1/completions`, { prompt: ["a", "b c"], max_tokens: 2 })).json();
    assertEquals(c.choices.length, 2);
    assertEquals(c.usage.prompt_tokens, 2 + 3);
  }, ["--enable-cache-report"]));

Deno.test("a model without a chat template answers chat requests with a 400 saying so", async () => {
  const { STORIES } = await import("./helpers.ts");
  const s = await startTestServer(
    new FakeEngine([5, 6, 7], { vocab_size: 512, context_len: 512, bos_token_id: 1, eos_token_ids: [2] }),
    STORIES,
  );
  try {
    const r = await postJson(`${s.url}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }] });
    assertEquals(r.status, 400);
    assert((await r.json()).message.includes("no chat template"));
    const g = await (await postJson(`${s.url}/generate`, {
      text: "Once upon a time",
      sampling_params: { max_new_tokens: 2 },
    })).json();
    assertEquals(g.meta_info.prompt_tokens, 5);
  } finally {
    await s.close();
  }
});
