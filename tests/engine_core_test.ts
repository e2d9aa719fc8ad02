/**
 * Engine-core acceptance through HTTP on the real model (tiny-random-llama-3.1, float32): batch
 * invariance, prefix-cache reuse, retraction under a small pool, client disconnects, aborts,
 * /flush_cache, page accounting and the start-up log.
 */
import { assert, assertEquals } from "./assert.ts";
import { loadTokenizer, postJson, readSse, TINY } from "./helpers.ts";
import { HAVE_ENGINE, type ServerProcess, startRealServer } from "./real_server.ts";
import { ChatTemplate } from "../server/text/chat_template.ts";

const inCI = !!Deno.env.get("CI");
const ignore = !HAVE_ENGINE && !inCI;

/** Deterministic prompts of distinct lengths (xorshift over ids the tiny model's vocab holds). */
function prompts(count: number, lengthOf: (i: number) => number, seed = 7): number[][] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  return Array.from({ length: count }, (_, i) => Array.from({ length: lengthOf(i) }, () => 1000 + next() % 60000));
}

async function generateIds(url: string, inputIds: number[], maxNew: number, extra: Record<string, unknown> = {}) {
  const res = await postJson(`${url}/generate`, {
    input_ids: inputIds,
    sampling_params: { temperature: 0, max_new_tokens: maxNew, ignore_eos: true },
    ...extra,
  });
  assertEquals(res.status, 200);
  const body = await res.json();
  const logprobs = (body.meta_info.output_token_logprobs ?? []).map((t: [number, number]) => t[0]) as number[];
  return { ids: body.output_ids as number[], meta: body.meta_info, logprobs };
}

interface PoolState {
  running: number;
  queued: number;
  used: number;
  cached: number;
  held: number;
  free: number;
  total: number;
  retractions: number;
  integrityOk: boolean;
}

async function poolState(url: string): Promise<PoolState> {
  const info = await (await fetch(`${url}/get_server_info`)).json();
  const s = info.internal_states[0];
  const kv = s.kv_pool;
  return {
    running: s.num_running_reqs,
    queued: s.num_queue_reqs,
    used: kv.used_slots,
    cached: kv.cached_slots,
    held: kv.held_slots,
    free: kv.free_slots,
    total: kv.total_slots,
    retractions: kv.num_retractions,
    integrityOk: kv.integrity_ok,
  };
}

