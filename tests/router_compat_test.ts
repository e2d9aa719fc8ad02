/**
 * What sglang-router 0.3.2 asks of a worker (docs/scale-out.md), over raw HTTP against the fake engine:
 * registration reads, load polling, cache flush, the bodies it rewrites, and its gRPC probes.
 */
import { relative } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { FakeEngine } from "./fake_engine.ts";
import { postJson, readSse, startTestServer, TINY } from "./helpers.ts";

const SCRIPT = [24748, 1917];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withServer(
  fn: (s: Awaited<ReturnType<typeof startTestServer>>, e: FakeEngine) => Promise<void>,
  modelDir = TINY,
  extra: string[] = [],
) {
  const engine = new FakeEngine(SCRIPT, { context_len: 1 << 20 }, 2);
  const s = await startTestServer(engine, modelDir, extra);
  try {
    await fn(s, engine);
  } finally {
    await s.close();
  }
}

Deno.test("/server_info and /model_info (and the get_ names): absolute paths, served name, config.json model type", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${TINY}/config.json`));
  const absolute = await Deno.realPath(TINY);
  // Given as a relative path, as `--model-path ../shared/models/x` would be.
  const rel = relative(Deno.cwd(), TINY);
  assert(!rel.startsWith("/"));
  await withServer(async ({ url }) => {
    for (const path of ["/model_info", "/get_model_info"]) {
      const info = await (await fetch(`${url}${path}`)).json();
      assertEquals(info.model_path, absolute, path);
      assertEquals(info.tokenizer_path, absolute, path);
      assertEquals(info.served_model_name, rel);
      assertEquals(info.is_generation, true);
      assertEquals(info.model_type, config.model_type);
      assertEquals(info.architectures, config.architectures);
    }
    for (const path of ["/server_info", "/get_server_info"]) {
      const info = await (await fetch(`${url}${path}`)).json();
      assertEquals(info.model_path, absolute, path);
      assertEquals(info.tokenizer_path, absolute, path);
      assertEquals(info.served_model_name, rel);
      assertEquals([info.dp_size, info.tp_size], [1, 1]);
      assertEquals(typeof info.version, "string");
      assertEquals(typeof info.max_running_requests === "number" || info.max_running_requests === null, true);
    }
  }, rel);
});

Deno.test("/get_load: one dp rank, requests and tokens in flight from the engine, back to zero after", () =>
  withServer(async ({ url }, engine) => {
    const idle = await (await fetch(`${url}/get_load`)).json();
    assertEquals(idle, [{ dp_rank: 0, num_reqs: 0, num_waiting_reqs: 0, num_tokens: 0 }]);
    const ac = new AbortController();
    const pending = fetch(`${url}/generate`, {
      method: "POST",
      body: JSON.stringify({
        input_ids: [1, 2, 3, 4, 5],
        sampling_params: { max_new_tokens: 100000, ignore_eos: true },
      }),
      signal: ac.signal,
    }).catch(() => null);
    while (engine.runningCount === 0) await sleep(2);
    await sleep(30);
    const [busy] = await (await fetch(`${url}/get_load`)).json();
    assertEquals([busy.dp_rank, busy.num_reqs, busy.num_waiting_reqs], [0, 1, 0]);
    assert(busy.num_tokens > 5, `num_tokens ${busy.num_tokens} must count the prompt and the output`);
    ac.abort();
    await pending;
    while (engine.runningCount > 0) await sleep(2);
    const [after] = await (await fetch(`${url}/get_load`)).json();
    assertEquals([after.num_reqs, after.num_tokens], [0, 0]);
  }));

Deno.test("/flush_cache: POST and GET answer 200 when idle, 400 while a request runs", () =>
  withServer(async ({ url }, engine) => {
    for (const method of ["POST", "GET"]) {
      const r = await fetch(`${url}/flush_cache`, { method });
      assertEquals(r.status, 200, method);
      assert((await r.text()).startsWith("Cache flushed."));
    }
    const ac = new AbortController();
    const pending = fetch(`${url}/generate`, {
      method: "POST",
      body: JSON.stringify({ text: "x", sampling_params: { max_new_tokens: 100000, ignore_eos: true } }),
      signal: ac.signal,
    }).catch(() => null);
    while (engine.runningCount === 0) await sleep(2);
    const busy = await fetch(`${url}/flush_cache`, { method: "POST" });
    assertEquals(busy.status, 400);
    await busy.body?.cancel();
    ac.abort();
    await pending;
  }));

/** The chat body as sglang-router 0.3.2 re-serialises `{"messages": [...], "max_tokens": 5}`. */
function routerChatBody(extra: Record<string, unknown> = {}) {
  return {
    model: "unknown",
    messages: [{ role: "user", content: "hi" }],
    max_completion_tokens: 5,
    logprobs: false,
    stream: false,
    no_stop_trim: false,
    ignore_eos: false,
    continue_final_message: false,
    skip_special_tokens: true,
    separate_reasoning: true,
    stream_reasoning: true,
    return_hidden_states: false,
    ...extra,
  };
}

Deno.test("/v1/chat/completions as the router sends it: max_completion_tokens honoured, model 'unknown' served, extra fields ignored", () =>
  withServer(async ({ url }, engine) => {
    const r = await postJson(`${url}/v1/chat/completions`, routerChatBody());
    assertEquals(r.status, 200);
    const j = await r.json();
    assertEquals(j.model, "unknown");
    assertEquals(j.usage.completion_tokens, 5);
    assertEquals(j.choices[0].finish_reason, "length");
    assertEquals(engine.submitted.at(-1)!.sampling.max_new_tokens, 5);
    const named = await postJson(`${url}/v1/chat/completions`, routerChatBody({ model: "some-other-model" }));
    assertEquals(named.status, 200);
    assertEquals((await named.json()).model, "some-other-model");
    const streamed = await readSse(
      await postJson(`${url}/v1/chat/completions`, routerChatBody({ stream: true })),
    );
    assertEquals(streamed.at(-1), "[DONE]");
    const text = (streamed.slice(0, -1) as any[]).map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assertEquals(text, " hello world hello world hello");
    for (const key of ["return_hidden_states", "continue_final_message"]) {
      const bad = await postJson(`${url}/v1/chat/completions`, routerChatBody({ [key]: true }));
      assertEquals(bad.status, 400, key);
      assert((await bad.json()).message.includes(key));
    }
  }));

Deno.test("/v1/completions with the router's extra fields; echo true still echoes", () =>
  withServer(async ({ url }) => {
    const extra = {
      model: "unknown",
      no_stop_trim: false,
      ignore_eos: false,
      skip_special_tokens: true,
      return_hidden_states: false,
    };
    const plain = await postJson(`${url}/v1/completions`, {
      prompt: "Hello",
      max_tokens: 3,
      echo: false,
      ...extra,
    });
    assertEquals(plain.status, 200);
    const p = await plain.json();
    assertEquals(p.choices[0].text, " hello world hello");
    assertEquals(p.model, "unknown");
    const echoed = await (await postJson(`${url}/v1/completions`, {
      prompt: "Hello",
      max_tokens: 3,
      echo: true,
      ...extra,
    })).json();
    // SGLang echoes a text prompt as sent.
    assertEquals(echoed.choices[0].text, "Hello hello world hello");
  }));

Deno.test("/generate with the router's extra fields (model null, log_metrics, ...) and its rid", () =>
  withServer(async ({ url }) => {
    const body = {
      text: "The capital of France is",
      sampling_params: { max_new_tokens: 2 },
      rid: "router-rid-1",
      model: null,
      return_logprob: false,
      return_text_in_logprobs: false,
      log_metrics: true,
      return_hidden_states: false,
      background: false,
      no_logs: false,
      return_bytes: false,
      return_entropy: false,
      stream: false,
    };
    const r = await postJson(`${url}/generate`, body);
    assertEquals(r.status, 200);
    const j = await r.json();
    assertEquals([j.text, j.meta_info.id], [" hello world", "router-rid-1"]);
    const bad = await postJson(`${url}/generate`, {
      ...body,
      rid: "router-rid-2",
      return_hidden_states: true,
    });
    assertEquals(bad.status, 400);
    assert((await bad.json()).message.includes("return_hidden_states"));
  }));

Deno.test("unknown POST paths (the router's gRPC probes, over HTTP/2 and HTTP/1.1) get a plain 404 and the server carries on", () =>
  withServer(async ({ url }) => {
    const h2 = Deno.createHttpClient({ http1: false, http2: true });
    try {
      for (
        const path of [
          "/sglang.grpc.scheduler.SglangScheduler/HealthCheck",
          "/vllm.grpc.engine.VllmEngine/HealthCheck",
          "/no/such/path",
        ]
      ) {
        for (const client of [h2, undefined]) {
          const r = await fetch(`${url}${path}`, {
            method: "POST",
            client,
            headers: { "content-type": "application/grpc", te: "trailers" },
            body: new Uint8Array([0, 0, 0, 0, 0]),
          });
          assertEquals(r.status, 404, path);
          const e = await r.json();
          assertEquals([e.object, e.type, e.code], ["error", "NotFoundError", 404]);
        }
      }
    } finally {
      h2.close();
    }
    const health = await fetch(`${url}/health`);
    assertEquals(health.status, 200);
    await health.body?.cancel();
  }));
