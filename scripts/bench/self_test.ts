// bench_serving checked against the stub server, whose timing and token counts are known in advance.

import { type BenchConfig, benchmark, parseConfig } from "../bench_serving.ts";
import { lengthRange, randomDataset, SeededRandom, sharedPrefixDataset } from "./datasets.ts";
import { startStubServer } from "./stub_server.ts";

const failures: string[] = [];
let checks = 0;

function check(condition: boolean, what: string) {
  checks++;
  if (!condition) failures.push(what);
  console.log(`${condition ? "ok  " : "FAIL"} ${what}`);
}

function config(baseUrl: string, args: string[]): BenchConfig {
  return parseConfig(["--base-url", baseUrl, "--warmup-requests", "0", ...args]);
}

function checkDatasets() {
  const ranged = randomDataset({
    numPrompts: 200,
    inputLen: 100,
    outputLen: 40,
    rangeRatio: 0.5,
    vocabSize: 50,
    seed: 3,
  });
  const inLens = ranged.map((r) => r.promptIds.length);
  const outLens = ranged.map((r) => r.outputLen);
  check(
    Math.min(...inLens) >= 50 && Math.max(...inLens) <= 100,
    "random input lengths within [floor(100*0.5), 100]",
  );
  check(
    Math.min(...outLens) >= 20 && Math.max(...outLens) <= 40,
    "random output lengths within [floor(40*0.5), 40]",
  );
  check(new Set(inLens).size > 10, "random input lengths actually vary with ratio 0.5");
  check(
    ranged.every((r) => r.promptIds.every((t) => Number.isInteger(t) && t >= 0 && t < 50)),
    "token ids in vocab",
  );
  const fixed = randomDataset({
    numPrompts: 20,
    inputLen: 7,
    outputLen: 3,
    rangeRatio: 1,
    vocabSize: 50,
    seed: 3,
  });
  check(fixed.every((r) => r.promptIds.length === 7 && r.outputLen === 3), "ratio 1 gives fixed lengths");
  check(lengthRange(3, 0)[0] === 1, "ratio 0 lower bound is 1, not 0");
  const again = randomDataset({
    numPrompts: 20,
    inputLen: 7,
    outputLen: 3,
    rangeRatio: 1,
    vocabSize: 50,
    seed: 3,
  });
  check(JSON.stringify(again) === JSON.stringify(fixed), "same seed, same prompts");
  const gsp = sharedPrefixDataset({
    numGroups: 3,
    promptsPerGroup: 4,
    systemPromptLen: 20,
    questionLen: 5,
    outputLen: 8,
    vocabSize: 1000,
    seed: 9,
  });
  check(gsp.length === 12 && gsp.every((r) => r.promptIds.length === 25 && r.outputLen === 8), "gsp sizes");
  const prefixes = gsp.map((r) => r.promptIds.slice(0, 20).join(","));
  check(new Set(prefixes).size === 3, "gsp: exactly one shared system prompt per group");
  check(new Set(gsp.map((r) => r.promptIds.join(","))).size === 12, "gsp: every full prompt is distinct");
}

