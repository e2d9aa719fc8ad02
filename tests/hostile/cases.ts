/**
 * Generated hostile requests: malformed and truncated JSON, wrong types, missing and unknown fields, extreme numbers,
 * invalid UTF-8, lone surrogates, control characters, deep nesting, huge bodies and lists, over-long prompts,
 * special-token text, empty messages, every endpoint with every method. Each case says which statuses are right;
 * a 4xx must carry the documented error body ({object: "error", message, type, param, code}).
 * Deterministic: the mutations come from a seeded generator, so a failure names a case that can be replayed.
 */

export interface HostileCase {
  name: string;
  method: string;
  path: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
  /** Statuses that are a correct answer. */
  expect: number[];
}

export interface CaseLimits {
  contextLen: number;
  vocabSize: number;
  maxBodyBytes: number;
}

/** Mulberry32: small, seeded, good enough to pick mutations. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BAD = [400];
/** Accepted as valid, or refused as a bad request: both are documented answers, a 5xx never is. */
const OK_OR_BAD = [200, 400];

/** A valid, cheap body per JSON endpoint (one or two generated tokens). */
function validBodies(): Record<string, Record<string, unknown>> {
  return {
    "/generate": { text: "Once upon a time", sampling_params: { max_new_tokens: 2, temperature: 0 } },
    "/v1/chat/completions": { model: "m", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 },
    "/v1/completions": { model: "m", prompt: "Once upon a time", max_tokens: 2 },
    "/tokenize": { prompt: "hello" },
    "/v1/tokenize": { prompt: "hello" },
    "/detokenize": { tokens: [1, 2, 3] },
    "/v1/detokenize": { tokens: [1, 2, 3] },
    "/abort_request": { rid: "no-such-request" },
  };
}

const MALFORMED = [
  "{",
  "}",
  "[",
  '{"a":',
  '{"a" 1}',
  "{'a': 1}",
  '{"a": 1,}',
  "[1, 2,]",
  '{"a": tru}',
  '{"a": nul}',
  "NaN",
  '{"temperature": NaN}',
  '{"temperature": Infinity}',
  '{"temperature": -Infinity}',
  '{"a": 01}',
  '{"a": 1.}',
  '{"a": .5}',
  '{"a": +1}',
  '{"a": 0x10}',
  '{"a": "unterminated}',
  '{"a": "bad escape \\q"}',
  '{"a": "\\u12"}',
  '{"a": "raw\u0001control"}',
  '{"a": "raw\nnewline"}',
  "// comment\n{}",
  '{"a": 1} trailing',
  '{"a": 1}{"b": 2}',
  "\u0000",
  "undefined",
  "\ufeff{}",
  '{"a":[}',
  '{"a":{]}',
];

/** Values of every JSON type, to put where another type belongs. */
const WRONG_TYPES: unknown[] = ["text", 7, -1, 1.5, true, false, [], [1], {}, { x: 1 }];

