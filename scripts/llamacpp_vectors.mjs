#!/usr/bin/env node
// Records llama.cpp's behaviour on a GGUF model as test vectors: tokenization of a fixed set of
// strings (with and without special-token parsing) and greedy continuations with each step's top-2
// raw logits (so comparisons can skip near-ties). The llama.cpp peer is the npm package node-llama-cpp
// (prebuilt CPU binaries), installed outside the repo (scripts/lib/setup.sh: ensure_llamacpp):
//   node scripts/llamacpp_vectors.mjs --model file.gguf --out vectors.json [--nlc DIR] [--steps 32]
//     [--tokenize-only | --greedy-only] [--golden golden.json] [--kv-type F16|F32] [--flash-attn auto|on|off]
// Greedy runs feed token ids straight to the context (no chat wrapper, no BOS added unless the model
// asks for it) and pick the argmax of llama.cpp's raw logits, so sampler settings play no part.
// --kv-type / --flash-attn: llama.cpp's defaults are an F16 KV cache and flash attention "auto"
// (on, on CPU); F32 + off removes llama.cpp's f16 rounding of K, V, Q and the attention weights.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const modelPath = arg("model");
const outPath = arg("out");
const nlcDir = arg("nlc", process.env.NODE_LLAMA_CPP_DIR ?? "/tmp/nlc");
const steps = Number(arg("steps", "32"));
const kvType = arg("kv-type", "F16");
const flashAttention = arg("flash-attn", "auto");
const greedyOnly = process.argv.includes("--greedy-only");
// --tokenize-only skips greedy generation (seconds instead of minutes on a busy 2-core machine).
const tokenizeOnly = process.argv.includes("--tokenize-only");
// --golden <golden.json>: greedy runs start from that file's prompt_ids (BOS included) for its
// max_new_tokens, instead of the built-in prompts; used to check GGUF files written from HF weights.
const goldenPath = arg("golden");
if (!modelPath || !outPath) {
  console.error("usage: node scripts/llamacpp_vectors.mjs --model <file.gguf> --out <vectors.json> [--nlc dir] [--steps n]");
  process.exit(2);
}

/** Strings that exercise the pre-tokenizer: words, digits, punctuation runs, whitespace, Unicode, code. */
export function tokenizationTexts() {
  const base = [
    "Hello world", "Hello world!", " Hello world", "  Hello  world  ", "hello\nworld", "hello\n\nworld\n",
    "The capital of France is", "What is the capital of France?", "List 3 countries and their capitals.",
    "I'm sure you've heard they'll say we'd've done it", "It's JOHN'S book, isn'T it?",
    "1234567890", "3.14159", "1,000,000 people", "Version 2.0.1-beta+exp.sha.5114f85", "2024-01-15T08:30:00Z",
    "$100 and 50% off", "e = mc^2", "x += y * (z - 1) / 2", "a<=b && c>=d || !e",
    "def add(a, b):\n    return a + b\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "console.log(`${x}`);",
    "<html><body><p>Hi</p></body></html>", "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "SELECT * FROM users WHERE id = 42;",
    "naïve café résumé", "Grüße aus Köln", "¿Qué tal? ¡Muy bien!", "Привет, мир!", "Γειά σου Κόσμε",
    "こんにちは世界", "你好，世界", "안녕하세요", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "emoji 😀🎉👍🏽 and 👨‍👩‍👧", "tabs\tand\ttabs", "\t\tindented", "trailing spaces   ", "   ", "\n", " ", "a",
    "!!!???...", "----====****", "...", "—– “quotes” ‘single’ «guillemets»", "C++ and C# and F#",
    "https://example.com/path?query=1&b=2#frag", "user@example.com", "/usr/local/bin/python3", "C:\\Windows\\System32",
    "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz",
    "The quick brown fox jumps over the lazy dog.", "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
    "<|im_start|>user\nHi<|im_end|>\n", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "text<|endoftext|>more", "<s> </s> <unk>", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>",
    "0", "00", "000", "0000", "12 34 56", "1 2 3 4 5 6 7 8 9 10", "١٢٣ ४५६ ๗๘๙", "½ ¾ ² ³ ⅷ",
    "  leading", "trailing\n", "\r\nwindows\r\nlines\r\n", "mixed \t \n whitespace", "a  b   c    d",
    "don't stop-believing", "O'Reilly's", "rock'n'roll", "'quoted'", "\"double\"",
  ];
  const texts = [...base];
  // Deterministic combinations reach past 200 strings and mix scripts, digits and specials within one text.
  for (let i = 0; texts.length < 240; i++) {
    const a = base[(i * 7) % base.length], b = base[(i * 13 + 5) % base.length];
    texts.push(i % 3 === 0 ? `${a} ${b}` : i % 3 === 1 ? `${a}\n${b}` : `${a}${b}`);
  }
  return texts;
}

