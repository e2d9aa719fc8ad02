#!/usr/bin/env node
// llama.cpp peer benchmark through node-llama-cpp's prebuilt CPU binaries (no source build, no download).
//
//   node scripts/bench_llamacpp.mjs --model F.gguf --threads 2 --prompt-len 512 --gen 64 --batch 1,16
//
// What is measured (token ids are random, sampling greedy, EOG tokens do not stop generation):
//   prefill: one sequence, `--prompt-len` tokens in one llama_decode call (batchSize = prompt length);
//            tok/s = prompt_len / wall time.
//   decode:  `--batch` sequences of one context (node-llama-cpp puts every sequence's next token into the
//            same llama_decode call, i.e. llama.cpp's batched decoding); each sequence is first filled
//            with `--decode-context` prompt tokens (not timed), then `--gen` steps are timed;
//            tok/s = batch * gen / wall time, and (`decode_itl_tok_s`) batch * 1000 / the median gap in ms
//            between a sequence's consecutive tokens: the statistic bench_serving gives our server (median
//            ITL), so the two sides compare like for like when some tokens run faster than most.
// Each figure is the median of `--repeats` runs after one untimed warm-up.
//
// node-llama-cpp is expected in .tools/llamacpp (see docs/benchmarks.md for the offline install), or
// under --llamacpp-dir.