async function checkAgainstStub() {
  const stub = startStubServer({ firstTokenDelayMs: 40, tokenDelayMs: 10, vocabSize: 500 });
  const outputFile = await Deno.makeTempFile({ suffix: ".jsonl" });
  try {
    const report = await benchmark(config(stub.baseUrl, [
      "--backend",
      "sglang",
      "--num-prompts",
      "8",
      "--random-input-len",
      "32",
      "--random-output-len",
      "10",
      "--random-range-ratio",
      "1",
      "--max-concurrency",
      "2",
      "--output-file",
      outputFile,
    ]));
    const r = report.record;
    console.log(report.table);
    check(r.completed === 8 && r.failed === 0, "sglang: all 8 requests succeed");
    check(
      r.total_input_tokens === 256 && r.total_output_tokens === 80,
      "sglang: token totals 256 in / 80 out",
    );
    check(
      stub.peakInFlight <= 2 && stub.peakInFlight >= 1,
      `max concurrency respected (peak ${stub.peakInFlight})`,
    );
    const bodies = stub.requests.map((q) => q.body);
    check(
      bodies.every((b) =>
        b.stream === true && b.sampling_params.temperature === 0 && b.sampling_params.ignore_eos === true &&
        b.sampling_params.max_new_tokens === 10 && b.input_ids.length === 32
      ),
      "sglang: streaming, greedy, ignore_eos, max_new_tokens and input_ids sent",
    );
    check(
      r.median_ttft_ms >= 38 && r.median_ttft_ms < 120,
      `TTFT measured near 40 ms (${r.median_ttft_ms.toFixed(1)})`,
    );
    check(
      r.median_itl_ms >= 8 && r.median_itl_ms < 40,
      `ITL measured near 10 ms (${r.median_itl_ms.toFixed(1)})`,
    );
    // 8 requests, 2 at a time, 40 + 9*10 ms each: at least 4 rounds of 130 ms.
    check(r.duration >= 0.5, `duration covers 4 sequential rounds (${r.duration.toFixed(3)} s)`);
    check(Math.abs(r.concurrency - 2) < 0.4, `measured concurrency near 2 (${r.concurrency.toFixed(2)})`);
    const lines = report.table.split("\n");
    check(lines[0] === "============ Serving Benchmark Result ============", "table title centred in 50 '='");
    check(lines[13] === "----------------End-to-End Latency----------------", "E2E section header");
    check(
      lines.at(-1) === "=".repeat(50) && lines.length === 27,
      "table has 27 lines and closes with 50 '='",
    );
    check(lines[2] === "Traffic request rate:".padEnd(40) + " inf       ", "request rate printed as inf");
    check(/^Benchmark duration \(s\): {18}\d+\.\d\d {0,6}$/.test(lines[5]), "rows use {:<40} {:<10.2f}");
    const saved = (await Deno.readTextFile(outputFile)).trim().split("\n").map((l) => JSON.parse(l));
    check(
      saved.length === 1 && saved[0].completed === 8 && saved[0].random_input_len === 32,
      "JSONL record appended",
    );

    stub.requests.length = 0;
    const oai = await benchmark(config(stub.baseUrl, [
      "--backend",
      "sglang-oai",
      "--model",
      "m",
      "--num-prompts",
      "4",
      "--random-input-len",
      "16",
      "--random-output-len",
      "5",
      "--random-range-ratio",
      "1",
    ]));
    check(
      oai.record.completed === 4 && oai.record.total_output_tokens === 20,
      "sglang-oai: 4 requests, 20 tokens",
    );
    check(
      stub.requests.every((q) =>
        q.path === "/v1/completions" && q.body.max_tokens === 5 && q.body.ignore_eos === true
      ),
      "sglang-oai: /v1/completions with max_tokens and ignore_eos",
    );
    check(stub.peakInFlight >= 2, "no --max-concurrency: requests overlap");

    const gsp = await benchmark(config(stub.baseUrl, [
      "--dataset-name",
      "generated-shared-prefix",
      "--gsp-num-groups",
      "2",
      "--gsp-prompts-per-group",
      "2",
      "--gsp-system-prompt-len",
      "12",
      "--gsp-question-len",
      "4",
      "--gsp-output-len",
      "3",
    ]));
    check(
      gsp.record.completed === 4 && gsp.record.total_input_tokens === 64,
      "gsp run: 4 prompts of 16 tokens",
    );

    // Poisson arrivals: the run cannot finish before the last request was sent.
    const rate = 8;
    const arrivals = new SeededRandom(5 ^ 0x5bd1e995);
    let lastSend = 0;
    for (let i = 0; i < 5; i++) lastSend += arrivals.exponential(rate);
    const paced = await benchmark(config(stub.baseUrl, [
      "--request-rate",
      String(rate),
      "--seed",
      "5",
      "--num-prompts",
      "6",
      "--random-input-len",
      "4",
      "--random-output-len",
      "2",
      "--random-range-ratio",
      "1",
    ]));
    check(
      paced.record.duration >= lastSend,
      `request rate ${rate} paces sends (${paced.record.duration.toFixed(2)} s)`,
    );
    check(
      paced.table.split("\n")[2].startsWith("Traffic request rate:".padEnd(40) + " 8.0"),
      "rate printed as 8.0",
    );
  } finally {
    await stub.close();
    await Deno.remove(outputFile);
  }

  const flaky = startStubServer({ firstTokenDelayMs: 1, tokenDelayMs: 1, vocabSize: 500, failEvery: 3 });
  try {
    const report = await benchmark(config(flaky.baseUrl, [
      "--num-prompts",
      "9",
      "--random-input-len",
      "4",
      "--random-output-len",
      "2",
      "--random-range-ratio",
      "1",
      "--max-concurrency",
      "1",
    ]));
    check(report.record.completed === 6 && report.record.failed === 3, "failed requests counted, not fatal");
    check(report.errors.every((e) => e.includes("HTTP 500")), "failure reason kept");
  } finally {
    await flaky.close();
  }

  let rejected = "";
  try {
    parseConfig(["--random-range-ratio", "abc"]);
  } catch (error) {
    rejected = (error as Error).message;
  }
  check(rejected.includes("random-range-ratio"), "bad flag value gives a clear error");
}

export async function selfTest(): Promise<number> {
  checkDatasets();
  await checkAgainstStub();
  console.log(`\n${checks - failures.length}/${checks} checks passed`);
  if (failures.length) console.log("failed:\n  " + failures.join("\n  "));
  return failures.length ? 1 : 0;
}
