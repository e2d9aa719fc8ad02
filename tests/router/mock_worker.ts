// A stand-in SGLang worker for checking what sglang-router asks of a worker, before the real server exists.
// Run: deno run --allow-net tests/router/mock_worker.ts --port 31001 [--delay-ms 200]
// Every request it receives is written to stdout as one JSON line {"event":"request",method,path,rid}, so a
// test can read exactly which calls the router made. Answers use SGLang's field names. The generated text is a
// pure function of the prompt, so every mock gives the same answer, and `cached_tokens` counts the longest
// prefix (in characters) this process has already seen, the way a radix cache would report it.

type Json = Record<string, unknown>;

const args = parseArgs(Deno.args);
const port = Number(args.get("port") ?? "31001");
const delayMs = Number(args.get("delay-ms") ?? "0");
const modelPath = args.get("model-path") ?? "mock-model";
const seenPrompts: string[] = [];
let running = 0;

function parseArgs(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith("--")) out.set(argv[i].slice(2), argv[i + 1] ?? "");
  }
  return out;
}

function log(event: Json) {
  console.log(JSON.stringify({ port, time: Date.now(), ...event }));
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function longestSeenPrefix(prompt: string): number {
  let best = 0;
  for (const seen of seenPrompts) {
    let n = 0;
    while (n < seen.length && n < prompt.length && seen[n] === prompt[n]) n++;
    best = Math.max(best, n);
  }
  return best;
}

// Deterministic across processes: the same prompt always gives the same text on every mock.
function complete(prompt: string, maxNewTokens: number) {
  const words = prompt.split(/\s+/).filter((w) => w.length > 0).reverse();
  const outputIds = [...prompt].slice(0, Math.max(1, Math.min(maxNewTokens, 16))).map((c) => c.charCodeAt(0));
  const text = " " + words.slice(0, Math.max(1, Math.min(maxNewTokens, 8))).join(" ");
  const cached = longestSeenPrefix(prompt);
  seenPrompts.push(prompt);
  return { text, outputIds, cached, promptTokens: prompt.length };
}

async function generation(prompt: string, maxNewTokens: number) {
  running++;
  try {
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    return complete(prompt, maxNewTokens);
  } finally {
    running--;
  }
}

function metaInfo(rid: string, g: ReturnType<typeof complete>) {
  return {
    id: rid,
    finish_reason: { type: "length", length: g.outputIds.length },
    prompt_tokens: g.promptTokens,
    completion_tokens: g.outputIds.length,
    cached_tokens: g.cached,
    e2e_latency: delayMs / 1000,
  };
}

function sse(events: unknown[]): Response {
  const body = events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + "data: [DONE]\n\n";
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

async function handleGenerate(body: Json): Promise<Response> {
  const params = (body.sampling_params ?? {}) as Json;
  const maxNew = Number(params.max_new_tokens ?? 128);
  const rid = typeof body.rid === "string" ? body.rid : randomId();
  const prompt = typeof body.text === "string"
    ? body.text
    : Array.isArray(body.input_ids)
    ? (body.input_ids as number[]).join(" ")
    : null;
  if (prompt === null) {
    return json({ object: "error", message: "text or input_ids required", code: 400 }, 400);
  }
  const g = await generation(prompt, maxNew);
  const out = { text: g.text, output_ids: g.outputIds, meta_info: metaInfo(rid, g) };
  return body.stream ? sse([out]) : json(out);
}

async function handleChat(body: Json): Promise<Response> {
  const messages = (body.messages ?? []) as { role: string; content: string }[];
  const prompt = messages.map((m) => `<${m.role}>${m.content}`).join("");
  const g = await generation(prompt, Number(body.max_tokens ?? 128));
  const usage = {
    prompt_tokens: g.promptTokens,
    completion_tokens: g.outputIds.length,
    total_tokens: g.promptTokens + g.outputIds.length,
    prompt_tokens_details: { cached_tokens: g.cached },
  };
  const id = randomId();
  const created = Math.floor(Date.now() / 1000);
  if (body.stream) {
    const chunk = (delta: Json, finish: string | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model: body.model ?? "default",
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    });
    return sse([
      chunk({ role: "assistant", content: "" }, null),
      chunk({ content: g.text }, null),
      chunk({}, "length"),
    ]);
  }
  return json({
    id,
    object: "chat.completion",
    created,
    model: body.model ?? "default",
    choices: [{
      index: 0,
      message: { role: "assistant", content: g.text, tool_calls: null },
      logprobs: null,
      finish_reason: "length",
      matched_stop: null,
    }],
    usage,
  });
}

async function handleCompletion(body: Json): Promise<Response> {
  const prompt = String(body.prompt ?? "");
  const g = await generation(prompt, Number(body.max_tokens ?? 16));
  return json({
    id: randomId(),
    object: "text_completion",
    created: Math.floor(Date.now() / 1000),
    model: body.model ?? "default",
    choices: [{ index: 0, text: g.text, logprobs: null, finish_reason: "length", matched_stop: null }],
    usage: {
      prompt_tokens: g.promptTokens,
      completion_tokens: g.outputIds.length,
      total_tokens: g.promptTokens + g.outputIds.length,
      prompt_tokens_details: { cached_tokens: g.cached },
    },
  });
}

const serverInfo = () => ({
  model_path: modelPath,
  tokenizer_path: modelPath,
  served_model_name: modelPath,
  dp_size: 1,
  tp_size: 1,
  max_total_num_tokens: 4096,
  max_req_input_len: 4096,
  max_running_requests: 64,
  internal_states: [{
    last_gen_throughput: 0,
    memory_usage: { weight: 0, kvcache: 0, token_capacity: 4096 },
  }],
  version: "0.0.0-mock",
});

const modelInfo = () => ({
  model_path: modelPath,
  tokenizer_path: modelPath,
  is_generation: true,
  model_type: "llama",
  architectures: ["LlamaForCausalLM"],
});

async function handle(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const text = req.method === "POST" ? await req.text() : "";
  let body: Json = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    log({ event: "request", method: req.method, path: url.pathname, bad_json: true });
    return json({ object: "error", message: "invalid JSON body", code: 400 }, 400);
  }
  log({
    event: "request",
    method: req.method,
    path: url.pathname,
    rid: body.rid ?? null,
    ...(args.has("log-bodies") ? { body } : {}),
  });
  switch (url.pathname) {
    case "/health":
      return new Response("", { status: 200 });
    case "/health_generate":
      await generation("health", 1);
      return new Response("", { status: 200 });
    case "/get_server_info":
    case "/server_info":
      return json(serverInfo());
    case "/get_model_info":
    case "/model_info":
      return json(modelInfo());
    case "/v1/models":
      return json({
        object: "list",
        data: [{
          id: modelPath,
          object: "model",
          created: 0,
          owned_by: "sglang",
          root: modelPath,
          max_model_len: 4096,
        }],
      });
    case "/get_load":
      return json([{ dp_rank: 0, num_reqs: running, num_waiting_reqs: 0, num_tokens: running * 64 }]);
    case "/flush_cache":
      seenPrompts.length = 0;
      return new Response(
        "Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting requests, the operation will not be performed.)\n",
      );
    case "/abort_request":
      return new Response("", { status: 200 });
    case "/metrics":
      return new Response(`sglang:num_running_reqs{model_name="${modelPath}"} ${running}\n`);
    case "/generate":
      return await handleGenerate(body);
    case "/v1/chat/completions":
      return await handleChat(body);
    case "/v1/completions":
      return await handleCompletion(body);
    default:
      return json({ object: "error", message: `Not Found: ${url.pathname}`, code: 404 }, 404);
  }
}

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => log({ event: "listening" }) }, handle);
