import type { ServerContext } from "../context.ts";
import { ApiError, badRequest } from "../errors.ts";
import { EngineError, EngineStats } from "../engine/client.ts";
import { Status } from "../engine/ffi.ts";
import { generate, newRequestId } from "../generation.ts";
import { optionalBool, requireObject, unixNow } from "../openai/protocol.ts";
import { SAMPLING_DEFAULTS } from "../sampling.ts";
import { VERSION } from "../version.ts";

const startedAt = unixNow();

/** 200 only when a one-token generation completes in time; 503 while starting or when stuck. */
export async function handleHealth(ctx: ServerContext, timeoutMs = 20000): Promise<Response> {
  if (ctx.stopping) return new Response("The server is shutting down.", { status: 503 });
  if (!ctx.ready) return new Response("The server is starting.", { status: 503 });
  // A stalled step would also fail the one-token generation below, but only after its timeout.
  if (ctx.engine.stats().watchdog_stalled) {
    return new Response("The scheduler is stuck (see the watchdog line in the log).", { status: 503 });
  }
  const ok = await oneTokenGeneration(ctx, timeoutMs);
  return ok
    ? new Response(null, { status: 200 })
    : new Response("The engine did not generate a token in time.", { status: 503 });
}

export async function oneTokenGeneration(ctx: ServerContext, timeoutMs: number): Promise<boolean> {
  const first = ctx.info.bos_token_id ?? ctx.tokenizer.encode("hello")[0] ?? 0;
  let gen;
  try {
    gen = generate(ctx, {
      inputIds: [first],
      sampling: {
        ...SAMPLING_DEFAULTS,
        max_new_tokens: 1,
        temperature: 0,
        stop: [],
        stop_token_ids: [],
        logit_bias: {},
      },
      rid: `${HEALTH_CHECK_PREFIX}${newRequestId()}`,
    });
  } catch {
    return false;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
  const run = (async () => {
    for await (const u of gen) if (u.finish) return u.finish.type !== "abort";
    return false;
  })();
  try {
    return await Promise.race([run, timeout]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    gen.cancel();
  }
}

export function handleModels(ctx: ServerContext): Response {
  return Response.json({ object: "list", data: [modelCard(ctx)] });
}

export function handleModel(ctx: ServerContext, id: string): Response {
  if (id !== ctx.args.served_model_name) {
    throw new ApiError(404, `The model '${id}' does not exist`, "NotFoundError", "model", "model_not_found");
  }
  return Response.json(modelCard(ctx));
}

function modelCard(ctx: ServerContext) {
  return {
    id: ctx.args.served_model_name,
    object: "model",
    created: startedAt,
    owned_by: "llm-server",
    root: ctx.args.served_model_name,
    parent: null,
    max_model_len: ctx.info.context_len,
  };
}

/** GET /model_info (and /get_model_info); the router reads the paths to load the tokenizer itself. */
export function handleModelInfo(ctx: ServerContext): Response {
  const config = ctx.modelConfig;
  return Response.json({
    model_path: config.modelPath,
    tokenizer_path: config.modelPath,
    served_model_name: ctx.args.served_model_name,
    is_generation: true,
    preferred_sampling_params: null,
    weight_version: "default",
    has_image_understanding: false,
    has_audio_understanding: false,
    model_type: config.modelType,
    architectures: config.architectures.length > 0 ? config.architectures : [ctx.info.architecture],
  });
}

/** GET /get_load: SGLang's per-DP-rank load, which the router polls every second (power_of_two). */
export function handleLoad(ctx: ServerContext): Response {
  const stats = ctx.engine.stats();
  const used = stats.used_slots ?? Math.round(stats.token_usage * stats.max_total_num_tokens);
  // Prompts the engine has not started on yet hold no KV, but they are load all the same (SGLang counts them).
  let waitingTokens = 0;
  for (const live of ctx.live.values()) if (!live.prefilled) waitingTokens += live.promptTokens;
  return Response.json([{
    dp_rank: 0,
    num_reqs: stats.num_running_reqs + stats.num_queue_reqs,
    num_waiting_reqs: stats.num_queue_reqs,
    num_tokens: used + waitingTokens,
  }]);
}

export function handleServerInfo(ctx: ServerContext): Response {
  const stats = ctx.engine.stats();
  const { api_key: _secret, ...args } = ctx.args;
  return Response.json({
    ...args,
    model_path: ctx.modelConfig.modelPath,
    tokenizer_path: ctx.modelConfig.modelPath,
    dp_size: 1,
    tp_size: ctx.args.tp_size,
    max_total_num_tokens: ctx.info.max_total_num_tokens,
    max_req_input_len: ctx.info.context_len - 1,
    context_len: ctx.info.context_len,
    engine: ctx.info,
    internal_states: [{
      last_gen_throughput: stats.last_gen_throughput,
      memory_usage: {
        weight: ctx.info.weight_bytes / 2 ** 30,
        kvcache: ctx.info.kv_bytes / 2 ** 30,
        token_capacity: ctx.info.max_total_num_tokens,
      },
      num_running_reqs: stats.num_running_reqs,
      num_queue_reqs: stats.num_queue_reqs,
      token_usage: stats.token_usage,
      cache_hit_rate: stats.cache_hit_rate,
      // Requests the HTTP layer still tracks, and the KV pool's state: what reliability checks read to prove
      // nothing leaked (held_slots are pinned by requests; cached ones only by the prefix cache).
      num_live_requests: ctx.live.size,
      kv_pool: kvPool(stats),
    }],
    version: VERSION,
  });
}

function kvPool(stats: EngineStats) {
  const total = stats.max_total_num_tokens;
  const used = stats.used_slots ?? Math.round(stats.token_usage * total);
  const cached = stats.cached_slots ?? 0;
  return {
    total_slots: total,
    free_slots: stats.free_slots ?? total - used,
    used_slots: used,
    cached_slots: cached,
    // The engine's own count (used minus evictable); cached prefixes a request locks count as held.
    held_slots: stats.held_slots ?? Math.max(0, used - cached),
    num_retractions: stats.num_retractions ?? 0,
    integrity_ok: stats.integrity_ok ?? true,
  };
}

const HEALTH_CHECK_PREFIX = "HEALTH_CHECK_";

/** Health probes (one token each) are our own traffic, not a client's. */
export const isHealthCheck = (rid: string) => rid.startsWith(HEALTH_CHECK_PREFIX);

/** A flush waits for health probes rather than failing on them. */
const onlyHealthChecksLive = (ctx: ServerContext) =>
  ctx.live.size > 0 && [...ctx.live.keys()].every(isHealthCheck);

export async function handleFlushCache(ctx: ServerContext): Promise<Response> {
  for (let waitedMs = 0;; waitedMs += 20) {
    try {
      ctx.engine.flushCache();
      break;
    } catch (e) {
      if (!(e instanceof EngineError && e.status === Status.BUSY)) throw e;
      if (!onlyHealthChecksLive(ctx) || waitedMs >= 2000) {
        return new Response("Cache not flushed. Please check for pending requests.", { status: 400 });
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return new Response(
    "Cache flushed.\nPlease check backend logs for more details. (When there are running or waiting requests, the operation will not be performed.)\n",
    { status: 200 },
  );
}

export function handleAbortRequest(ctx: ServerContext, rawBody: unknown): Response {
  const body = requireObject(rawBody ?? {});
  if (optionalBool(body, "abort_all")) {
    ctx.engine.abortAll();
    return new Response(null, { status: 200 });
  }
  if (typeof body.rid !== "string") throw badRequest("rid must be a string (or give abort_all: true)", "rid");
  for (const [rid, live] of [...ctx.live]) {
    // SGLang's siblings (n > 1) carry the parent rid plus a suffix; aborting the parent aborts them.
    if (rid === body.rid || rid.startsWith(`${body.rid}_`)) live.abort();
  }
  return new Response(null, { status: 200 });
}

export function handleMetrics(ctx: ServerContext): Response {
  if (!ctx.args.enable_metrics) {
    throw new ApiError(404, "Metrics are off; start the server with --enable-metrics.");
  }
  return new Response(ctx.metrics.render(ctx.args.served_model_name, ctx.engine.stats()), {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

export function handleTokenize(ctx: ServerContext, rawBody: unknown): Response {
  const body = requireObject(rawBody);
  const add = optionalBool(body, "add_special_tokens") ?? true;
  const prompt = body.prompt ?? body.text;
  const one = (p: unknown) => {
    if (typeof p !== "string") throw badRequest("prompt must be a string or a list of strings", "prompt");
    return ctx.tokenizer.encode(p, add);
  };
  if (Array.isArray(prompt)) {
    const tokens = prompt.map(one);
    return Response.json({ tokens, count: tokens.map((t) => t.length), max_model_len: ctx.info.context_len });
  }
  const tokens = one(prompt);
  return Response.json({ tokens, count: tokens.length, max_model_len: ctx.info.context_len });
}

export function handleDetokenize(ctx: ServerContext, rawBody: unknown): Response {
  const body = requireObject(rawBody);
  const tokens = body.tokens;
  const skip = optionalBool(body, "skip_special_tokens") ?? true;
  const valid = (t: unknown): t is number[] =>
    Array.isArray(t) && t.every((x) => Number.isInteger(x) && x >= 0 && x < ctx.info.vocab_size);
  if (valid(tokens)) return Response.json({ text: ctx.tokenizer.decode(tokens, skip) });
  if (Array.isArray(tokens) && tokens.every(valid)) {
    return Response.json({ text: (tokens as number[][]).map((t) => ctx.tokenizer.decode(t, skip)) });
  }
  throw badRequest(
    `tokens must be a list of token ids in [0, ${ctx.info.vocab_size}) or a list of such lists`,
    "tokens",
  );
}
