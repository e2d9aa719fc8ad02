import type { ServerContext } from "./context.ts";
import { ApiError, badRequest } from "./errors.ts";
import { EngineError, EngineFinish, EngineStream } from "./engine/client.ts";
import { Status } from "./engine/ffi.ts";
import { Detokenizer } from "./text/detokenizer.ts";
import { SAMPLING_DEFAULTS, SamplingParams, toEngineSampling } from "./sampling.ts";
import { log } from "./log.ts";

export type FinishReason =
  | { type: "length"; length: number }
  | { type: "stop"; matched: number | string }
  | { type: "abort"; message: string };

export interface GenerationInput {
  inputIds: number[];
  sampling: SamplingParams;
  rid: string;
  returnLogprob?: boolean;
  topLogprobsNum?: number;
  logprobStartLen?: number;
  /** Fires when the client went away; the engine request is aborted. */
  signal?: AbortSignal;
}

/** One streamed update of one generation; arrays are cumulative, `delta` is the new text. */
export interface GenerationUpdate {
  delta: string;
  text: string;
  outputIds: number[];
  /** Number of output tokens this update added (for per-token logprobs in streams). */
  newTokens: number;
  finish: FinishReason | null;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  outputLogprobs: number[];
  outputTopLogprobs: [number, number][][];
  inputLogprobs: (number | null)[];
  inputTopLogprobs: [number, number][][];
  e2eLatency: number;
}

/** A request the engine holds: what /abort_request, /get_load and shutdown need to know about it. */
export interface LiveRequest {
  /** With a reason, the request finishes as {type: "abort", message: reason}. */
  abort: (reason?: string) => void;
  promptTokens: number;
  /** Whether the engine has sent anything for it yet (until then it counts as waiting). */
  prefilled: boolean;
}

/** A running generation: iterate it for updates; cancel() aborts it whether or not iteration started. */
export interface Generation extends AsyncGenerator<GenerationUpdate> {
  cancel(): void;
}

/** Validates the prompt and submits it (throws ApiError at once), then streams its updates. */
export function generate(ctx: ServerContext, input: GenerationInput): Generation {
  const contextLen = ctx.info.context_len;
  if (input.inputIds.length === 0) {
    throw badRequest("The input is empty: give text or input_ids with at least one token.");
  }
  if (input.inputIds.length >= contextLen) {
    throw badRequest(
      `The input (${input.inputIds.length} tokens) is longer than the model's context length (${contextLen} tokens).`,
    );
  }
  for (const id of input.inputIds) {
    if (!Number.isInteger(id) || id < 0 || id >= ctx.info.vocab_size) {
      throw badRequest(`input_ids holds ${id}, not a token id in [0, ${ctx.info.vocab_size})`, "input_ids");
    }
  }
  if (ctx.live.has(input.rid)) throw badRequest(`Duplicate request ID: ${input.rid}`, "rid");
  if (ctx.stopping) {
    throw new ApiError(503, "The server is shutting down; send the request to another server.");
  }
  const maxQueued = ctx.args.max_queued_requests;
  if (maxQueued !== null && ctx.engine.stats().num_queue_reqs >= maxQueued) {
    throw new ApiError(
      503,
      `The server is busy: ${maxQueued} requests are already waiting (--max-queued-requests).`,
    );
  }
  const sampling = input.sampling;
  // Never ask for more tokens than the context can hold; the engine would refuse the request.
  const maxNew = Math.min(sampling.max_new_tokens, contextLen - input.inputIds.length);
  const started = performance.now();
  let stream: EngineStream;
  try {
    stream = ctx.engine.submit({
      input_ids: input.inputIds,
      rid: input.rid,
      sampling: {
        ...toEngineSampling(sampling, ctx.tokenizer.eosTokenIds),
        max_new_tokens: maxNew,
        min_new_tokens: Math.min(sampling.min_new_tokens, maxNew),
      },
      return_logprob: input.returnLogprob ?? false,
      top_logprobs_num: input.topLogprobsNum ?? 0,
      logprob_start_len: input.logprobStartLen ?? -1,
    });
  } catch (e) {
    throw engineToApi(e);
  }
  if (ctx.args.log_requests) {
    log(
      `Receive: rid=${input.rid}, input_ids=${JSON.stringify(input.inputIds)}, sampling_params=${
        JSON.stringify(sampling)
      }`,
    );
  }
  let done = false;
  // Set when the server (not the engine or the client) ends the request, so the finish reason says why.
  const control = { abortReason: null as string | null };
  const abort = (reason?: string) => {
    if (done) return;
    done = true;
    if (reason !== undefined) control.abortReason = reason;
    try {
      ctx.engine.abort(stream.id);
    } catch { /* finished meanwhile */ }
    ctx.live.delete(input.rid);
  };
  const live: LiveRequest = { abort, promptTokens: input.inputIds.length, prefilled: false };
  ctx.live.set(input.rid, live);
  const generation = run(ctx, input, stream, started, live, control, () => (done = true)) as Generation;
  generation.cancel = () => abort();
  return generation;
}

