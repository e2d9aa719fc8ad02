/** Extremes of size and number: token-id prompts at and past the context, max_tokens past it, numbers JSON
 * carries but JavaScript cannot, deep nesting, bodies over the size limit, thousands of messages, stop strings,
 * prompts and logit biases. */
import { BAD, type CaseLimits, CaseList, OK_OR_BAD } from "./case_list.ts";

/** Appends the size cases; `rand` makes the stop strings. */
export function sizeCases(list: CaseList, limits: CaseLimits, rand: () => number) {
  // Long token-id prompts.
  const ids = (n: number) => Array.from({ length: n }, (_, i) => 1 + (i % (limits.vocabSize - 1)));
  list.postJson("input_ids longer than context /generate", "/generate", {
    input_ids: ids(limits.contextLen + 5),
    sampling_params: { max_new_tokens: 2 },
  }, BAD);
  list.postJson("input_ids exactly context /generate", "/generate", {
    input_ids: ids(limits.contextLen),
    sampling_params: { max_new_tokens: 2 },
  }, BAD);
  // max_tokens beyond the context: clamped to what is left, or refused; never a hang or a 5xx.
  list.postJson("max_new_tokens beyond context /generate", "/generate", {
    input_ids: ids(limits.contextLen - 3),
    sampling_params: { max_new_tokens: limits.contextLen * 100, temperature: 0 },
  }, OK_OR_BAD);
  list.postJson("max_tokens beyond context /v1/completions", "/v1/completions", {
    prompt: ids(limits.contextLen - 3),
    max_tokens: 2 ** 31,
  }, OK_OR_BAD);
  list.postJson("max_tokens huge /v1/chat/completions", "/v1/chat/completions", {
    messages: [{ role: "user", content: "hello ".repeat(Math.max(1, limits.contextLen - 40)) }],
    max_tokens: Number.MAX_SAFE_INTEGER,
  }, OK_OR_BAD);
  // Numbers JSON can carry that JavaScript cannot: 1e400 parses as Infinity, 1e-400 as 0.
  for (const raw of ["1e400", "-1e400", "1e-400", "123456789012345678901234567890", "-0"]) {
    list.post(
      `number ${raw} as temperature`,
      "/generate",
      `{"text":"hi","sampling_params":{"temperature":${raw},"max_new_tokens":1}}`,
      raw === "1e-400" || raw === "-0" ? [200] : raw.startsWith("1234") ? OK_OR_BAD : BAD,
    );
    list.post(
      `number ${raw} as max_tokens`,
      "/v1/completions",
      `{"prompt":${JSON.stringify(ids(limits.contextLen - 3))},"max_tokens":${raw}}`,
      raw === "1e-400" || raw === "-0" ? [200] : OK_OR_BAD,
    );
  }

  // Deep nesting, in the body and inside a field.
  for (const depth of [1000, 100_000]) {
    list.post(`nested arrays depth ${depth}`, "/generate", "[".repeat(depth) + "]".repeat(depth), BAD);
    list.post(
      `nested objects depth ${depth} in sampling_params`,
      "/generate",
      `{"text":"hi","sampling_params":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`,
      OK_OR_BAD,
    );
    list.post(
      `nested content depth ${depth}`,
      "/v1/chat/completions",
      `{"messages":[{"role":"user","content":${"[".repeat(depth)}${"]".repeat(depth)}}]}`,
      BAD,
    );
  }

  // Huge bodies: over the size limit (413), and a 10 MB prompt under it (400: longer than the context, or 413).
  const over = limits.maxBodyBytes + 1024;
  list.post("body over the size limit", "/generate", `{"text":"${"a".repeat(over)}"}`, [413]);
  list.post(
    "10 MB prompt",
    "/v1/completions",
    `{"prompt":"${"word ".repeat(2 * 1024 * 1024)}","max_tokens":1}`,
    [
      400,
      413,
    ],
  );
  list.post("10 MB of whitespace", "/generate", " ".repeat(10 * 1024 * 1024) + "{}", [400, 413]);
  // A lying Content-Length needs a raw socket: hostile_test.ts sends it.

  // Thousands of messages, and a stop list with thousands of entries.
  const many = Array.from(
    { length: 5000 },
    (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `m${i}` }),
  );
  list.postJson("5000 messages", "/v1/chat/completions", { messages: many, max_tokens: 1 }, BAD);
  const stops = Array.from({ length: 5000 }, (_, i) => `stop-${i}-${Math.floor(rand() * 1e9)}`);
  list.postJson("5000 stop strings /generate", "/generate", {
    text: "hi",
    sampling_params: { max_new_tokens: 4, stop: stops },
  }, OK_OR_BAD);
  list.postJson("5000 stop strings /v1/completions", "/v1/completions", {
    prompt: "hi",
    max_tokens: 4,
    stop: stops,
  }, OK_OR_BAD);
  list.postJson("5000 stop_token_ids", "/generate", {
    text: "hi",
    sampling_params: { max_new_tokens: 4, stop_token_ids: ids(5000) },
  }, OK_OR_BAD);
  list.postJson("huge batch of prompts x n", "/generate", {
    text: Array.from({ length: 2000 }, () => "hi"),
    sampling_params: { max_new_tokens: 1, n: 128 },
  }, BAD);
  list.postJson("10000 prompts /v1/completions", "/v1/completions", {
    prompt: Array.from({ length: 10_000 }, () => "hi"),
    max_tokens: 1,
    n: 64,
  }, BAD);
  list.postJson("logit_bias with the whole vocabulary", "/generate", {
    text: "hi",
    sampling_params: {
      max_new_tokens: 1,
      logit_bias: Object.fromEntries(ids(2000).map((t) => [String(t), 1])),
    },
  }, OK_OR_BAD);
}
