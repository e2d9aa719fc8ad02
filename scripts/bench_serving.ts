// SGLang's bench_serving, re-made for llm-server's HTTP API.
//
//   deno run -A scripts/bench_serving.ts --base-url http://127.0.0.1:30000 --backend sglang \
//     --dataset-name random --num-prompts 16 --random-input-len 512 --random-output-len 64 \
//     --random-range-ratio 1 --max-concurrency 16 --output-file bench.jsonl
//   deno run -A scripts/bench_serving.ts --self-test

import { parseFlags } from "./bench/args.ts";
import type { BackendName } from "./bench/backends.ts";
import { type BenchRequest, randomDataset, sharedPrefixDataset } from "./bench/datasets.ts";
import { computeMetrics, formatTable, jsonRecord } from "./bench/metrics.ts";
import { runBenchmark } from "./bench/runner.ts";

export interface BenchConfig {
  baseUrl: string;
  backend: BackendName;
  model?: string;
  datasetName: "random" | "generated-shared-prefix";
  numPrompts: number;
  randomInputLen: number;
  randomOutputLen: number;
  randomRangeRatio: number;
  gspNumGroups: number;
  gspPromptsPerGroup: number;
  gspSystemPromptLen: number;
  gspQuestionLen: number;
  gspOutputLen: number;
  requestRate: number;
  maxConcurrency: number | null;
  seed: number;
  tokenizer?: string;
  vocabSize?: number;
  outputFile?: string;
  warmupRequests: number;
  quiet: boolean;
}

const USAGE =
  `usage: bench_serving.ts [--base-url URL | --host H --port P] [--backend sglang|sglang-oai] [--model NAME]
  [--dataset-name random|generated-shared-prefix] [--num-prompts N] [--seed S]
  [--random-input-len L] [--random-output-len L] [--random-range-ratio R]
  [--gsp-num-groups G] [--gsp-prompts-per-group P] [--gsp-system-prompt-len L] [--gsp-question-len L] [--gsp-output-len L]
  [--request-rate R|inf] [--max-concurrency C] [--tokenizer PATH | --vocab-size V] [--output-file F.jsonl]
  [--warmup-requests N] [--self-test]`;

function numberFlag(
  flags: Record<string, string | boolean>,
  key: string,
  fallback: number,
  integer = true,
): number {
  const raw = flags[key];
  if (raw === undefined) return fallback;
  if (raw === true) throw new Error(`--${key} needs a value`);
  const value = raw === "inf" ? Infinity : Number(raw);
  if (Number.isNaN(value) || (integer && Number.isFinite(value) && !Number.isInteger(value))) {
    throw new Error(`--${key}: not a valid number: ${raw}`);
  }
  return value;
}

export function parseConfig(argv: string[]): BenchConfig {
  const known = new Set([
    "base-url",
    "host",
    "port",
    "backend",
    "model",
    "dataset-name",
    "num-prompts",
    "random-input-len",
    "random-output-len",
    "random-range-ratio",
    "gsp-num-groups",
    "gsp-prompts-per-group",
    "gsp-system-prompt-len",
    "gsp-question-len",
    "gsp-output-len",
    "request-rate",
    "max-concurrency",
    "seed",
    "tokenizer",
    "vocab-size",
    "output-file",
    "warmup-requests",
    "quiet",
    "self-test",
  ]);
  const flags = parseFlags(argv, ["quiet", "self-test"]);
  for (const key of Object.keys(flags)) {
    if (!known.has(key)) throw new Error(`unknown option --${key}\n${USAGE}`);
  }
  const backend = (flags["backend"] ?? "sglang") as string;
  if (backend !== "sglang" && backend !== "sglang-oai") {
    throw new Error(`--backend must be sglang or sglang-oai`);
  }
  const datasetName = (flags["dataset-name"] ?? "random") as string;
  if (datasetName !== "random" && datasetName !== "generated-shared-prefix") {
    throw new Error(`--dataset-name must be random or generated-shared-prefix`);
  }
  const host = (flags["host"] as string) ?? "127.0.0.1";
  const port = numberFlag(flags, "port", 30000);
  const maxConcurrency = numberFlag(flags, "max-concurrency", 0);
  const config: BenchConfig = {
    baseUrl: ((flags["base-url"] as string) ?? `http://${host}:${port}`).replace(/\/+$/, ""),
    backend,
    model: flags["model"] as string | undefined,
    datasetName,
    numPrompts: numberFlag(flags, "num-prompts", 1000),
    randomInputLen: numberFlag(flags, "random-input-len", 1024),
    randomOutputLen: numberFlag(flags, "random-output-len", 1024),
    randomRangeRatio: numberFlag(flags, "random-range-ratio", 0.0, false),
    gspNumGroups: numberFlag(flags, "gsp-num-groups", 64),
    gspPromptsPerGroup: numberFlag(flags, "gsp-prompts-per-group", 16),
    gspSystemPromptLen: numberFlag(flags, "gsp-system-prompt-len", 2048),
    gspQuestionLen: numberFlag(flags, "gsp-question-len", 128),
    gspOutputLen: numberFlag(flags, "gsp-output-len", 256),
    requestRate: numberFlag(flags, "request-rate", Infinity, false),
    maxConcurrency: maxConcurrency > 0 ? maxConcurrency : null,
    seed: numberFlag(flags, "seed", 1),
    tokenizer: flags["tokenizer"] as string | undefined,
    vocabSize: flags["vocab-size"] === undefined ? undefined : numberFlag(flags, "vocab-size", 0),
    outputFile: flags["output-file"] as string | undefined,
    warmupRequests: numberFlag(flags, "warmup-requests", 1),
    quiet: flags["quiet"] === true,
  };
  if (config.numPrompts < 1) throw new Error("--num-prompts must be >= 1");
  if (!(config.requestRate > 0)) throw new Error("--request-rate must be > 0 or inf");
  if (config.vocabSize !== undefined && config.vocabSize < 2) throw new Error("--vocab-size must be >= 2");
  return config;
}