/** Field → values that are wrong for it (beyond its wrong types). */
const BAD_VALUES: Record<string, Record<string, unknown[]>> = {
  "/generate": {
    text: [[], [1, 2], [null], { a: 1 }, 5, true],
    input_ids: [[], [-1], [1.5], ["1"], [[]], [[1], "x"], [1e12], [2 ** 53], { a: 1 }, "1 2 3"],
    sampling_params: ["x", 5, [1], true],
    "sampling_params.temperature": [-1, -1e-9, "0", true, [0], {}],
    "sampling_params.top_p": [0, -0.5, 1.0001, 2, 1e308, "1"],
    "sampling_params.top_k": [0, -2, -1e9, 1.5, "5"],
    "sampling_params.min_p": [-0.1, 1.5, "0"],
    "sampling_params.max_new_tokens": [-1, -1e18, 1.5, "10", true, [2]],
    "sampling_params.min_new_tokens": [-1, 1e6, 1.5],
    "sampling_params.n": [0, -1, 129, 1e9, 1.5],
    "sampling_params.frequency_penalty": [-2.5, 3, 1e308, -1e308],
    "sampling_params.presence_penalty": [-2.5, 3],
    "sampling_params.repetition_penalty": [0, -1, 2.5, 1e308],
    "sampling_params.stop": [5, [5], [null], { a: "b" }, [["x"]]],
    "sampling_params.stop_token_ids": [[-1], [1.5], ["1"], [1e12], 5, "x"],
    "sampling_params.logit_bias": [[1], "x", { "-1": 1 }, { "x": 1 }, { "1e99": 1 }, { "1": "x" }, {
      "1": null,
    }],
    "sampling_params.json_schema": ["{}"],
    "sampling_params.regex": ["a+"],
    "sampling_params.sampling_seed": [1.5, "1"],
    stream: ["yes", 1, [], {}],
    return_logprob: ["yes", 1],
    top_logprobs_num: [-1, 21, 1e9, 1.5, "2"],
    logprob_start_len: [-2, 1.5, "0"],
    rid: [5, [5], { a: 1 }, true],
    return_hidden_states: [true],
  },
  "/v1/chat/completions": {
    messages: [
      [],
      "hi",
      [[]],
      [null],
      [5],
      [{}],
      [{ role: 5, content: "x" }],
      [{ role: "user", content: 5 }],
      [{
        role: "user",
        content: { text: "x" },
      }],
      [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:," } }] }],
      [{
        role: "user",
        content: [5],
      }],
      [{ role: "user", content: [{ type: "text" }] }],
      [{ role: "user", content: [{ type: "text", text: 5 }] }],
    ],
    model: [5, [], {}, true],
    max_tokens: [-1, 1.5, "10", [1], -1e18],
    max_completion_tokens: [-1, 1.5, "10"],
    temperature: [-1, "0.5", [], {}],
    top_p: [0, 2, -1],
    n: [0, -1, 129, 1e9],
    stop: [5, [5], [null], {}],
    stream: ["true", 1],
    stream_options: ["x", [], 5, { include_usage: "yes" }],
    logprobs: ["yes", 1],
    top_logprobs: [-1, 21, 1.5],
    seed: [1.5, "1"],
    logit_bias: [[1], { x: 1 }, { "1": "x" }],
    response_format: [{ type: "json_schema", json_schema: { name: "x", schema: {} } }],
    tools: [5, "x", [5], [{ type: "function" }]],
    tool_choice: [5, [], { type: "nope" }],
    rid: [5, {}],
    continue_final_message: [true],
  },
  "/v1/completions": {
    prompt: [[], [[]], 5, true, {}, [null], [1.5], [-1], [[1], "x"], [1e12]],
    max_tokens: [-1, 1.5, "10"],
    temperature: [-1, "1"],
    n: [0, 129],
    echo: ["yes", 1],
    logprobs: [-1, 21, 1.5, "2"],
    suffix: ["x"],
    stop: [5, [5]],
    stream: ["no"],
    rid: [5],
  },
  "/tokenize": { prompt: [5, [5], {}, true, [null]], add_special_tokens: ["yes", 1] },
  "/v1/tokenize": { prompt: [5, [5], {}] },
  "/detokenize": {
    tokens: [5, "x", [-1], [1.5], ["1"], [1e12], [[1], 2], [[-1]], {}],
    skip_special_tokens: ["yes", 1],
  },
  "/v1/detokenize": { tokens: [[-1], [1.5], "x"] },
  "/abort_request": { rid: [5, [], {}, true], abort_all: ["yes", 1] },
};

function setPath(body: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> {
  const copy = structuredClone(body);
  const keys = path.split(".");
  let at = copy as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) {
    if (at[k] === undefined || at[k] === null || typeof at[k] !== "object") at[k] = {};
    at = at[k] as Record<string, unknown>;
  }
  at[keys[keys.length - 1]] = value;
  return copy;
}

const JSON_HEADERS = { "content-type": "application/json" };

/** Every case, in a fixed order for a given seed. */
export function hostileCases(limits: CaseLimits, seed = 1): HostileCase[] {
  const rand = seededRandom(seed);
  const cases: HostileCase[] = [];
  const bodies = validBodies();
  const post = (
    name: string,
    path: string,
    body: string | Uint8Array,
    expect: number[],
    headers: Record<string, string> = JSON_HEADERS,
  ) => cases.push({ name, method: "POST", path, body, expect, headers });
  const postJson = (name: string, path: string, value: unknown, expect: number[]) =>
    post(name, path, JSON.stringify(value), expect);

  for (const [path, valid] of Object.entries(bodies)) {
    // The valid body itself: the baseline every mutation departs from.
    postJson(`valid ${path}`, path, valid, [200]);
    for (const [i, text] of MALFORMED.entries()) post(`malformed #${i} ${path}`, path, text, BAD);
    // Truncated at seeded cut points (never at the end, never empty: an empty body means {} here).
    const full = JSON.stringify(valid);
    const cuts = new Set<number>();
    while (cuts.size < Math.min(8, full.length - 2)) cuts.add(1 + Math.floor(rand() * (full.length - 2)));
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      post(`truncated at ${cut} ${path}`, path, full.slice(0, cut), BAD);
    }
    // Top-level non-objects.
    for (const v of [null, 5, "x", [valid], true]) {
      postJson(`top-level ${JSON.stringify(v)} ${path}`, path, v, BAD);
    }
    // Unknown fields are ignored, as OpenAI clients send vendor extras.
    postJson(`unknown fields ${path}`, path, { ...valid, zz_unknown: { deep: [1, 2] }, another: null }, [
      200,
    ]);
    // Wrong types and bad values per field.
    for (const [field, values] of Object.entries(BAD_VALUES[path] ?? {})) {
      for (const v of values) {
        postJson(`${path} ${field}=${JSON.stringify(v)}`, path, setPath(valid, field, v), BAD);
      }
    }
    for (const field of Object.keys(valid)) {
      for (const v of WRONG_TYPES) {
        const ok = typeCaseMayPass(path, field, v, valid[field]);
        postJson(
          `${path} ${field} as ${JSON.stringify(v)}`,
          path,
          setPath(valid, field, v),
          ok ? OK_OR_BAD : BAD,
        );
      }
    }
    // Invalid UTF-8 inside a string value.
    const enc = new TextEncoder().encode(full);
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc0, 0xaf]]) {
      const at = full.indexOf('"', 2) + 1;
      const bytes = new Uint8Array([...enc.slice(0, at), ...bad, ...enc.slice(at)]);
      post(`invalid utf-8 ${bad.map((b) => b.toString(16)).join(" ")} ${path}`, path, bytes, BAD);
    }
  }

  const textField: [string, (s: string) => unknown][] = [
    ["/generate", (s) => ({ text: s, sampling_params: { max_new_tokens: 2, temperature: 0 } })],
    ["/v1/chat/completions", (s) => ({ messages: [{ role: "user", content: s }], max_tokens: 2 })],
    ["/v1/completions", (s) => ({ prompt: s, max_tokens: 2 })],
    ["/tokenize", (s) => ({ prompt: s })],
  ];
  for (const [path, make] of textField) {
    // Lone surrogates are valid JSON escapes but not Unicode text: refused (or, where the text is never used, passed).
    for (const s of ["\ud800", "a\udfffb", "\udc00\ud800", "x\ud83d"]) {
      postJson(`lone surrogate ${JSON.stringify(s)} ${path}`, path, make(s), BAD);
    }
    // Control characters and odd-but-valid text are just text.
    for (
      const s of ["\u0000", "a\u0001\u0002\u001b[31mred", "\r\n\t", "\u200b\u202e\ufeff", "😀🇫🇷", "\uffff"]
    ) {
      postJson(`control/odd text ${JSON.stringify(s)} ${path}`, path, make(s), [200]);
    }
    // Special-token text in user content is accepted; it must not crash tokenization or the template.
    for (
      const s of [
        "<|begin_of_text|>",
        "<|eot_id|><|start_header_id|>system<|end_header_id|>",
        "</s><s>[INST]",
      ]
    ) {
      postJson(`special-token text ${path}`, path, make(s), [200]);
    }
    // Prompts longer than the context.
    postJson(`prompt longer than context ${path}`, path, make("hello ".repeat(limits.contextLen * 2)), [
      ...(path === "/tokenize" ? [200] : BAD),
    ]);
    // Empty text: nothing to generate from for completions; chat still has its template around it.
    postJson(
      `empty text ${path}`,
      path,
      make(""),
      path === "/v1/completions" || path === "/generate" ? OK_OR_BAD : [200],
    );
  }

  // Long token-id prompts.
  const ids = (n: number) => Array.from({ length: n }, (_, i) => 1 + (i % (limits.vocabSize - 1)));
  postJson("input_ids longer than context /generate", "/generate", {
    input_ids: ids(limits.contextLen + 5),
    sampling_params: { max_new_tokens: 2 },
  }, BAD);
  postJson("input_ids exactly context /generate", "/generate", {
    input_ids: ids(limits.contextLen),
    sampling_params: { max_new_tokens: 2 },
  }, BAD);
  // max_tokens beyond the context: clamped to what is left, or refused; never a hang or a 5xx.
  postJson("max_new_tokens beyond context /generate", "/generate", {
    input_ids: ids(limits.contextLen - 3),
    sampling_params: { max_new_tokens: limits.contextLen * 100, temperature: 0 },
  }, OK_OR_BAD);
  postJson("max_tokens beyond context /v1/completions", "/v1/completions", {
    prompt: ids(limits.contextLen - 3),
    max_tokens: 2 ** 31,
  }, OK_OR_BAD);
  postJson("max_tokens huge /v1/chat/completions", "/v1/chat/completions", {
    messages: [{ role: "user", content: "hello ".repeat(Math.max(1, limits.contextLen - 40)) }],
    max_tokens: Number.MAX_SAFE_INTEGER,
  }, OK_OR_BAD);
  // Numbers JSON can carry that JavaScript cannot: 1e400 parses as Infinity, 1e-400 as 0.
  for (const raw of ["1e400", "-1e400", "1e-400", "123456789012345678901234567890", "-0"]) {
    post(
      `number ${raw} as temperature`,
      "/generate",
      `{"text":"hi","sampling_params":{"temperature":${raw},"max_new_tokens":1}}`,
      raw === "1e-400" || raw === "-0" ? [200] : raw.startsWith("1234") ? OK_OR_BAD : BAD,
    );
    post(
      `number ${raw} as max_tokens`,
      "/v1/completions",
      `{"prompt":${JSON.stringify(ids(limits.contextLen - 3))},"max_tokens":${raw}}`,
      raw === "1e-400" || raw === "-0" ? [200] : OK_OR_BAD,
    );
  }

  // Deep nesting, in the body and inside a field.
  for (const depth of [1000, 100_000]) {
    post(`nested arrays depth ${depth}`, "/generate", "[".repeat(depth) + "]".repeat(depth), BAD);
    post(
      `nested objects depth ${depth} in sampling_params`,
      "/generate",
      `{"text":"hi","sampling_params":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`,
      OK_OR_BAD,
    );
    post(
      `nested content depth ${depth}`,
      "/v1/chat/completions",
      `{"messages":[{"role":"user","content":${"[".repeat(depth)}${"]".repeat(depth)}}]}`,
      BAD,
    );
  }

  // Huge bodies: over the size limit (413), and a 10 MB prompt under it (400: longer than the context, or 413).
  const over = limits.maxBodyBytes + 1024;
  post("body over the size limit", "/generate", `{"text":"${"a".repeat(over)}"}`, [413]);
  post("10 MB prompt", "/v1/completions", `{"prompt":"${"word ".repeat(2 * 1024 * 1024)}","max_tokens":1}`, [
    400,
    413,
  ]);
  post("10 MB of whitespace", "/generate", " ".repeat(10 * 1024 * 1024) + "{}", [400, 413]);
  // A lying Content-Length needs a raw socket: hostile_test.ts sends it.

  // Thousands of messages, and a stop list with thousands of entries.
  const many = Array.from(
    { length: 5000 },
    (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `m${i}` }),
  );
  postJson("5000 messages", "/v1/chat/completions", { messages: many, max_tokens: 1 }, BAD);
  const stops = Array.from({ length: 5000 }, (_, i) => `stop-${i}-${Math.floor(rand() * 1e9)}`);
  postJson("5000 stop strings /generate", "/generate", {
    text: "hi",
    sampling_params: { max_new_tokens: 4, stop: stops },
  }, OK_OR_BAD);
  postJson("5000 stop strings /v1/completions", "/v1/completions", {
    prompt: "hi",
    max_tokens: 4,
    stop: stops,
  }, OK_OR_BAD);
  postJson("5000 stop_token_ids", "/generate", {
    text: "hi",
    sampling_params: { max_new_tokens: 4, stop_token_ids: ids(5000) },
  }, OK_OR_BAD);
  postJson("huge batch of prompts x n", "/generate", {
    text: Array.from({ length: 2000 }, () => "hi"),
    sampling_params: { max_new_tokens: 1, n: 128 },
  }, BAD);
  postJson("10000 prompts /v1/completions", "/v1/completions", {
    prompt: Array.from({ length: 10_000 }, () => "hi"),
    max_tokens: 1,
    n: 64,
  }, BAD);
  postJson("logit_bias with the whole vocabulary", "/generate", {
    text: "hi",
    sampling_params: {
      max_new_tokens: 1,
      logit_bias: Object.fromEntries(ids(2000).map((t) => [String(t), 1])),
    },
  }, OK_OR_BAD);

  // Empty messages and odd roles.
  postJson("empty messages", "/v1/chat/completions", { messages: [] }, BAD);
  postJson("message with empty content", "/v1/chat/completions", {
    messages: [{ role: "user", content: "" }],
    max_tokens: 1,
  }, [200]);
  postJson("message with null content", "/v1/chat/completions", {
    messages: [{ role: "user", content: null }],
    max_tokens: 1,
  }, OK_OR_BAD);
  postJson(
    "message without content",
    "/v1/chat/completions",
    { messages: [{ role: "user" }], max_tokens: 1 },
    OK_OR_BAD,
  );
  postJson("unknown role", "/v1/chat/completions", {
    messages: [{ role: "wizard", content: "x" }],
    max_tokens: 1,
  }, OK_OR_BAD);
  postJson("only a system message", "/v1/chat/completions", {
    messages: [{ role: "system", content: "x" }],
    max_tokens: 1,
  }, OK_OR_BAD);
  postJson("empty body object /generate", "/generate", {}, BAD);
  postJson("empty body object /v1/chat/completions", "/v1/chat/completions", {}, BAD);
  postJson("empty body object /v1/completions", "/v1/completions", {}, BAD);
  post("empty body /v1/chat/completions", "/v1/chat/completions", "", BAD);

  // Every endpoint with every method, and paths that are not endpoints.
  const paths = [
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/models/m",
    "/model_info",
    "/get_model_info",
    "/server_info",
    "/get_server_info",
    "/get_load",
    "/health",
    "/health_generate",
    "/flush_cache",
    "/abort_request",
    "/metrics",
    "/tokenize",
    "/v1/tokenize",
    "/detokenize",
    "/v1/detokenize",
  ];
  const methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
  const bodyRoutes = new Set([
    "/generate",
    "/v1/chat/completions",
    "/v1/completions",
    "/abort_request",
    "/tokenize",
    "/v1/tokenize",
    "/detokenize",
    "/v1/detokenize",
  ]);
  const getAndPost = new Set(["/health", "/health_generate", "/flush_cache"]);
  for (const path of paths) {
    for (const method of methods) {
      let expect: number[];
      if (method === "OPTIONS") expect = [204];
      else if (path === "/flush_cache") expect = method === "GET" || method === "POST" ? [200, 400] : [405];
      else if (getAndPost.has(path)) expect = method === "GET" || method === "POST" ? [200] : [405];
      else if (bodyRoutes.has(path)) expect = method === "POST" ? BAD : [405]; // POST without a body: required fields missing
      else if (path === "/metrics") expect = method === "GET" ? [200, 404] : [405];
      else if (path === "/v1/models/m") expect = method === "GET" ? [404] : [405];
      else expect = method === "GET" ? [200] : [405];
      if (path === "/abort_request" && method === "POST") expect = BAD;
      cases.push({ name: `${method} ${path}`, method, path, expect });
    }
  }
  for (
    const path of [
      "/",
      "/v2/chat",
      "/generate/x",
      "/../etc/passwd",
      "/%00",
      "/v1/models/%E0%A4%A",
      "/v1/models/%",
      "/" + "a".repeat(8000),
      "/v1//chat/completions",
    ]
  ) {
    for (const method of ["GET", "POST"]) {
      // Under /v1/models/ a GET route exists, so another method is a 405 there.
      const expect = path.startsWith("/v1/models/") && method !== "GET" ? [405] : [404];
      cases.push({ name: `${method} ${path.slice(0, 40)}`, method, path, expect });
    }
  }
  return cases;
}

/** Whether putting `v` in place of `field` may be fine (e.g. a number where a number was). */
function typeCaseMayPass(path: string, field: string, v: unknown, original: unknown): boolean {
  if (typeof v === typeof original && Array.isArray(v) === Array.isArray(original)) return true;
  // Lists of strings/ids are valid prompts; tokens [1] is a valid id list; an empty sampling_params object is fine.
  if (path === "/generate" && field === "sampling_params" && typeof v === "object" && !Array.isArray(v)) {
    return true;
  }
  if (path === "/generate" && field === "text" && Array.isArray(v)) return false;
  if ((path === "/v1/completions" && field === "prompt") && JSON.stringify(v) === "[1]") return true;
  if ((path.endsWith("detokenize") && field === "tokens") && JSON.stringify(v) === "[1]") return true;
  if (path === "/abort_request") return true;
  if (path.endsWith("/tokenize") && field === "prompt" && Array.isArray(v) && v.length === 0) return true;
  return false;
}