/** Polls until `pred` holds; returns the state and how long it took. Throws after `ms`. */
async function waitFor(url: string, pred: (s: PoolState) => boolean, ms: number) {
  const t0 = performance.now();
  let s = await poolState(url);
  while (!pred(s)) {
    if (performance.now() - t0 > ms) throw new Error(`condition not met in ${ms} ms: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 20));
    s = await poolState(url);
  }
  return { state: s, elapsedMs: performance.now() - t0 };
}

/** After everything finished: no request holds a page, every used page belongs to the cache. */
async function assertSettled(url: string) {
  const { state } = await waitFor(url, (s) => s.running === 0 && s.queued === 0, 10_000);
  assertEquals(state.held, 0, JSON.stringify(state));
  assertEquals(state.used, state.cached, JSON.stringify(state));
  assertEquals(state.used + state.free, state.total);
  assert(state.integrityOk, JSON.stringify(state));
}

async function withServer(extra: string[], fn: (server: ServerProcess) => Promise<void>): Promise<string> {
  const server = await startRealServer(TINY, ["--dtype", "float32", ...extra]);
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
  return server.log();
}

Deno.test({
  name: "engine core on tiny-random-llama-3.1 (default pool): invariance, prefix cache, disconnects, aborts, flush",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const log = await withServer(["--enable-cache-report", "--decode-log-interval", "10"], async (server) => {
      const url = server.url;

      await t.step("32 concurrent greedy requests produce exactly their solo tokens", async () => {
        const inputs = prompts(32, (i) => 2 + 3 * i);
        const maxNew = (i: number) => 8 + (i % 5) * 4;
        // Logprobs are compared as exact floats: per-row results must not depend on the batch at all,
        // which is stricter than equal argmax tokens.
        const lp = { return_logprob: true };
        const solo: { ids: number[]; logprobs: number[] }[] = [];
        for (const [i, ids] of inputs.entries()) {
          solo.push(await generateIds(url, ids, maxNew(i), lp));
          assertEquals(solo[i].ids.length, maxNew(i));
          assertEquals(solo[i].logprobs.length, maxNew(i));
          // Back-to-back solo runs leave the cache out of it.
          assertEquals((await fetch(`${url}/flush_cache`, { method: "POST" })).status, 200);
        }
        const together = await Promise.all(inputs.map((ids, i) => generateIds(url, ids, maxNew(i), lp)));
        for (const [i, r] of together.entries()) {
          assertEquals(r.meta.cached_tokens, 0, `request ${i}`);
          assertEquals(r.ids, solo[i].ids, `request ${i} (prompt ${inputs[i].length} tokens)`);
          assertEquals(r.logprobs, solo[i].logprobs, `request ${i} logprobs`);
        }
        await assertSettled(url);
        // Again from the cache (each prompt now matches all but its last token).
        const cached = await Promise.all(inputs.map((ids, i) => generateIds(url, ids, maxNew(i), lp)));
        for (const [i, r] of cached.entries()) {
          assertEquals(r.ids, solo[i].ids, `cached request ${i}`);
          assertEquals(r.logprobs, solo[i].logprobs, `cached request ${i} logprobs`);
          assertEquals(r.meta.cached_tokens, inputs[i].length - 1, `cached request ${i}`);
        }
        await assertSettled(url);
      });

      await t.step("a shared chat prefix is reported as cached and changes nothing in the output", async () => {
        const tokenizer = await loadTokenizer(TINY);
        const template = await ChatTemplate.load(tokenizer);
        const system = "You are a meticulous assistant. " + "Answer with care, cite sources and keep it short. ".repeat(12);
        const conv = (q: string) => [{ role: "system", content: system }, { role: "user", content: q }];
        const ids = (q: string) => tokenizer.encode(template.render(conv(q), { addGenerationPrompt: true }), false);
        const [a, b] = [ids("What is the capital of France?"), ids("List three prime numbers.")];
        let shared = 0;
        while (shared < a.length && a[shared] === b[shared]) shared++;
        assert(shared > 100, `shared prefix only ${shared} tokens`);
        const chat = async (q: string) => {
          const res = await postJson(`${url}/v1/chat/completions`, {
            model: "m",
            messages: conv(q),
            temperature: 0,
            max_tokens: 24,
          });
          assertEquals(res.status, 200);
          return await res.json();
        };
        assertEquals((await fetch(`${url}/flush_cache`)).status, 200);
        const first = await chat("What is the capital of France?");
        assertEquals(first.usage.prompt_tokens, a.length);
        assertEquals(first.usage.prompt_tokens_details, { cached_tokens: 0 });
        const second = await chat("List three prime numbers.");
        assertEquals(second.usage.prompt_tokens, b.length);
        const cachedTokens = second.usage.prompt_tokens_details.cached_tokens;
        assert(cachedTokens >= shared && cachedTokens < b.length, `cached ${cachedTokens}, shared ${shared}`);
        await assertSettled(url);
        assertEquals((await fetch(`${url}/flush_cache`)).status, 200);
        const uncached = await chat("List three prime numbers.");
        assertEquals(uncached.usage.prompt_tokens_details, { cached_tokens: 0 });
        assertEquals(second.choices[0].message.content, uncached.choices[0].message.content);
        assertEquals(second.choices[0].finish_reason, uncached.choices[0].finish_reason);
      });

      await t.step("killing half of 32 streaming clients frees their pages within a second", async () => {
        const inputs = prompts(32, (i) => 4 + i, 99);
        const survivorMax = 48;
        const controllers = inputs.map(() => new AbortController());
        const firstChunk: Promise<void>[] = [];
        const streams = inputs.map((ids, i) => {
          const killed = i % 2 === 0;
          let seen: () => void = () => {};
          firstChunk.push(new Promise<void>((r) => (seen = r)));
          return (async () => {
            const res = await fetch(`${url}/generate`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({
                input_ids: ids,
                sampling_params: { temperature: 0, max_new_tokens: killed ? 100_000 : survivorMax, ignore_eos: true },
                stream: true,
              }),
              signal: controllers[i].signal,
            });
            const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
            let text = "";
            try {
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                text += value;
                if (text.includes("data: ")) seen();
              }
            } catch (e) {
              if (!killed) throw e;
              return null;
            }
            return text;
          })();
        });
        await Promise.all(firstChunk);
        for (let i = 0; i < 32; i += 2) controllers[i].abort();
        // Killed requests would otherwise generate 100k tokens each: none may stay in the engine.
        const survivorBound = inputs.filter((_, i) => i % 2 === 1).reduce((n, p) => n + p.length + survivorMax, 0);
        const { state, elapsedMs } = await waitFor(
          url,
          (s) => s.running + s.queued <= 16 && s.held <= survivorBound,
          1000,
        );
        assert(state.held <= survivorBound, JSON.stringify(state));
        assert(elapsedMs < 1000, `${elapsedMs} ms`);
        const results = await Promise.all(streams);
        for (let i = 1; i < 32; i += 2) {
          const events = results[i]!.split("\n\n").filter((b) => b.startsWith("data: ")).map((b) => b.slice(6));
          assertEquals(events.at(-1), "[DONE]");
          const last = JSON.parse(events.at(-2)!);
          assertEquals(last.meta_info.finish_reason, { type: "length", length: survivorMax }, `stream ${i}`);
        }
        await assertSettled(url);
      });

      await t.step("a non-streaming client that disconnects is released too", async () => {
        const controller = new AbortController();
        const pending = fetch(`${url}/generate`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            input_ids: [1000, 2000, 3000],
            sampling_params: { temperature: 0, max_new_tokens: 100_000, ignore_eos: true },
          }),
          signal: controller.signal,
        }).catch(() => null);
        await waitFor(url, (s) => s.running === 1, 5000);
        controller.abort();
        await pending;
        await waitFor(url, (s) => s.running === 0 && s.held === 0, 1000);
        await assertSettled(url);
      });

      await t.step("/abort_request by rid and abort_all; /flush_cache 400 while busy, 200 and empty after", async () => {
        const long = (rid: string) =>
          postJson(`${url}/generate`, {
            rid,
            input_ids: [1000, 2000, 3000, 4000],
            sampling_params: { temperature: 0, max_new_tokens: 100_000, ignore_eos: true },
          }).then((r) => r.json());
        const one = long("core-abort-one");
        const two = long("core-abort-two");
        const three = long("core-abort-three");
        await waitFor(url, (s) => s.running === 3, 5000);
        const busy = await fetch(`${url}/flush_cache`, { method: "POST" });
        assertEquals(busy.status, 400);
        await busy.body?.cancel();
        const abortOne = await postJson(`${url}/abort_request`, { rid: "core-abort-one" });
        assertEquals(abortOne.status, 200);
        await abortOne.body?.cancel();
        const r1 = await one;
        assertEquals(r1.meta_info.finish_reason.type, "abort");
        assertEquals((await poolState(url)).running, 2);
        const all = await postJson(`${url}/abort_request`, { abort_all: true });
        assertEquals(all.status, 200);
        await all.body?.cancel();
        for (const r of [await two, await three]) assertEquals(r.meta_info.finish_reason.type, "abort");
        await assertSettled(url);
        const before = await poolState(url);
        assert(before.cached > 0, JSON.stringify(before));
        const ok = await fetch(`${url}/flush_cache`, { method: "POST" });
        assertEquals(ok.status, 200);
        assert((await ok.text()).startsWith("Cache flushed."));
        const after = await poolState(url);
        assertEquals([after.used, after.cached, after.free], [0, 0, after.total]);
      });

      await t.step("/get_server_info reports the pool and throughput", async () => {
        const info = await (await fetch(`${url}/get_server_info`)).json();
        assert(info.max_total_num_tokens > 0);
        const s = info.internal_states[0];
        assert(s.last_gen_throughput > 0, JSON.stringify(s));
        assertEquals(s.memory_usage.token_capacity, info.max_total_num_tokens);
        assert(s.memory_usage.kvcache > 0);
        assertEquals(s.kv_pool.total_slots, info.max_total_num_tokens);
      });
    });

    // Start-up: the pool's size is stated once, with its bytes.
    const sizing = log.match(/max_total_num_tokens=\d+/g) ?? [];
    assertEquals(sizing.length, 1, log.slice(0, 3000));
    assert(/max_total_num_tokens=\d+, .*max_running_requests=\d+, context_len=\d+/.test(log), log.slice(0, 3000));
    assert(/KV Cache is allocated\. #tokens: \d+, K size: [\d.]+ GB, V size: [\d.]+ GB, pool bytes: \d+/.test(log));
    assert(
      /Prefill batch\. #new-seq: \d+, #new-token: \d+, #cached-token: \d+, cache hit rate: [\d.]+%, token usage: [\d.]+, #running-req: \d+, #queue-req: \d+/
        .test(log),
    );
    assert(
      /Decode batch\. #running-req: \d+, #token: \d+, token usage: [\d.]+, gen throughput \(token\/s\): [\d.]+, #queue-req: \d+/
        .test(log),
    );
    assert(!log.includes("KV integrity check failed"), log.slice(-3000));
  },
});

Deno.test({
  name: "engine core with a pool too small for the load: retractions are logged, every output is still exact",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const inputs = prompts(12, (i) => 10 + 2 * i, 3);
    const maxNew = 40;
    // Reference: each request alone on a roomy server without the cache.
    const solo: { ids: number[]; logprobs: number[] }[] = [];
    await withServer(["--disable-radix-cache"], async (server) => {
      for (const ids of inputs) solo.push(await generateIds(server.url, ids, maxNew, { return_logprob: true }));
    });
    // 12 requests need up to 12 * (32 + 40) slots; the pool holds 192 (48 pages of 4), chunks of 16.
    const log = await withServer(
      ["--max-total-tokens", "192", "--page-size", "4", "--chunked-prefill-size", "16", "--schedule-policy", "lpm"],
      async (server) => {
        const results = await Promise.all(
          inputs.map((ids) => generateIds(server.url, ids, maxNew, { return_logprob: true })),
        );
        for (const [i, r] of results.entries()) {
          assertEquals(r.meta.finish_reason, { type: "length", length: maxNew }, `request ${i}`);
          assertEquals(r.ids, solo[i].ids, `request ${i}`);
          assertEquals(r.logprobs, solo[i].logprobs, `request ${i} logprobs`);
        }
        const state = await poolState(server.url);
        assert(state.retractions > 0, JSON.stringify(state));
        await assertSettled(server.url);
      },
    );
    assert(/KV cache pool is full\. Retract requests\. #retracted_reqs: \d+, #new_token_ratio: [\d.]+/.test(log), log);
    assert(!log.includes("KV integrity check failed"), log.slice(-3000));
  },
});
