import type { ServerContext } from "../context.ts";
import { ApiError, badRequest } from "../errors.ts";
import type { FinishReason, GenerationUpdate } from "../generation.ts";
import { parseSamplingParams, SamplingParams } from "../sampling.ts";
import { tokenBytes } from "../text/detokenizer.ts";

/** Fields shared by /v1/chat/completions and /v1/completions, mapped onto SGLang's sampling params. */
export interface OpenAICommon {
  model: string;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  sampling: SamplingParams;
  user: string | null;
}

export function requireObject(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw badRequest("The request body must be a JSON object.");
  }
  return body as Record<string, unknown>;
}

export function optionalBool(body: Record<string, unknown>, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw badRequest(`${key} must be a boolean, got ${JSON.stringify(v)}`, key);
  return v;
}

/**
 * Fields SGLang's router always adds to the requests it forwards (with false/true defaults). Their default
 * values are accepted and mean nothing here; a value asking for something this server cannot do is a 400,
 * not a silently different answer.
 */
const UNSUPPORTED_WHEN_TRUE = [
  "return_hidden_states",
  "continue_final_message",
  "background",
  "return_bytes",
];

export function rejectUnsupportedOptions(body: Record<string, unknown>): void {
  for (const key of UNSUPPORTED_WHEN_TRUE) {
    if (optionalBool(body, key) === true) throw badRequest(`${key} is not supported by this server`, key);
  }
}

export function optionalInt(
  body: Record<string, unknown>,
  key: string,
  min: number,
  max = Infinity,
): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw badRequest(`${key} must be an integer, got ${JSON.stringify(v)}`, key);
  }
  if (v < min || v > max) throw badRequest(`${key} must be in [${min}, ${max}], got ${v}`, key);
  return v;
}

export function parseCommon(
  ctx: ServerContext,
  body: Record<string, unknown>,
  maxTokensKeys: string[],
): OpenAICommon {
  if (body.model !== undefined && body.model !== null && typeof body.model !== "string") {
    throw badRequest(`model must be a string, got ${JSON.stringify(body.model)}`, "model");
  }
  const stream = optionalBool(body, "stream") ?? false;
  let includeUsage = ctx.args.stream_response_default_include_usage;
  let continuousUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object" || Array.isArray(so)) {
      throw badRequest("stream_options must be an object", "stream_options");
    }
    if (!stream) throw badRequest("stream_options is only allowed when stream is true", "stream_options");
    includeUsage = optionalBool(so as Record<string, unknown>, "include_usage") ?? includeUsage;
    continuousUsage = optionalBool(so as Record<string, unknown>, "continuous_usage_stats") ?? false;
  }
  let maxTokens: unknown = undefined;
  let maxTokensKey = maxTokensKeys[0];
  for (const key of maxTokensKeys) {
    if (body[key] !== undefined && body[key] !== null) [maxTokens, maxTokensKey] = [body[key], key];
  }
  const raw: Record<string, unknown> = {
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    min_p: body.min_p,
    frequency_penalty: body.frequency_penalty,
    presence_penalty: body.presence_penalty,
    repetition_penalty: body.repetition_penalty,
    max_new_tokens: maxTokens,
    min_new_tokens: body.min_tokens,
    stop: body.stop,
    stop_token_ids: body.stop_token_ids,
    n: body.n,
    ignore_eos: body.ignore_eos,
    skip_special_tokens: body.skip_special_tokens,
    spaces_between_special_tokens: body.spaces_between_special_tokens,
    no_stop_trim: body.no_stop_trim,
    logit_bias: body.logit_bias,
    sampling_seed: body.seed,
    regex: body.regex,
    ebnf: body.ebnf,
    json_schema: jsonSchemaOf(body.response_format),
  };
  let sampling: SamplingParams;
  try {
    sampling = parseSamplingParams(raw, ctx.info.vocab_size, "");
  } catch (e) {
    // OpenAI callers know max_tokens, min_tokens and seed, not SGLang's names for them.
    const openaiName: Record<string, string> = {
      max_new_tokens: maxTokensKey,
      min_new_tokens: "min_tokens",
      sampling_seed: "seed",
    };
    if (e instanceof ApiError && e.param !== null && openaiName[e.param]) {
      const name = openaiName[e.param];
      throw badRequest(e.message.replaceAll(e.param, name).replaceAll("max_new_tokens", maxTokensKey), name);
    }
    throw e;
  }
  // No max_tokens: run to the end of the context as SGLang does, but at most --default-max-tokens (as
  // llama.cpp's server bounds it by its 4096-token default context), so a model that never says EOS
  // cannot hold a client for hours. -1 lifts the bound.
  if (maxTokens === undefined) {
    const untilContextEnd = Math.max(1, ctx.info.context_len - 1);
    const bound = ctx.args.default_max_tokens;
    sampling.max_new_tokens = bound > 0 ? Math.min(bound, untilContextEnd) : untilContextEnd;
  }
  if (
    body.best_of !== undefined && body.best_of !== null && body.best_of !== sampling.n && body.best_of !== 1
  ) {
    throw badRequest("best_of is not supported", "best_of");
  }
  return {
    model: typeof body.model === "string" ? body.model : ctx.args.served_model_name,
    stream,
    includeUsage,
    continuousUsage,
    sampling,
    user: typeof body.user === "string" ? body.user : null,
  };
}

function jsonSchemaOf(format: unknown): unknown {
  if (format === undefined || format === null) return undefined;
  if (typeof format !== "object") throw badRequest("response_format must be an object", "response_format");
  const type = (format as { type?: unknown }).type;
  if (type === "text") return undefined;
  return format;
}

export function finishReasonName(f: FinishReason): string {
  return f.type;
}

export function matchedStop(f: FinishReason): number | string | null {
  return f.type === "stop" ? f.matched : null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number } | null;
}

/** Usage over choices; the prompt counts once per distinct prompt, not once per sibling (n). */
export function usageOf(ctx: ServerContext, updates: GenerationUpdate[], n: number): Usage {
  let prompt = 0, completion = 0, cached = 0;
  updates.forEach((u, i) => {
    completion += u.completionTokens;
    if (i % n === 0) {
      prompt += u.promptTokens;
      cached += u.cachedTokens;
    }
  });
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: ctx.args.enable_cache_report ? { cached_tokens: cached } : null,
  };
}

export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

/** One chat logprob entry (OpenAI format) from a token id and its logprob/top list. */
export function chatLogprobEntry(
  ctx: ServerContext,
  id: number,
  logprob: number,
  top: [number, number][] | undefined,
) {
  return {
    token: ctx.tokenizer.tokenText(id),
    bytes: tokenBytes(ctx.tokenizer, id),
    logprob,
    top_logprobs: (top ?? []).map(([tid, lp]) => ({
      token: ctx.tokenizer.tokenText(tid),
      bytes: tokenBytes(ctx.tokenizer, tid),
      logprob: lp,
    })),
  };
}