async function* run(
  ctx: ServerContext,
  input: GenerationInput,
  stream: EngineStream,
  started: number,
  live: LiveRequest,
  control: { abortReason: string | null },
  markDone: () => void,
): AsyncGenerator<GenerationUpdate> {
  const sampling = input.sampling;
  const abort = () => live.abort();
  input.signal?.addEventListener("abort", abort, { once: true });
  ctx.metrics.requestStarted();
  const detok = new Detokenizer(ctx.tokenizer, {
    stop: sampling.stop,
    noStopTrim: sampling.no_stop_trim,
    skipSpecialTokens: sampling.skip_special_tokens,
  });
  const state: GenerationUpdate = {
    delta: "",
    text: "",
    outputIds: [],
    newTokens: 0,
    finish: null,
    promptTokens: input.inputIds.length,
    completionTokens: 0,
    cachedTokens: 0,
    outputLogprobs: [],
    outputTopLogprobs: [],
    inputLogprobs: [],
    inputTopLogprobs: [],
    e2eLatency: 0,
  };
  let firstToken = true;
  let lastTokenAt = started;
  let finished = false;
  // --stream-interval: updates are held back until this many tokens piled up (the first token and the
  // finish always go out at once), so text deltas and token counts accumulate between yields.
  const interval = Math.max(1, ctx.args.stream_interval);
  let heldDelta = "";
  let heldTokens = 0;
  let yieldedAny = false;
  const finishLog = () => {
    if (!ctx.args.log_requests || !state.finish) return;
    log(
      `Finish: rid=${input.rid}, finish_reason=${
        JSON.stringify(state.finish)
      }, prompt_tokens=${state.promptTokens}, ` +
        `completion_tokens=${state.completionTokens}, cached_tokens=${state.cachedTokens}, e2e_latency=${
          state.e2eLatency.toFixed(3)
        }, text=${JSON.stringify(state.text)}`,
    );
  };
  try {
    if (input.signal?.aborted) return;
    for await (const event of stream.events) {
      if (input.signal?.aborted) break;
      live.prefilled = true;
      const now = performance.now();
      if (event.tokens.length > 0) {
        if (firstToken) ctx.metrics.firstToken((now - started) / 1000);
        else ctx.metrics.interToken((now - lastTokenAt) / 1000 / event.tokens.length);
        firstToken = false;
        lastTokenAt = now;
      }
      state.outputIds.push(...event.tokens);
      if (event.logprobs) state.outputLogprobs.push(...event.logprobs);
      if (event.top_logprobs) state.outputTopLogprobs.push(...event.top_logprobs);
      if (event.input_logprobs) state.inputLogprobs.push(...event.input_logprobs);
      if (event.input_top_logprobs) state.inputTopLogprobs.push(...event.input_top_logprobs);
      state.promptTokens = event.prompt_tokens;
      state.cachedTokens = event.cached_tokens;
      state.completionTokens = event.completion_tokens;
      state.newTokens = event.tokens.length;
      let tokens = event.tokens;
      // A matched stop token is not part of the text unless no_stop_trim asks for it.
      if (
        event.finish?.type === "stop" && typeof event.finish.matched === "number" && !sampling.no_stop_trim &&
        tokens.length > 0
      ) {
        tokens = tokens.slice(0, -1);
      }
      const step = detok.push(tokens, event.finish !== null);
      heldDelta += step.delta;
      heldTokens += event.tokens.length;
      state.text = detok.text;
      if (step.matchedStop !== null) {
        state.finish = { type: "stop", matched: step.matchedStop };
        if (!event.finish) abort();
      } else if (event.finish) {
        state.finish = event.finish.type === "abort" && control.abortReason !== null
          ? { type: "abort", message: control.abortReason }
          : mapFinish(event.finish);
      }
      const due = state.finish !== null || !yieldedAny || heldTokens >= interval;
      if (!due || (heldDelta.length === 0 && heldTokens === 0 && !state.finish)) continue;
      state.delta = heldDelta;
      state.newTokens = heldTokens;
      heldDelta = "";
      heldTokens = 0;
      yieldedAny = true;
      if (state.finish) {
        finished = true;
        markDone();
        ctx.live.delete(input.rid);
        state.e2eLatency = (performance.now() - started) / 1000;
        ctx.metrics.requestFinished(state.e2eLatency, state.promptTokens, state.completionTokens);
        finishLog();
        yield { ...state };
        return;
      }
      yield { ...state };
    }
    if (!finished && !input.signal?.aborted) {
      state.finish = {
        type: "abort",
        message: control.abortReason ?? "The engine stopped before the request finished.",
      };
      state.delta = heldDelta;
      state.newTokens = heldTokens;
      state.e2eLatency = (performance.now() - started) / 1000;
      finishLog();
      yield { ...state };
    }
  } finally {
    // A consumer that stops early (disconnect, error) must not leave the request running.
    if (!finished) abort();
    input.signal?.removeEventListener("abort", abort);
    ctx.live.delete(input.rid);
    ctx.metrics.requestEnded();
  }
}

