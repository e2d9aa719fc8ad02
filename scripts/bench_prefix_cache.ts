/**
 * Prefix-cache benchmark: time to first token (TTFT) on a shared-prefix workload — many chat requests
 * that share one long system prompt and differ in the user question — against two server instances,
 * one with the radix cache and one with --disable-radix-cache. The instances run one after the other
 * so they do not compete for the CPU. Prints a markdown table with the ratio.
 *
 *   deno run -A scripts/bench_prefix_cache.ts [--model-path DIR] [--dtype float32] [--system-words 1500]
 *       [--requests 16] [--concurrency 1] [--max-tokens 8] [--extra="--load-format dummy ..."]
 *
 * Defaults: tiny-random-llama-3.1 in float32. For a model-sized number on CPU use
 * `--model-path ../shared/models/llama-3.2-1b-instruct --extra="--load-format dummy" --system-words 300`.
 */
import { parseArgs } from "node:util";
import { MODELS_DIR } from "../tests/helpers.ts";
import { HAVE_ENGINE, startRealServer } from "../tests/real_server.ts";

const { values: opts } = parseArgs({
  args: Deno.args,
  options: {
    "model-path": { type: "string", default: `${MODELS_DIR}/tiny-random-llama-3.1` },
    dtype: { type: "string", default: "float32" },
    "system-words": { type: "string", default: "1500" },
    requests: { type: "string", default: "16" },
    concurrency: { type: "string", default: "1" },
    "max-tokens": { type: "string", default: "8" },
    extra: { type: "string", default: "" },
  },
});
const requests = Number(opts.requests);
const concurrency = Math.max(1, Number(opts.concurrency));
const maxTokens = Number(opts["max-tokens"]);
const systemWords = Number(opts["system-words"]);
if (!HAVE_ENGINE) {
  console.error("The engine library is missing: run `cargo build --release` first.");
  Deno.exit(1);
}

const vocabulary = [
  "policy", "customer", "refund", "window", "invoice", "delivery", "warranty", "account", "support",
  "schedule", "priority", "escalate", "document", "verify", "identity", "shipment", "region", "tariff",
];
// Deterministic filler so both instances see the very same prompt.
const system = "You are the support assistant of a parcel company. Follow these rules exactly. " +
  Array.from({ length: systemWords }, (_, i) => vocabulary[(i * 7 + (i >> 3)) % vocabulary.length]).join(" ");
const questions = Array.from({ length: requests + 1 }, (_, i) => `Question ${i}: where is parcel number ${1000 + 37 * i}?`);

interface Sample {
  ttftMs: number;
  promptTokens: number;
  cachedTokens: number;
}

async function chatOnce(url: string, question: string): Promise<Sample> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "bench",
      messages: [{ role: "system", content: system }, { role: "user", content: question }],
      temperature: 0,
      max_tokens: maxTokens,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttftMs = -1;
  let buffer = "";
  let usage: any = null;
  for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!block.startsWith("data: ") || block === "data: [DONE]") continue;
      const event = JSON.parse(block.slice(6));
      // The first chunk that carries a generated token (content, or a finish) marks the first token.
      const choice = event.choices?.[0];
      if (ttftMs < 0 && choice && (choice.delta?.content || choice.finish_reason)) ttftMs = performance.now() - t0;
      if (event.usage) usage = event.usage;
    }
  }
  return {
    ttftMs,
    promptTokens: usage?.prompt_tokens ?? 0,
    cachedTokens: usage?.prompt_tokens_details?.cached_tokens ?? 0,
  };
}

async function runInstance(disableCache: boolean): Promise<Sample[]> {
  const extra = opts.extra.split(/\s+/).filter((s) => s.length > 0);
  const args = ["--dtype", opts.dtype, "--enable-cache-report", ...extra];
  if (disableCache) args.push("--disable-radix-cache");
  const server = await startRealServer(opts["model-path"], args);
  try {
    // One warm-up request (it also fills the cache with the system prompt on the cached instance).
    await chatOnce(server.url, questions[requests]);
    const samples: Sample[] = [];
    let next = 0;
    const worker = async () => {
      while (next < requests) samples.push(await chatOnce(server.url, questions[next++]));
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return samples;
  } finally {
    await server.stop();
  }
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const withCache = await runInstance(false);
const without = await runInstance(true);
const row = (name: string, s: Sample[]) => {
  const t = s.map((x) => x.ttftMs);
  return `| ${name} | ${mean(s.map((x) => x.promptTokens)).toFixed(0)} | ${
    mean(s.map((x) => x.cachedTokens)).toFixed(0)
  } | ${quantile(t, 0.5).toFixed(1)} | ${quantile(t, 0.9).toFixed(1)} | ${mean(t).toFixed(1)} |`;
};
const ratio = quantile(without.map((x) => x.ttftMs), 0.5) / quantile(withCache.map((x) => x.ttftMs), 0.5);
console.log(`model: ${opts["model-path"]} (${opts.dtype} ${opts.extra}), ${requests} requests, concurrency ${concurrency}, ` +
  `system prompt ${systemWords} words, max_tokens ${maxTokens}`);
console.log("| server | prompt tokens (mean) | cached tokens (mean) | TTFT p50 ms | TTFT p90 ms | TTFT mean ms |");
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
console.log(row("radix cache", withCache));
console.log(row("--disable-radix-cache", without));
console.log(`TTFT p50 ratio (no cache / cache): ${ratio.toFixed(2)}x`);
