import type { ServerContext } from "../context.ts";
import { badRequest } from "../errors.ts";
import {
  checkSequenceCount,
  generate,
  Generation,
  GenerationUpdate,
  mergeGenerations,
  newRequestId,
  warmPrefixCache,
} from "../generation.ts";
import { sseResponse } from "../sse.ts";
import { siblingSampling } from "../sampling.ts";
import { lastOf } from "./chat.ts";
import {
  finishReasonName,
  matchedStop,
  optionalBool,
  optionalInt,
  parseCommon,
  rejectUnsupportedOptions,
  requireObject,
  unixNow,
  usageOf,
} from "./protocol.ts";

/** prompt as OpenAI allows it: a string, strings, token ids, or lists of token ids. */
export function parsePrompts(ctx: ServerContext, prompt: unknown): number[][] {
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t));
  if (typeof prompt === "string") return [ctx.tokenizer.encode(prompt)];
  if (isIds(prompt)) return [prompt];
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every((p) => typeof p === "string")) return prompt.map((p) => ctx.tokenizer.encode(p));
    if (prompt.every(isIds)) return prompt as number[][];
  }
  throw badRequest(
    "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
    "prompt",
  );
}

function promptTextsOf(prompt: unknown): string[] | null {
  if (typeof prompt === "string") return [prompt];
  if (Array.isArray(prompt) && prompt.every((p) => typeof p === "string")) return prompt as string[];
  return null;
}

export async function handleCompletions(
  ctx: ServerContext,
  rawBody: unknown,
  signal: AbortSignal,
): Promise<Response> {
  const body = requireObject(rawBody);
  const common = parseCommon(ctx, body, ["max_tokens"]);
  rejectUnsupportedOptions(body);
  if (body.max_tokens === undefined || body.max_tokens === null) common.sampling.max_new_tokens = 16;
  const prompts = parsePrompts(ctx, body.prompt);
  const echo = optionalBool(body, "echo") ?? false;
  const logprobs = optionalInt(body, "logprobs", 0, 20);
  if (body.suffix !== undefined && body.suffix !== null) {
    throw badRequest("suffix is not supported", "suffix");
  }
  if (body.rid !== undefined && typeof body.rid !== "string") throw badRequest("rid must be a string", "rid");
  const id = (body.rid as string | undefined) ?? newRequestId();
  const n = common.sampling.n;
  checkSequenceCount(prompts.length, n);
  const created = unixNow();
  await warmPrefixCache(ctx, prompts, n);
  const gens: Generation[] = [];
  try {
    prompts.forEach((inputIds, p) => {
      for (let i = 0; i < n; i++) {
        gens.push(generate(ctx, {
          inputIds,
          sampling: siblingSampling(common.sampling, i),
          rid: prompts.length * n === 1 ? id : `${id}_${p * n + i}`,
          returnLogprob: logprobs !== undefined,
          topLogprobsNum: logprobs ?? 0,
          logprobStartLen: echo && logprobs !== undefined ? 0 : -1,
          signal,
        }));
      }
    });
  } catch (e) {
    for (const g of gens) g.cancel();
    throw e;
  }
  const promptOf = (index: number) => prompts[Math.floor(index / n)];
  // Echo gives back what the client sent: its text, or its token ids decoded as generated text would be.
  const promptTexts = promptTextsOf(body.prompt);
  const echoText = (index: number) => {
    if (!echo) return "";
    const p = Math.floor(index / n);
    return promptTexts?.[p] ?? ctx.tokenizer.decode(prompts[p], true);
  };

  if (!common.stream) {
    try {
      const finals = await Promise.all(gens.map((g) => lastOf(g)));
      return Response.json({
        id,
        object: "text_completion",
        created,
        model: common.model,
        choices: finals.map((u, index) => ({
          index,
          text: echoText(index) + u.text,
          logprobs: logprobs === undefined
            ? null
            : completionLogprobs(ctx, u, echo ? promptOf(index) : [], 0, 0),
          finish_reason: finishReasonName(u.finish!),
          matched_stop: matchedStop(u.finish!),
        })),
        usage: usageOf(ctx, finals, n),
      });
    } finally {
      for (const g of gens) g.cancel();
    }
  }
  const chunk = (choices: unknown[], usage?: unknown) => ({
    id,
    object: "text_completion",
    created,
    model: common.model,
    choices,
    ...(usage !== undefined ? { usage } : {}),
  });
  async function* payloads() {
    const latest: GenerationUpdate[] = [];
    const sent = new Array(gens.length).fill(0);
    const echoed = new Array(gens.length).fill(false);
    for await (const { index, update } of mergeGenerations(gens)) {
      latest[index] = update;
      const prefix = echo && !echoed[index] ? echoText(index) : "";
      const lp = logprobs === undefined ? null : completionLogprobs(
        ctx,
        update,
        echoed[index] || !echo ? [] : promptOf(index),
        sent[index],
        (echo && echoed[index] ? echoText(index).length : 0) + update.text.length - update.delta.length,
      );
      echoed[index] = true;
      sent[index] = update.outputLogprobs.length;
      const usage = common.continuousUsage ? usageOf(ctx, latest.filter(Boolean), 1) : undefined;
      if (prefix.length > 0 || update.delta.length > 0) {
        yield chunk([{ index, text: prefix + update.delta, logprobs: lp, finish_reason: null }], usage);
      }
      if (update.finish) {
        yield chunk([{
          index,
          text: "",
          logprobs: null,
          finish_reason: finishReasonName(update.finish),
          matched_stop: matchedStop(update.finish),
        }], usage);
      }
    }
    if (common.includeUsage && latest.length > 0) yield chunk([], usageOf(ctx, latest, n));
  }
  return sseResponse(payloads());
}