/** Runs a generation to its end and returns the final update. */
export async function generateAll(ctx: ServerContext, input: GenerationInput): Promise<GenerationUpdate> {
  let last: GenerationUpdate | null = null;
  for await (const update of generate(ctx, input)) last = update;
  if (!last) throw new ApiError(499, "The client disconnected.");
  return last;
}

function mapFinish(f: EngineFinish): FinishReason {
  if (f.type === "length") return { type: "length", length: f.length };
  if (f.type === "stop") return { type: "stop", matched: f.matched };
  return { type: "abort", message: f.message ?? "aborted" };
}

export function engineToApi(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof EngineError) {
    if (e.status === Status.INVALID_ARGUMENT || e.status === Status.CAPACITY) return badRequest(e.message);
    if (e.status === Status.SHUTDOWN) return new ApiError(503, `The engine is shutting down: ${e.message}`);
    if (e.status === Status.BUSY) return badRequest(e.message);
    return new ApiError(500, e.message);
  }
  return new ApiError(500, (e as Error)?.message ?? String(e));
}

/**
 * Most sequences (prompts x n) one HTTP request may start. Each is tokenized and submitted synchronously, so an
 * unbounded list (10 000 prompts x n=128) would hold the event loop for minutes and starve every other client.
 */
export const MAX_SEQUENCES_PER_REQUEST = 4096;

export function checkSequenceCount(prompts: number, n: number): void {
  if (prompts * n > MAX_SEQUENCES_PER_REQUEST) {
    throw badRequest(
      `The request asks for ${
        prompts * n
      } sequences (${prompts} prompts x n=${n}); the limit is ${MAX_SEQUENCES_PER_REQUEST}.`,
    );
  }
}

export function newRequestId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

/**
 * One generation's updates mapped to payloads with no async generator in between: a stream pays every
 * layer's promises on every token. return() (the client went away) ends the generation, as does a
 * mapping that throws.
 */
export function mapGeneration<T>(gen: Generation, map: (update: GenerationUpdate) => T): AsyncIterator<T> {
  const done: IteratorReturnResult<undefined> = { done: true, value: undefined };
  return {
    next: () =>
      gen.next().then((r): IteratorResult<T> => {
        if (r.done) return done;
        try {
          return { done: false, value: map(r.value) };
        } catch (e) {
          gen.cancel();
          throw e;
        }
      }),
    return: async () => {
      gen.cancel();
      await gen.return(undefined);
      return done;
    },
  };
}

/** Interleaves several generations (n siblings, list prompts) as their updates arrive. */
export async function* mergeGenerations(
  gens: Generation[],
): AsyncGenerator<{ index: number; update: GenerationUpdate }> {
  if (gens.length === 1) {
    // The common case (one prompt, n = 1) needs no race: a Promise.race and two wrappers per token add up.
    try {
      for await (const update of gens[0]) yield { index: 0, update };
    } finally {
      gens[0].cancel();
    }
    return;
  }
  const pending = new Map<number, Promise<{ index: number; result: IteratorResult<GenerationUpdate> }>>();
  const pull = (index: number) =>
    pending.set(index, gens[index].next().then((result) => ({ index, result })));
  gens.forEach((_, i) => pull(i));
  try {
    while (pending.size > 0) {
      const { index, result } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(index);
        continue;
      }
      pull(index);
      yield { index, update: result.value };
    }
  } finally {
    for (const g of gens) g.cancel();
  }
}

/**
 * Before n > 1 siblings start, runs their prompt once with no new tokens (as SGLang does) so the prompt's KV
 * lands in the prefix cache and every sibling then shares it instead of prefilling its own copy.
 * Best effort: anything unusual (cache off, a prompt that generate() will refuse) skips it.
 */
export async function warmPrefixCache(ctx: ServerContext, prompts: number[][], n: number): Promise<void> {
  if (n <= 1 || ctx.args.disable_radix_cache) return;
  const valid = (ids: number[]) =>
    ids.length > 1 && ids.length < ctx.info.context_len &&
    ids.every((id) => Number.isInteger(id) && id >= 0 && id < ctx.info.vocab_size);
  const distinct = [...new Map(prompts.filter(valid).map((p) => [p.join(","), p])).values()];
  await Promise.all(distinct.map(async (inputIds) => {
    let stream: EngineStream;
    try {
      stream = ctx.engine.submit({
        input_ids: inputIds,
        rid: `PREFIX_${newRequestId()}`,
        sampling: { ...toEngineSampling({ ...SAMPLING_DEFAULTS, temperature: 0 }, []), max_new_tokens: 0 },
        return_logprob: false,
        top_logprobs_num: 0,
        logprob_start_len: -1,
      });
    } catch {
      return;
    }
    for await (const event of stream.events) if (event.finish) break;
  }));
}