/**
 * Ordinary (non-special) vocabulary size: random prompts must not contain BOS/EOS or chat markers, which
 * would change what the server does with them.
 */
async function vocabFromTokenizer(path: string): Promise<number> {
  let file = path;
  try {
    if ((await Deno.stat(path)).isDirectory) file = `${path}/tokenizer.json`;
  } catch {
    throw new Error(`tokenizer not found: ${path}`);
  }
  const tokenizer = JSON.parse(await Deno.readTextFile(file));
  const vocab = tokenizer?.model?.vocab;
  const size = Array.isArray(vocab) ? vocab.length : Object.keys(vocab ?? {}).length;
  if (size < 2) throw new Error(`${file}: no model.vocab in tokenizer.json`);
  return size;
}

export async function resolveVocabSize(config: BenchConfig): Promise<number> {
  if (config.vocabSize !== undefined) return config.vocabSize;
  if (config.tokenizer) return await vocabFromTokenizer(config.tokenizer);
  const response = await fetch(`${config.baseUrl}/get_model_info`).catch((error) => {
    throw new Error(
      `cannot reach ${config.baseUrl}/get_model_info (${error.message}); pass --tokenizer or --vocab-size`,
    );
  });
  if (!response.ok) {
    throw new Error(`/get_model_info answered ${response.status}; pass --tokenizer or --vocab-size`);
  }
  const info = await response.json();
  if (typeof info.vocab_size === "number") return info.vocab_size;
  for (const candidate of [info.tokenizer_path, info.model_path]) {
    if (typeof candidate === "string") {
      try {
        return await vocabFromTokenizer(candidate);
      } catch { /* try the next path */ }
    }
  }
  throw new Error(
    "could not find the vocabulary size from /get_model_info; pass --tokenizer or --vocab-size",
  );
}

export function buildDataset(config: BenchConfig, vocabSize: number): BenchRequest[] {
  if (config.datasetName === "random") {
    return randomDataset({
      numPrompts: config.numPrompts,
      inputLen: config.randomInputLen,
      outputLen: config.randomOutputLen,
      rangeRatio: config.randomRangeRatio,
      vocabSize,
      seed: config.seed,
    });
  }
  return sharedPrefixDataset({
    numGroups: config.gspNumGroups,
    promptsPerGroup: config.gspPromptsPerGroup,
    systemPromptLen: config.gspSystemPromptLen,
    questionLen: config.gspQuestionLen,
    outputLen: config.gspOutputLen,
    vocabSize,
    seed: config.seed,
  });
}

export interface BenchReport {
  table: string;
  record: ReturnType<typeof jsonRecord>;
  errors: string[];
}

export async function benchmark(config: BenchConfig): Promise<BenchReport> {
  const vocabSize = await resolveVocabSize(config);
  const requests = buildDataset(config, vocabSize);
  const backend = { baseUrl: config.baseUrl, backend: config.backend, model: config.model };
  // Warm-up outside the timed run: first-request costs (page faults, lazy init) are not serving speed.
  for (let i = 0; i < config.warmupRequests; i++) {
    await runBenchmark(backend, [{ promptIds: requests[0].promptIds.slice(0, 16), outputLen: 2 }], {
      requestRate: Infinity,
      maxConcurrency: 1,
      seed: config.seed,
    });
  }
  const result = await runBenchmark(backend, requests, {
    requestRate: config.requestRate,
    maxConcurrency: config.maxConcurrency,
    seed: config.seed,
  });
  const metrics = computeMetrics(result.outcomes, result.duration);
  const context = {
    backend: config.backend,
    requestRate: config.requestRate,
    maxConcurrency: config.maxConcurrency,
  };
  const record = jsonRecord(metrics, context, {
    dataset_name: config.datasetName,
    num_prompts: config.numPrompts,
    seed: config.seed,
    ...(config.datasetName === "random"
      ? {
        random_input_len: config.randomInputLen,
        random_output_len: config.randomOutputLen,
        random_range_ratio: config.randomRangeRatio,
      }
      : {
        gsp_num_groups: config.gspNumGroups,
        gsp_prompts_per_group: config.gspPromptsPerGroup,
        gsp_system_prompt_len: config.gspSystemPromptLen,
        gsp_question_len: config.gspQuestionLen,
        gsp_output_len: config.gspOutputLen,
      }),
  });
  const errors = result.outcomes.filter((o) => !o.success).map((o) => o.error);
  if (config.outputFile) {
    await Deno.writeTextFile(config.outputFile, JSON.stringify(record) + "\n", { append: true });
  }
  return { table: formatTable(metrics, context), record, errors };
}

async function main() {
  let config: BenchConfig;
  try {
    if (Deno.args.includes("--self-test")) {
      const { selfTest } = await import("./bench/self_test.ts");
      Deno.exit(await selfTest());
    }
    if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
      console.log(USAGE);
      return;
    }
    config = parseConfig(Deno.args);
    const report = await benchmark(config);
    if (report.errors.length) {
      console.error(`${report.errors.length} request(s) failed; first error: ${report.errors[0]}`);
    }
    console.log("\n" + report.table);
    if (report.record.completed === 0) Deno.exit(1);
  } catch (error) {
    console.error(`bench_serving: ${error instanceof Error ? error.message : error}`);
    Deno.exit(2);
  }
}

// No top-level await: the self-test imports this module back, which would wait on main() forever.
if (import.meta.main) main();
