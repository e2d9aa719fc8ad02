#!/usr/bin/env node
// Records llama.cpp's behaviour on a GGUF model as test vectors: tokenization of a fixed set of
// strings (with and without special-token parsing) and greedy continuations with each step's
// top-2 log-probability margin (so comparisons can skip near-ties). The llama.cpp peer is the npm
// package node-llama-cpp (prebuilt CPU binaries), installed outside the repo:
//   npm install --prefix /tmp/nlc node-llama-cpp
//   node scripts/llamacpp_vectors.mjs --model file.gguf --out vectors.json [--nlc /tmp/nlc] [--steps 32] [--margins]
//   [--tokenize-only]
// --margins records llama.cpp's top-2 log-probability margin per greedy step; node-llama-cpp builds
// the full probability map in JS for that, about 1.5 s per step, so it is off by default (the engine's
// own logits give the margin for near-tie checks).
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
const wantMargins = process.argv.includes("--margins");
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
];

const t0 = Date.now();
const { getLlama } = await import(pathToFileURL(join(nlcDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });

const tokenize = [];
for (const text of tokenizationTexts()) {
  for (const special of [true, false]) {
    tokenize.push({ text, special, ids: Array.from(model.tokenize(text, special)) });
  }
}

const context = await model.createContext({ contextSize: 512, threads: 2 });
const greedy = [];
const runs = goldenPath
  ? JSON.parse(readFileSync(goldenPath, "utf8")).cases.map((c) => ({ prompt: c.prompt, ids: c.prompt_ids, steps: c.max_new_tokens }))
  : greedyPrompts.map((prompt) => ({ prompt, ids: null, steps }));
for (const run of tokenizeOnly ? [] : runs) {
  const prompt = run.prompt;
  const sequence = context.getSequence();
  // llama.cpp adds BOS only when the model asks for it (add_bos_token); mirror that.
  const promptIds = run.ids ?? Array.from(model.tokenize(prompt, true));
  const bos = model.tokens.bos;
  if (!run.ids && model.tokens.shouldPrependBosToken && bos != null && promptIds[0] !== bos) promptIds.unshift(bos);
  const outputIds = [];
  const margins = [];
  const gen = wantMargins
    ? sequence.evaluateWithMetadata(promptIds, { probabilities: true }, { temperature: 0, yieldEogToken: true })
    : sequence.evaluate(promptIds, { temperature: 0, yieldEogToken: true });
  for await (const step of gen) {
    const token = wantMargins ? step.token : step;
    outputIds.push(token);
    if (wantMargins) {
      const probs = [...step.probabilities.values()].sort((a, b) => b - a);
      margins.push(probs.length > 1 ? Math.log(probs[0]) - Math.log(Math.max(probs[1], 1e-30)) : Infinity);
    }
    if (outputIds.length >= run.steps || model.isEogToken?.(token)) break;
  }
  greedy.push({ prompt, prompt_ids: promptIds, output_ids: outputIds, ...(wantMargins ? { top2_logprob_margins: margins } : {}) });
  sequence.dispose();
}

writeFileSync(outPath, JSON.stringify({ model: modelPath, peer: "node-llama-cpp", tokenize, greedy }, null, 1));
console.error(`llamacpp_vectors: ${tokenize.length} tokenizations, ${greedy.length} greedy runs in ${Date.now() - t0} ms -> ${outPath}`);
// node-llama-cpp keeps native handles alive; exit explicitly so the caller does not wait on them.
process.exit(0);