const greedyPrompts = [
  "The capital of France is",
  "Once upon a time",
  "def fibonacci(n):",
  "The three primary colors are",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
  "In 1492, Columbus",
  "Water boils at",
  "import numpy as np\n",
  "The best way to learn a new language is",
  "Photosynthesis is the process",
  "1, 2, 3, 4,",
  // The quick-start's two chat questions as the server renders them (tests/gguf_llamacpp_greedy.test.ts checks
  // these two on their own; keep them last).
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nList 3 countries and their capitals.<|im_end|>\n<|im_start|>assistant\n",
];

const t0 = Date.now();
const { getLlama } = await import(pathToFileURL(join(nlcDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });

const tokenize = [];
for (const text of greedyOnly ? [] : tokenizationTexts()) {
  for (const special of [true, false]) {
    tokenize.push({ text, special, ids: Array.from(model.tokenize(text, special)) });
  }
}

const context = await model.createContext({
  contextSize: 512,
  threads: 2,
  flashAttention: flashAttention === "auto" ? "auto" : flashAttention === "on",
  experimentalKvCacheKeyType: kvType,
  experimentalKvCacheValueType: kvType,
});
const greedy = [];
const runs = goldenPath
  ? JSON.parse(readFileSync(goldenPath, "utf8")).cases.map((c) => ({ prompt: c.prompt, ids: c.prompt_ids, steps: c.max_new_tokens }))
  : greedyPrompts.map((prompt) => ({ prompt, ids: null, steps }));
const sequence = context.getSequence();
// Raw logits of the two best tokens after each evaluated token: argmax and top-2 margin in one call.
const top2 = { generateNext: { logits: { filter: { tokens: [], includeTop: 2 } } } };
for (const run of tokenizeOnly ? [] : runs) {
  const prompt = run.prompt;
  await sequence.clearHistory();
  // llama.cpp adds BOS only when the model asks for it (add_bos_token); mirror that.
  const promptIds = run.ids ?? Array.from(model.tokenize(prompt, true));
  const bos = model.tokens.bos;
  if (!run.ids && model.tokens.shouldPrependBosToken && bos != null && promptIds[0] !== bos) promptIds.unshift(bos);
  const outputIds = [];
  const tops = [];
  let input = promptIds.map((t, i) => (i === promptIds.length - 1 ? [t, top2] : t));
  while (outputIds.length < run.steps) {
    const result = await sequence.controlledEvaluate(input);
    const best = [...result[input.length - 1].next.logits.entries()];
    tops.push(best);
    const token = best[0][0];
    outputIds.push(token);
    if (model.isEogToken?.(token)) break;
    input = [[token, top2]];
  }
  greedy.push({
    prompt,
    prompt_ids: promptIds,
    output_ids: outputIds,
    top2_logits: tops,
    top2_logit_margins: tops.map((t) => (t.length > 1 ? t[0][1] - t[1][1] : Infinity)),
  });
}

writeFileSync(outPath, JSON.stringify({ model: modelPath, peer: "node-llama-cpp", kv_type: kvType, flash_attention: flashAttention, tokenize, greedy }, null, 1));
console.error(`llamacpp_vectors: ${tokenize.length} tokenizations, ${greedy.length} greedy runs in ${Date.now() - t0} ms -> ${outPath}`);
// node-llama-cpp keeps native handles alive; exit explicitly so the caller does not wait on them.
process.exit(0);
