import type { ServerContext } from "../context.ts";
import { badRequest } from "../errors.ts";
import {
  checkSequenceCount,
  generate,
  Generation,
  GenerationUpdate,
  mapGeneration,
  mergeGenerations,
  newRequestId,
  warmPrefixCache,
} from "../generation.ts";
import { optionalBool, optionalInt, rejectUnsupportedOptions, requireObject } from "../openai/protocol.ts";
import { parseSamplingParams, SamplingParams, siblingSampling } from "../sampling.ts";
import { sseResponse } from "../sse.ts";
import { GenerateStreamWriter } from "./stream_writer.ts";

interface NativeItem {
  inputIds: number[];
  rid: string;
  sampling: SamplingParams;
}

interface LogprobOptions {
  returnLogprob: boolean;
  logprobStartLen: number;
  topLogprobsNum: number;
  withText: boolean;
}

/** POST /generate: SGLang's native API; a list input gives a list output. */
export async function handleGenerate(
  ctx: ServerContext,
  rawBody: unknown,
  signal: AbortSignal,
): Promise<Response> {
  const body = requireObject(rawBody);
  rejectUnsupportedOptions(body);
  const hasText = body.text !== undefined && body.text !== null;
  const hasIds = body.input_ids !== undefined && body.input_ids !== null;
  if (hasText === hasIds) {
    throw badRequest(
      "Either text or input_ids should be provided (exactly one).",
      hasText ? "text" : "input_ids",
    );
  }
  let prompts: number[][];
  let batched: boolean;
  if (hasText) {
    const t = body.text;
    if (typeof t === "string") [prompts, batched] = [[ctx.tokenizer.encode(t)], false];
    else if (Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === "string")) {
      [prompts, batched] = [t.map((x) => ctx.tokenizer.encode(x)), true];
    } else throw badRequest("text must be a string or a non-empty list of strings", "text");
  } else {
    const ids = body.input_ids;
    const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x));
    if (isIds(ids) && ids.length > 0) [prompts, batched] = [[ids], false];
    else if (Array.isArray(ids) && ids.length > 0 && ids.every(isIds)) {
      [prompts, batched] = [ids as number[][], true];
    } else {throw badRequest(
        "input_ids must be a list of token ids or a non-empty list of such lists",
        "input_ids",
      );}
  }
  const sampling = parseSamplingParams(body.sampling_params, ctx.info.vocab_size);
  const stream = optionalBool(body, "stream") ?? false;
  const lp: LogprobOptions = {
    returnLogprob: optionalBool(body, "return_logprob") ?? false,
    logprobStartLen: optionalInt(body, "logprob_start_len", -1) ?? -1,
    topLogprobsNum: optionalInt(body, "top_logprobs_num", 0, 20) ?? 0,
    withText: optionalBool(body, "return_text_in_logprobs") ?? false,
  };
  const n = sampling.n;
  checkSequenceCount(prompts.length, n);
  const rids = parseRids(body.rid, prompts.length * n);
  const items: NativeItem[] = [];
  prompts.forEach((inputIds, p) => {
    for (let i = 0; i < n; i++) {
      items.push({ inputIds, rid: rids[p * n + i], sampling: siblingSampling(sampling, i) });
    }
  });
  await warmPrefixCache(ctx, prompts, n);
  const gens: Generation[] = [];
  try {
    for (const item of items) {
      gens.push(generate(ctx, {
        inputIds: item.inputIds,
        sampling: item.sampling,
        rid: item.rid,
        returnLogprob: lp.returnLogprob,
        topLogprobsNum: lp.topLogprobsNum,
        // SGLang returns prompt logprobs only when asked with a start position; default -1 means none.
        logprobStartLen: lp.returnLogprob ? lp.logprobStartLen : -1,
        signal,
      }));
    }
  } catch (e) {
    for (const g of gens) g.cancel();
    throw e;
  }
  const many = batched || n > 1;
  if (!stream) {
    const finals: GenerationUpdate[] = new Array(gens.length);
    for await (const { index, update } of mergeGenerations(gens)) finals[index] = update;
    if (finals.some((u) => !u)) throw badRequest("The request was cancelled.");
    const outputs = finals.map((u, i) => nativeOutput(ctx, items[i], u, lp));
    return Response.json(many ? outputs : outputs[0]);
  }
  if (!many) {
    const writer = new GenerateStreamWriter(items[0].rid);
    const payload: (u: GenerationUpdate) => unknown = lp.returnLogprob
      ? (u: GenerationUpdate) => nativeOutput(ctx, items[0], u, lp)
      : (u: GenerationUpdate) => writer.event(u);
    return sseResponse(mapGeneration(gens[0], payload));
  }
  async function* payloads() {
    for await (const { index, update } of mergeGenerations(gens)) {
      const out = nativeOutput(ctx, items[index], update, lp) as Record<string, unknown>;
      yield many ? { ...out, index } : out;
    }
  }
  return sseResponse(payloads());
}

function parseRids(rid: unknown, count: number): string[] {
  if (rid === undefined || rid === null) return Array.from({ length: count }, () => newRequestId());
  if (typeof rid === "string") {
    return count === 1 ? [rid] : Array.from({ length: count }, (_, i) => `${rid}_${i}`);
  }
  if (Array.isArray(rid) && rid.length === count && rid.every((r) => typeof r === "string")) {
    return rid as string[];
  }
  throw badRequest(`rid must be a string or a list of ${count} strings`, "rid");
}

function nativeOutput(ctx: ServerContext, item: NativeItem, u: GenerationUpdate, lp: LogprobOptions) {
  const meta: Record<string, unknown> = {
    id: item.rid,
    finish_reason: u.finish,
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    cached_tokens: u.cachedTokens,
    e2e_latency: u.finish ? u.e2eLatency : null,
  };
  if (lp.returnLogprob) {
    const start = Math.max(0, lp.logprobStartLen);
    const inputIds = lp.logprobStartLen < 0 ? [] : item.inputIds.slice(start);
    const text = (id: number) => (lp.withText ? ctx.tokenizer.tokenText(id) : null);
    const triple = (logprob: number | null, id: number) => [logprob, id, text(id)];
    meta.input_token_logprobs = inputIds.map((id, i) => triple(u.inputLogprobs[i] ?? null, id));
    meta.output_token_logprobs = u.outputIds.map((id, i) => triple(u.outputLogprobs[i] ?? null, id));
    if (lp.topLogprobsNum > 0) {
      const tops = (list: [number, number][] | undefined) => (list ?? []).map(([id, v]) => triple(v, id));
      meta.input_top_logprobs = inputIds.map((
        _,
        i,
      ) => (u.inputTopLogprobs[i] ? tops(u.inputTopLogprobs[i]) : null));
      meta.output_top_logprobs = u.outputIds.map((_, i) => tops(u.outputTopLogprobs[i]));
    }
  }
  return { text: u.text, output_ids: u.outputIds, meta_info: meta };
}