import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function parseArgs(argv) {
  const options = {
    model: undefined,
    threads: 2,
    "prompt-len": 512,
    gen: 64,
    batch: "1",
    "decode-context": 32,
    repeats: 3,
    seed: 1,
    json: false,
    "skip-prefill": false,
    "llamacpp-dir": path.join(REPO_ROOT, ".tools", "llamacpp"),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`);
    const key = arg.slice(2);
    if (!(key in options)) throw new Error(`unknown option --${key}`);
    if (typeof options[key] === "boolean") options[key] = true;
    else if (i + 1 < argv.length) options[key] = argv[++i];
    else throw new Error(`--${key} needs a value`);
  }
  if (!options.model) throw new Error("--model F.gguf is required");
  if (!existsSync(options.model)) throw new Error(`model file not found: ${options.model}`);
  const positiveInt = (key) => {
    const value = Number(options[key]);
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${key} must be a positive integer`);
    return value;
  };
  return {
    model: options.model,
    threads: positiveInt("threads"),
    promptLen: positiveInt("prompt-len"),
    gen: positiveInt("gen"),
    batches: String(options.batch).split(",").map((b) => {
      const n = Number(b);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--batch: bad value ${b}`);
      return n;
    }),
    decodeContext: positiveInt("decode-context"),
    repeats: positiveInt("repeats"),
    seed: positiveInt("seed"),
    json: options.json,
    skipPrefill: options["skip-prefill"],
    llamacppDir: options["llamacpp-dir"],
  };
}

async function loadNodeLlamaCpp(dir) {
  const entry = path.join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (!existsSync(entry)) {
    throw new Error(
      `node-llama-cpp not found at ${entry}; install it with:\n` +
        `  mkdir -p ${dir} && cd ${dir} && npm install --ignore-scripts --omit=optional ` +
        `node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1`,
    );
  }
  return await import(pathToFileURL(entry).href);
}

/** Deterministic token ids in [FIRST_ID, limit) (xorshift32), so runs are repeatable. */
const FIRST_ID = 100;
function randomTokens(count, limit, seed) {
  let state = seed >>> 0 || 1;
  const tokens = new Array(count);
  for (let i = 0; i < count; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    tokens[i] = FIRST_ID + (state % (limit - FIRST_ID));
  }
  return tokens;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

async function measurePrefill(model, args, vocabLimit) {
  const context = await model.createContext({
    contextSize: args.promptLen + 8,
    batchSize: args.promptLen,
    sequences: 1,
    threads: { ideal: args.threads, min: args.threads },
  });
  try {
    const sequence = context.getSequence();
    const rates = [];
    for (let run = 0; run <= args.repeats; run++) {
      await sequence.clearHistory();
      const tokens = randomTokens(args.promptLen, vocabLimit, args.seed + run);
      const start = performance.now();
      await sequence.evaluateWithoutGeneratingNewTokens(tokens);
      const seconds = (performance.now() - start) / 1000;
      if (run > 0) rates.push(args.promptLen / seconds); // run 0 warms caches and page-faults the mmap
    }
    return { tokS: median(rates), runs: rates };
  } finally {
    await context.dispose();
  }
}

/** Generates `count` tokens on `sequence`, pushing the time of each token's arrival onto `times`. */
async function generate(sequence, firstToken, count, times) {
  let produced = 0;
  for await (const _token of sequence.evaluate([firstToken], { yieldEogToken: true })) {
    times.push(performance.now());
    if (++produced >= count) break;
  }
  return produced;
}

/** The gaps (ms) between each sequence's consecutive tokens: its inter-token latencies, as bench_serving's ITL. */
function interTokenGaps(timesBySequence) {
  return timesBySequence.flatMap((times) => times.slice(1).map((t, i) => t - times[i]));
}

/**
 * node-llama-cpp samples each sequence on its own worker, so the sequences re-queue their next token at
 * different moments and its default "next event-loop cycle" dispatch sends partial batches (measured: batch
 * 4 ran slower than batch 1). Waiting until every sequence has queued gives one llama_decode per step with
 * all `batch` tokens, which is what a batching server does. The queue is internal; if it ever disappears
 * the 50 ms cap keeps the benchmark running (slower, not hung).
 */
function lockstepDispatch(contextHolder, batch) {
  return (dispatch) => {
    const started = performance.now();
    const check = () => {
      const queued = contextHolder.context?._queuedDecodeSequenceIds?.size ?? 0;
      if (queued >= batch || performance.now() - started > 50) dispatch();
      else setTimeout(check, 0);
    };
    setTimeout(check, 0);
  };
}

async function measureDecode(model, args, batch, vocabLimit) {
  const contextHolder = {};
  const context = await model.createContext({
    contextSize: args.decodeContext + args.gen + 16,
    batchSize: Math.max(batch * args.decodeContext, batch),
    sequences: batch,
    threads: { ideal: args.threads, min: args.threads },
    // One sequence has nothing to wait for: keep node-llama-cpp's own dispatch.
    ...(batch > 1 ? { batching: { dispatchSchedule: lockstepDispatch(contextHolder, batch) } } : {}),
  });
  contextHolder.context = context;
  try {
    const sequences = Array.from({ length: batch }, () => context.getSequence());
    const rates = [];
    const itlRates = [];
    for (let run = 0; run <= args.repeats; run++) {
      await Promise.all(sequences.map((s) => s.clearHistory()));
      await Promise.all(sequences.map((s, i) =>
        s.evaluateWithoutGeneratingNewTokens(
          randomTokens(args.decodeContext, vocabLimit, args.seed * 1000 + run * batch + i),
        )
      ));
      const times = sequences.map(() => []);
      const start = performance.now();
      const produced = await Promise.all(sequences.map((s, i) => generate(s, FIRST_ID + ((i * 7919) % (vocabLimit - FIRST_ID)), args.gen, times[i])));
      const seconds = (performance.now() - start) / 1000;
      const total = produced.reduce((a, b) => a + b, 0);
      if (total !== batch * args.gen) {
        throw new Error(`decode produced ${total} tokens, expected ${batch * args.gen}`);
      }
      if (run > 0) {
        rates.push(total / seconds);
        // Every gap is one decode step giving each of the `batch` sequences a token.
        itlRates.push(batch * 1000 / median(interTokenGaps(times)));
      }
    }
    return { tokS: median(rates), runs: rates, itlTokS: median(itlRates) };
  } finally {
    await context.dispose();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { getLlama, LlamaLogLevel } = await loadNodeLlamaCpp(args.llamacppDir);
  const llama = await getLlama({
    gpu: false,
    build: "never",
    usePrebuiltBinaries: true,
    skipDownload: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    maxThreads: args.threads,
  });
  const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0 });
  // Llama 3 puts every special token at or above BOS: ids below it are ordinary text, as in a real prompt.
  // Random prompt ids come from the ordinary vocabulary, clear of the low special/control ids. (The BOS
  // id was used as the limit before: SmolLM2's BOS is 1, so every prompt was token 0, its EOS.)
  const vocabSize = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? 32000;
  const vocabLimit = Math.min(vocabSize, 32000);
  const result = {
    tool: "llama.cpp (node-llama-cpp 3 prebuilt CPU)",
    model: path.basename(args.model),
    model_bytes: model.size,
    threads: args.threads,
    prompt_len: args.promptLen,
    gen: args.gen,
    decode_context: args.decodeContext,
    repeats: args.repeats,
    prefill_tok_s: null,
    decode_tok_s: {},
    decode_itl_tok_s: {},
  };
  if (!args.skipPrefill) {
    const prefill = await measurePrefill(model, args, vocabLimit);
    result.prefill_tok_s = prefill.tokS;
    result.prefill_runs = prefill.runs;
    if (!args.json) console.log(`prefill ${args.promptLen} tokens: ${prefill.tokS.toFixed(2)} tok/s`);
  }
  for (const batch of args.batches) {
    const decode = await measureDecode(model, args, batch, vocabLimit);
    result.decode_tok_s[batch] = decode.tokS;
    result.decode_itl_tok_s[batch] = decode.itlTokS;
    if (!args.json) console.log(`decode batch ${batch}: ${decode.tokS.toFixed(2)} tok/s (${decode.itlTokS.toFixed(2)} from the median inter-token latency)`);
  }
  await model.dispose();
  await llama.dispose();
  console.log(args.json ? JSON.stringify(result) : JSON.stringify(result, null, 2));
}

main().catch((error) => {
  console.error(`bench_llamacpp: ${error.message ?? error}`);
  process.exit(1);
});