/**
 * OpenAI completions logprobs: parallel lists plus {token: logprob} maps; echoed prompt tokens come first.
 * Token texts are read in context (the text a token adds after the ones before it), so `tokens` joined give
 * the text and `text_offset` indexes into it, even where a tokenizer drops a word's leading space when a
 * token is decoded alone. Offsets count from the start of the choice's text (echo included).
 */
function completionLogprobs(
  ctx: ServerContext,
  u: GenerationUpdate,
  promptIds: number[],
  from: number,
  baseOffset: number,
) {
  const tokens: string[] = [];
  const tokenLogprobs: (number | null)[] = [];
  const top: (Record<string, number> | null)[] = [];
  const offsets: number[] = [];
  let offset = baseOffset;
  const add = (before: number[], id: number, lp: number | null, topList: [number, number][] | undefined) => {
    const t = pieceAfter(ctx, before, id);
    tokens.push(t);
    tokenLogprobs.push(lp);
    offsets.push(offset);
    offset += t.length;
    top.push(
      topList ? Object.fromEntries(topList.map(([tid, v]) => [pieceAfter(ctx, before, tid), v])) : null,
    );
  };
  promptIds.forEach((id, i) =>
    add(promptIds.slice(0, i), id, u.inputLogprobs[i] ?? null, u.inputTopLogprobs[i])
  );
  // The output text is decoded on its own (not after the prompt), so its tokens are read the same way.
  for (let i = from; i < u.outputLogprobs.length; i++) {
    add(u.outputIds.slice(0, i), u.outputIds[i], u.outputLogprobs[i], u.outputTopLogprobs[i]);
  }
  return { text_offset: offsets, token_logprobs: tokenLogprobs, tokens, top_logprobs: top };
}

/** The text `id` adds after `before` (a few tokens of context suffice), special tokens skipped as in the text. */
function pieceAfter(ctx: ServerContext, before: number[], id: number): string {
  const window = before.slice(-4);
  const head = ctx.tokenizer.decode(window, true);
  const whole = ctx.tokenizer.decode([...window, id], true);
  return whole.startsWith(head) ? whole.slice(head.length) : ctx.tokenizer.tokenText(id);
}
